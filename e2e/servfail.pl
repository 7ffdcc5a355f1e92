#!/usr/bin/perl
# e2e/servfail.pl PORT: a DNS server on 127.0.0.1:PORT (UDP) that answers
# every query SERVFAIL (RCODE 2) with the question and nothing else, as a
# resolver does when it cannot reach the zone or its signatures fail. It
# counts the queries on stdout, one line each ("query ID"). perl-base only.
use strict;
use warnings;
use IO::Socket::INET;

my $port = shift or die "usage: servfail.pl PORT\n";
my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port, Proto => 'udp')
	or die "servfail.pl: 127.0.0.1:$port: $!\n";
$| = 1;
while (1) {
	my $peer = $s->recv(my $q, 4096);
	next unless defined $peer && length($q) >= 12;
	my ($id, $flags, $qd) = unpack('nnn', $q);
	next if $flags & 0x8000 or $qd != 1;    # a response, or not one question
	# The question: the name's labels, then type and class.
	my $i = 12;
	while ($i < length($q)) {
		my $n = ord(substr($q, $i, 1));
		last if $n == 0 or $n >= 0xC0;
		$i += 1 + $n;
	}
	next if $i + 5 > length($q);
	my $question = substr($q, 12, $i + 5 - 12);
	# QR, the opcode and RD as asked, RA, RCODE 2.
	my $rflags = 0x8000 | ($flags & 0x7900) | 0x0080 | 2;
	$s->send(pack('nnnnnn', $id, $rflags, 1, 0, 0, 0) . $question, 0, $peer);
	print "query $id\n";
}
