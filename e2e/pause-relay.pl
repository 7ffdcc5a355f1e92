#!/usr/bin/perl
# e2e/pause-relay.pl LISTEN_PORT TARGET_PORT PAUSE_AFTER DIR: a TCP relay on
# 127.0.0.1:LISTEN_PORT to 127.0.0.1:TARGET_PORT that stops reading from its
# client once the client has sent PAUSE_AFTER bytes, the first time only,
# until the file DIR/go exists. While it waits, DIR/paused exists (it holds
# the number of bytes relayed). The client's writes then block as soon as
# the buffers on its way are full: that is how the postfix_stop scenario
# keeps onionmx in the middle of DATA for as long as it needs, with no race.
#
# One connection at a time (the next waits in the listen queue), no child
# processes. It writes its pid to DIR/pid; it runs until killed. The server
# side is half-closed when the client's side ends, and the other way round,
# so the receiver sees exactly where the client stopped. Perl's base
# modules only (perl-base is essential in Debian).
use strict;
use warnings;
use IO::Socket::INET;
use IO::Select;
use Socket qw(SHUT_WR);

my ($lport, $tport, $after, $dir) = @ARGV;
defined $dir or die "usage: pause-relay.pl LISTEN_PORT TARGET_PORT PAUSE_AFTER DIR\n";
$SIG{PIPE} = 'IGNORE';
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $lport, Listen => 16, ReuseAddr => 1)
  or die "pause-relay: listen on 127.0.0.1:$lport: $!\n";
open(my $pf, '>', "$dir/pid.tmp") or die "pause-relay: $dir/pid: $!\n";
print $pf "$$\n";
close $pf;
rename "$dir/pid.tmp", "$dir/pid";

sub write_all {
	my ($fh, $buf) = @_;
	my $off = 0;
	while ($off < length $buf) {
		my $w = syswrite($fh, $buf, length($buf) - $off, $off);
		return 0 unless defined $w;
		$off += $w;
	}
	return 1;
}

while (1) {
	my $c = $l->accept or next;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $tport);
	unless ($s) {
		close $c;
		next;
	}
	my $n = 0;
	my %peer = ($c => $s, $s => $c);
	my $sel = IO::Select->new($c, $s);
	while ($sel->count) {
		if (!-e "$dir/go" && $n >= $after && $sel->exists($c)) {
			# Pause: stop reading from the client (keep relaying the
			# server's words, if any) until DIR/go appears.
			if (open(my $p, '>', "$dir/paused.tmp")) {
				print $p "$n\n";
				close $p;
				rename "$dir/paused.tmp", "$dir/paused";
			}
			$sel->remove($c);
			while (!-e "$dir/go") {
				if (!$sel->count) {
					select(undef, undef, undef, 0.05);
					next;
				}
				for my $h ($sel->can_read(0.05)) {    # the server only
					my $buf;
					my $got = sysread($h, $buf, 65536);
					if (!$got) { $sel->remove($h); shutdown($c, SHUT_WR); }
					else { write_all($c, $buf) }
				}
			}
			$sel->add($c);
		}
		for my $h ($sel->can_read(0.05)) {
			my $buf;
			my $got = sysread($h, $buf, 65536);
			if (!$got) {
				# This side ended: pass the end on, keep the other way open.
				$sel->remove($h);
				shutdown($peer{$h}, SHUT_WR);
				next;
			}
			$n += $got if $h == $c;
			write_all($peer{$h}, $buf) or do { $sel->remove($h); shutdown($peer{$h}, SHUT_WR) };
		}
	}
	close $c;
	close $s;
}
