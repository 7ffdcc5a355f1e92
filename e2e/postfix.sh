# shellcheck shell=bash
# e2e/postfix.sh: two private Postfix instances beside Debian's system one
# (which stays under /etc/postfix and is never started).
#
#   receiver  $WORK/recv  myhostname recv.onionmx.test; smtpd on
#             127.0.0.1:$RECV_SMTP_PORT only (the onion service points there);
#             virtual mailboxes for bob@ (and postmaster@) in the domains
#             recv.onionmx.test, clear.onionmx.test, pinned.onionmx.test and
#             relayed.onionmx.test (no DNS record: the sender's static map
#             pins them to the onion's ports 25 and 26, pf_sender_pin) and
#             the onion name itself
#             (added with pf_receiver_add_domain once Tor has made it),
#             delivered as Maildir under $WORK/recv/mail/; unknown users get
#             550 5.1.1 at RCPT; no trusted networks, so not an open relay
#             although Tor connects from 127.0.0.1. A second smtpd on
#             127.0.0.1:$RECV_OPEN_PORT (the onion's port 2525) is a
#             deliberately open relay: mynetworks=127.0.0.0/8 and
#             permit_mynetworks, as many configurations have it, for the
#             check --relay-test scenarios. A third, on
#             127.0.0.1:$RECV_PICKY_PORT (the onion's port 2526), is as
#             open but refuses the relay test's default probe sender at
#             RCPT as reject_unknown_sender_domain would (550 5.1.8 ...
#             Domain not found; from a map: the receiver has no DNS).
#             The receiver delivers nothing
#             but to its own Maildirs: defer_transports holds mail for any
#             other domain in its queue, never tried (and the scenarios
#             assert that its queue stays empty).
#   sender    $WORK/send  myhostname send.onionmx.test; Debian's default
#             master.cf (chroot and all) + the repository's
#             postfix-master.cf.example, rewritten for this run (see
#             pf_rewrite_example); no inet listeners at all; mail for
#             domains the lookup does not route to onionmx goes to the
#             default transport, smtp to the receiver over plain TCP, i.e. a
#             "clearnet" delivery, visible as relay=127.0.0.1[127.0.0.1]:PORT.
#             Bounces come back to alice@send.onionmx.test in
#             $WORK/send/mail/alice/.
#
# Layout of an instance DIR ($RECV_DIR, $SEND_DIR): DIR/etc is the config
# directory (main.cf, master.cf, vmailbox; use MAIL_CONFIG=DIR/etc, or
# -c DIR/etc, sendmail -C DIR/etc), DIR/queue, DIR/data, DIR/mail/USER/
# (Maildir), DIR/maillog.

# The domain the sender's static transport map pins to the onion (no DNS
# record anywhere).
PF_PINNED_DOMAIN=pinned.onionmx.test
# The domain the static map pins to the onion with a typo (two neighbouring
# characters swapped, onion_typo): a configuration error, whose mail must
# wait, never leave by the default transport (issue 9 case 7).
PF_TYPO_DOMAIN=typo.onionmx.test
# The domain the static map pins to the onion's port 26, where the
# postfix_stop scenario's pausing relay (pause-relay.pl) listens when it
# runs, in front of the receiver's port-25 smtpd.
PF_RELAYED_DOMAIN=relayed.onionmx.test

PF_DIST_MASTER=/usr/share/postfix/master.cf.dist
[[ -f $PF_DIST_MASTER ]] || PF_DIST_MASTER=/etc/postfix/master.cf

# pf_common DIR HOSTNAME: the parts of main.cf both instances share.
pf_common() {
	local dir=$1 host=$2
	# Postfix wants everything under the config directory owned by root, and
	# the data directory owned by the mail owner: keep them apart.
	mkdir -p "$dir/etc" "$dir/data" "$dir/mail" "$dir/queue"
	chown postfix "$dir/data"
	cat >"$dir/etc/main.cf" <<-EOF
		# Written by e2e/postfix.sh for this run only.
		compatibility_level = 3.6
		queue_directory = $dir/queue
		data_directory = $dir/data
		maillog_file = $dir/maillog
		maillog_file_prefixes = $WORK
		mail_owner = postfix
		setgid_group = postdrop
		myhostname = $host
		mydomain = onionmx.test
		myorigin = \$myhostname
		inet_interfaces = loopback-only
		inet_protocols = ipv4
		mynetworks =
		alias_maps =
		alias_database =
		biff = no
		append_dot_mydomain = no
		smtpd_banner = \$myhostname ESMTP onionmx-e2e
		smtp_dns_support_level = disabled
		virtual_mailbox_base = $dir/mail
		virtual_mailbox_maps = texthash:$dir/etc/vmailbox
		virtual_uid_maps = static:$(id -u nobody)
		virtual_gid_maps = static:$(id -g nobody)
		# Room on both sides for postfix_stop's message, 40 MiB of random
		# bytes in base64 (about 56 MB: far more than the buffers of
		# the way to the receiver hold), and big_message's 10 MiB
		# attachment; a mailbox holds more than one such message.
		message_size_limit = 83886080
		virtual_mailbox_limit = 167772160
		# Short retry times so that deferred mail is retried within a test.
		queue_run_delay = 10s
		minimal_backoff_time = 10s
		maximal_backoff_time = 20s
	EOF
	chown "$(id -u nobody):$(id -g nobody)" "$dir/mail"
}

# pf_setup_receiver: needs RECV_SMTP_PORT, RECV_OPEN_PORT and
# RECV_PICKY_PORT. The onion name is added later by pf_receiver_add_domain,
# once Tor has made it.
pf_setup_receiver() {
	RECV_DIR=$WORK/recv
	pf_common "$RECV_DIR" recv.onionmx.test
	local d domains="recv.onionmx.test clear.onionmx.test $PF_PINNED_DOMAIN $PF_RELAYED_DOMAIN"
	cat >>"$RECV_DIR/etc/main.cf" <<-EOF
		mydestination =
		virtual_mailbox_domains = ${domains// /, }
		smtpd_relay_restrictions = reject_unauth_destination
		smtpd_recipient_restrictions = reject_unlisted_recipient, reject_unauth_destination
		smtpd_reject_unlisted_recipient = yes
		unknown_virtual_mailbox_reject_code = 550
		smtpd_helo_required = yes
		# Nothing leaves this instance: mail for other domains, had the open
		# smtpd below taken any, would wait in the deferred queue and never
		# be tried. (Not default_transport = error:...: smtpd then rejects
		# such recipients itself, and the open relay is open no more; not
		# discard:, which would hide such mail.)
		defer_transports = smtp, relay
	EOF
	: >"$RECV_DIR/etc/vmailbox"
	for d in $domains; do
		printf 'bob@%s bob/\npostmaster@%s postmaster/\n' "$d" "$d" >>"$RECV_DIR/etc/vmailbox"
	done
	cp "$PF_DIST_MASTER" "$RECV_DIR/etc/master.cf"
	postconf -c "$RECV_DIR/etc" -M# smtp/inet
	# Every Tor connection comes from 127.0.0.1: the connection count
	# limit caps all senders together, so it is raised as the README's
	# "Receiving: every sender comes from 127.0.0.1" advises.
	echo "127.0.0.1:$RECV_SMTP_PORT inet n - n - - smtpd -o smtpd_client_connection_count_limit=200" >>"$RECV_DIR/etc/master.cf"
	# The deliberately open one (the onion's port 2525): trusts 127.0.0.1,
	# where every Tor connection comes from.
	echo "127.0.0.1:$RECV_OPEN_PORT inet n - n - - smtpd -o mynetworks=127.0.0.0/8" \
		"-o smtpd_relay_restrictions=permit_mynetworks,reject_unauth_destination" \
		"-o smtpd_recipient_restrictions=permit_mynetworks,reject_unauth_destination" >>"$RECV_DIR/etc/master.cf"
	# As open, but it refuses the relay test's default probe sender as
	# "reject_unknown_sender_domain, unknown_address_reject_code = 550"
	# would, at RCPT (smtpd_delay_reject = yes): from a map, because this
	# receiver has no DNS to find .invalid missing in. The null sender
	# passes.
	printf '%s\t550 5.1.8 Domain not found\n' onionmx-relay-test.invalid >"$RECV_DIR/etc/unknown_sender_domains"
	echo "127.0.0.1:$RECV_PICKY_PORT inet n - n - - smtpd -o mynetworks=127.0.0.0/8" \
		"-o smtpd_sender_restrictions=check_sender_access,texthash:$RECV_DIR/etc/unknown_sender_domains" \
		"-o smtpd_relay_restrictions=permit_mynetworks,reject_unauth_destination" \
		"-o smtpd_recipient_restrictions=permit_mynetworks,reject_unauth_destination" >>"$RECV_DIR/etc/master.cf"
	# Nothing in this instance needs a chroot, and without one smtpd needs
	# no copies of /etc files under the queue directory.
	postconf -c "$RECV_DIR/etc" -F '*/*/chroot = n'
}

# pf_receiver_add_domain DOMAIN: one more virtual domain with bob@ and
# postmaster@, and a reload of the running receiver.
pf_receiver_add_domain() {
	local d=$1 out
	postconf -c "$RECV_DIR/etc" -e \
		"virtual_mailbox_domains = $(postconf -c "$RECV_DIR/etc" -h virtual_mailbox_domains), $d"
	printf 'bob@%s bob/\npostmaster@%s postmaster/\n' "$d" "$d" >>"$RECV_DIR/etc/vmailbox"
	pf_reload "$RECV_DIR"
}

# pf_reload DIR: postfix reload of a running instance (under script(1), as
# pf_start: its complaints go to syslog only); dies when it fails.
pf_reload() {
	local out
	out=$(script -qec "postfix -c '$1/etc' reload" /dev/null </dev/null 2>&1) ||
		die "postfix reload for $1 failed: $out"
}

# pf_setup_sender EXAMPLE MAINCF_EXTRA: EXAMPLE is the master.cf fragment
# to append (the repository's postfix-master.cf.example), MAINCF_EXTRA a
# file of main.cf lines (the README's); both after pf_rewrite_example.
# Dies when postconf has anything to say about the result.
pf_setup_sender() {
	local example=$1 extra=$2
	SEND_DIR=$WORK/send
	pf_common "$SEND_DIR" send.onionmx.test
	cat >>"$SEND_DIR/etc/main.cf" <<-EOF
		mydestination = localhost
		virtual_mailbox_domains = send.onionmx.test
		# No smtpd: this instance only takes mail from sendmail(1).
		master_service_disable = inet
		# What the onionmx lookup does not claim goes "clearnet": plain SMTP
		# to the receiver's clear.onionmx.test domain.
		default_transport = smtp:[127.0.0.1]:$RECV_SMTP_PORT
		delay_warning_time = 0
	EOF
	printf 'alice@send.onionmx.test alice/\npostmaster@send.onionmx.test postmaster/\n' >"$SEND_DIR/etc/vmailbox"
	{
		echo
		echo "# ---- main.cf lines from $extra ----"
		cat "$extra"
	} >>"$SEND_DIR/etc/main.cf"
	cp "$PF_DIST_MASTER" "$SEND_DIR/etc/master.cf"
	{
		echo
		echo "# ---- from $example ----"
		cat "$example"
	} >>"$SEND_DIR/etc/master.cf"
	# One recipient per pipe call: its one exit status then speaks for
	# exactly one recipient. (Asked with master.cf in place, so that
	# postconf knows the onionmx service and its parameters.)
	if [[ -z $(postconf -c "$SEND_DIR/etc" -nh onionmx_destination_recipient_limit 2>/dev/null) ]]; then
		say "the main.cf lines do not set onionmx_destination_recipient_limit: e2e sets it to 1"
		echo "onionmx_destination_recipient_limit = 1" >>"$SEND_DIR/etc/main.cf"
	fi
	pf_check_config "$SEND_DIR/etc" "$extra" "$example"
	pf_postmap_tables "$SEND_DIR/etc"
	PF_STATIC_MAP=$(pf_static_map "$SEND_DIR/etc") ||
		die "the main.cf lines give transport_maps no static table (hash:/etc/postfix/onionmx_transport, as the README says): $(postconf -c "$SEND_DIR/etc" -h transport_maps)"
}

# pf_check_config CONF MAINLINES MASTERFRAGMENT: postconf must not warn
# about the instance's configuration: a parameter set twice ("overriding
# earlier entry"), a parameter of a service master.cf does not define
# ("unused parameter"), a broken master.cf entry. Dies with the warnings
# and the main.cf lines as the harness extracted them.
pf_check_config() {
	local conf=$1 extra=$2 example=$3 out
	out=$({
		postconf -c "$conf" -n >/dev/null
		postconf -c "$conf" >/dev/null
		postconf -c "$conf" -M >/dev/null
		postconf -c "$conf" -P >/dev/null
	} 2>&1) || true
	[[ -z $out ]] && return 0
	{
		echo "e2e: FAIL: postconf warns about the sending Postfix's configuration:"
		sed 's/^/    /' <<<"$out" | sort -u
		echo "  main.cf lines used (from $extra; source: ${MAIN_SRC:-$extra}):"
		sed 's/^/    | /' "$extra"
		echo "  master.cf fragment: ${MASTER_EXAMPLE:-$example}"
	} >&2
	exit 1
}

# pf_static_map CONF: prints the source file of the first hash/lmdb/cdb/
# btree table in CONF's transport_maps (the static map the README tells
# users to fill and postmap); fails when there is none.
pf_static_map() {
	local t
	for t in $(postconf -c "$1" -h transport_maps | tr -s ', ' '\n'); do
		case $t in
		hash:/* | lmdb:/* | cdb:/* | btree:/*) echo "${t#*:}"; return 0 ;;
		esac
	done
	return 1
}

# pf_sender_pin DOMAIN NEXTHOP [DOMAIN NEXTHOP...]: one more line in the
# sender's static transport map ("DOMAIN onionmx:NEXTHOP") for each pair,
# postmapped, and a reload.
pf_sender_pin() {
	local out
	while (($# >= 2)); do
		printf '%s\tonionmx:%s\n' "$1" "$2" >>"$PF_STATIC_MAP"
		shift 2
	done
	postmap -c "$SEND_DIR/etc" "$(postconf -c "$SEND_DIR/etc" -h transport_maps | tr -s ', ' '\n' | grep -F ":$PF_STATIC_MAP" | head -1)"
	pf_reload "$SEND_DIR"
}

# pf_rewrite_example IN OUT BIN SOCKS DNS [CONF [MAP...]]: copies a master.cf
# fragment (or main.cf lines) and makes it usable in this run, as the
# fragment's own header asks ("adjust the path, --socks, --self and user="):
#   - every argv=<path> whose file name is onionmx becomes argv=BIN;
#   - a "deliver" command gets --socks SOCKS (an existing --socks X is
#     replaced, otherwise the flag is inserted right after "deliver");
#   - "deliver", "socketmap" and "tcptable" commands get --dns DNS the same
#     way (this run's dnsmasq instead of the system's resolvers);
#   - "socketmap" and "tcptable" commands without any --map get --map MAP
#     for each MAP (the static transport map: the server must know the
#     pinned domains itself); their --self becomes send.onionmx.test;
#   - /etc/postfix/ becomes CONF (for tables the README names there).
# A master.cf entry is its first line and the lines that continue it (they
# start with white space): a flag counts as present wherever it is in the
# entry, and the layout is kept. Comment lines are copied as they are.
pf_rewrite_example() {
	local in=$1 out=$2 bin=$3 socks=$4 dns=$5 conf=${6:-/etc/postfix} maps="" m
	shift 6 2>/dev/null || shift $#
	for m in "$@"; do maps+=" --map $m"; done
	awk -v bin="$bin" -v socks="$socks" -v dns="$dns" -v conf="$conf" -v maps="$maps" '
		function flush(   i, text, kind, ins, p, l) {
			text = ""
			for (i = 1; i <= n; i++) if (!comment[i]) text = text " " L[i]
			kind = ""
			if (match(text, /argv=[^ \t]*onionmx[ \t]+[a-z]+/)) {
				kind = substr(text, RSTART, RLENGTH)
				sub(/.*[ \t]/, "", kind)
				if (kind != "deliver" && kind != "socketmap" && kind != "tcptable") kind = ""
			}
			ins = ""
			if (kind == "deliver" && text !~ /--socks/) ins = ins " --socks " socks
			if (kind != "" && text !~ /--dns/) ins = ins " --dns " dns
			if ((kind == "socketmap" || kind == "tcptable") && text !~ /--map/) ins = ins maps
			for (i = 1; i <= n; i++) {
				l = L[i]
				if (!comment[i]) {
					if (match(l, /argv=[^ \t]*onionmx([ \t]|$)/)) {
						p = substr(l, RSTART, RLENGTH)
						sub(/argv=[^ \t]*onionmx/, "", p)
						l = substr(l, 1, RSTART - 1) "argv=" bin p substr(l, RSTART + RLENGTH)
					}
					if (kind == "deliver") gsub(/--socks[= ][^ \t]+/, "--socks " socks, l)
					if (kind != "") gsub(/--dns[= ][^ \t]+/, "--dns " dns, l)
					if (kind == "socketmap" || kind == "tcptable") gsub(/--self[= ][^ \t]+/, "--self send.onionmx.test", l)
					if (ins != "" && match(l, "argv=[^ \t]*onionmx[ \t]+" kind "([ \t]|$)")) {
						p = index(substr(l, RSTART), kind) + RSTART - 1 + length(kind)
						l = substr(l, 1, p - 1) ins substr(l, p)
						ins = ""
					}
					gsub(/\/etc\/postfix\//, conf "/", l)
				}
				print l
			}
			n = 0
		}
		/^[ \t]*#/ || /^[ \t]*$/ { L[++n] = $0; comment[n] = 1; next }
		/^[ \t]/ { L[++n] = $0; comment[n] = 0; next }
		{ flush(); L[++n] = $0; comment[n] = 0 }
		END { flush() }
	' "$in" >"$out"
}

# pf_main_from_comments MASTER_EXAMPLE: prints the main.cf lines that the
# master.cf fragment carries in its comment block that starts with a line
# "# main.cf": the "#   key = value" lines that follow it, up to the first
# line that is not "#" and at least two spaces. Inside the block, "#   # ..."
# lines are comments (skipped) and a line indented deeper than its
# parameter continues it (joined with one space). Prints one parameter per
# line. Fails on a continuation line before any parameter. Says on stderr
# when a parameter is set twice or there is more than one such block: all
# are used, so that pf_check_config fails on the conflict ("overriding
# earlier entry") as a user's postconf would warn.
pf_main_from_comments() {
	awk -v file="$1" '
		function flush() {
			if (cur == "") return
			print cur
			key = cur; sub(/[ \t]*=.*/, "", key)
			if (key in seen) {
				printf "%s: %s is set twice in the main.cf comment blocks (lines %d and %d)\n", file, key, seen[key], curline > "/dev/stderr"
			}
			seen[key] = curline
			cur = ""
		}
		/^# main\.cf/ { flush(); blocks++; on = 1; ind = -1; next }
		!on { next }
		!/^#  / { flush(); on = 0; next }
		{
			line = substr($0, 2)
			match(line, /^[ \t]*/)
			n = RLENGTH
			text = substr(line, n + 1)
			sub(/[ \t\r]+$/, "", text)
			if (text == "" || text ~ /^#/) next
			if (text ~ /^[A-Za-z0-9_]+[ \t]*=/ && (ind < 0 || n <= ind)) {
				flush()
				ind = n
				cur = text
				curline = NR
				next
			}
			if (cur == "") {
				printf "%s:%d: a continuation line before any parameter: %s\n", file, NR, $0 > "/dev/stderr"
				bad = 1
				next
			}
			cur = cur " " text
		}
		END {
			flush()
			if (blocks > 1) printf "%s: %d \"# main.cf\" comment blocks (expected one); using all of them\n", file, blocks > "/dev/stderr"
			exit bad
		}
	' "$1"
}

# pf_postmap_tables CONF: creates (empty) and postmaps every hash:/lmdb:/cdb:
# table under CONF that CONF/main.cf names, so that a README's
# "hash:/etc/postfix/onionmx_transport" works without content.
pf_postmap_tables() {
	local conf=$1 t
	for t in $(postconf -c "$conf" -n | grep -oE "(^|[^a-z])(hash|lmdb|cdb|btree):$conf/[^ ,]+" | sed -E 's/^[^a-z]//' | sort -u); do
		[[ -e ${t#*:} ]] || : >"${t#*:}"
		postmap -c "$conf" "$t"
	done
}

# pf_start DIR: postfix check (its complaints go to syslog only, so run it
# under script(1) to see them), then start.
pf_start() {
	local dir=$1 out
	register_pidfile "postfix-$(basename "$dir")" "$dir/queue/pid/master.pid"
	out=$(script -qec "postfix -c '$dir/etc' check" /dev/null </dev/null 2>&1) ||
		die "postfix check for $dir failed: $out"
	[[ -z $out ]] || say "postfix check $dir: $out"
	out=$(script -qec "postfix -c '$dir/etc' start" /dev/null </dev/null 2>&1) ||
		die "postfix start for $dir failed: $out"
	wait_for 20 "postfix master for $dir" pid_of "$dir/queue/pid/master.pid" ||
		die "postfix master for $dir did not start: $out"
}

# pf_stop DIR: postfix stop, then make sure the master is gone.
pf_stop() {
	local dir=$1
	[[ -d $dir/queue/pid ]] || return 0
	if pid_of "$dir/queue/pid/master.pid" >/dev/null; then
		script -qec "postfix -c '$dir/etc' stop" /dev/null </dev/null >/dev/null 2>&1 || true
		wait_for 10 "postfix $dir to stop" bash -c "! kill -0 \$(tr -dc 0-9 <'$dir/queue/pid/master.pid') 2>/dev/null" || true
		stop_pidfile "postfix-$(basename "$dir")" "$dir/queue/pid/master.pid"
	fi
}

# smtp_listening PORT: something on 127.0.0.1:PORT answers with a 220.
smtp_listening() {
	local line
	line=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r l <&3 && printf "QUIT\r\n" >&3 && echo "$l"' _ "$1" 2>/dev/null) || return 1
	[[ $line == 220* ]]
}
