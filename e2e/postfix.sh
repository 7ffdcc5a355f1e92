# shellcheck shell=bash
# e2e/postfix.sh: two private Postfix instances beside Debian's system one
# (which stays under /etc/postfix and is never started).
#
#   receiver  $WORK/recv  myhostname recv.onionmx.test; smtpd on
#             127.0.0.1:$RECV_SMTP_PORT only (the onion service points there);
#             virtual mailboxes for bob@ (and postmaster@) in the domains
#             recv.onionmx.test, clear.onionmx.test and the onion name itself
#             (added with pf_receiver_add_domain once Tor has made it),
#             delivered as Maildir under $WORK/recv/mail/; unknown users get
#             550 5.1.1 at RCPT; no trusted networks, so not an open relay
#             although Tor connects from 127.0.0.1.
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
		# Short retry times so that deferred mail is retried within a test.
		queue_run_delay = 10s
		minimal_backoff_time = 10s
		maximal_backoff_time = 20s
	EOF
	chown "$(id -u nobody):$(id -g nobody)" "$dir/mail"
}

# pf_setup_receiver: needs RECV_SMTP_PORT. The onion name is added later by
# pf_receiver_add_domain, once Tor has made it.
pf_setup_receiver() {
	RECV_DIR=$WORK/recv
	pf_common "$RECV_DIR" recv.onionmx.test
	local d domains="recv.onionmx.test clear.onionmx.test"
	cat >>"$RECV_DIR/etc/main.cf" <<-EOF
		mydestination =
		virtual_mailbox_domains = ${domains// /, }
		smtpd_relay_restrictions = reject_unauth_destination
		smtpd_recipient_restrictions = reject_unlisted_recipient, reject_unauth_destination
		smtpd_reject_unlisted_recipient = yes
		unknown_virtual_mailbox_reject_code = 550
		smtpd_helo_required = yes
	EOF
	: >"$RECV_DIR/etc/vmailbox"
	for d in $domains; do
		printf 'bob@%s bob/\npostmaster@%s postmaster/\n' "$d" "$d" >>"$RECV_DIR/etc/vmailbox"
	done
	cp "$PF_DIST_MASTER" "$RECV_DIR/etc/master.cf"
	postconf -c "$RECV_DIR/etc" -M# smtp/inet
	echo "127.0.0.1:$RECV_SMTP_PORT inet n - n - - smtpd" >>"$RECV_DIR/etc/master.cf"
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
	out=$(script -qec "postfix -c '$RECV_DIR/etc' reload" /dev/null </dev/null 2>&1) ||
		die "postfix reload for $RECV_DIR failed: $out"
}

# pf_setup_sender EXAMPLE MAINCF_EXTRA: EXAMPLE is the master.cf fragment
# to append (the repository's postfix-master.cf.example), MAINCF_EXTRA a
# file of main.cf lines (the README's); both after pf_rewrite_example.
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
	# One recipient per pipe call: its one exit status then speaks for
	# exactly one recipient.
	if [[ -z $(postconf -c "$SEND_DIR/etc" -nh onionmx_destination_recipient_limit 2>/dev/null) ]]; then
		say "the main.cf lines do not set onionmx_destination_recipient_limit: e2e sets it to 1"
		echo "onionmx_destination_recipient_limit = 1" >>"$SEND_DIR/etc/main.cf"
	fi
	cp "$PF_DIST_MASTER" "$SEND_DIR/etc/master.cf"
	{
		echo
		echo "# ---- from $example ----"
		cat "$example"
	} >>"$SEND_DIR/etc/master.cf"
	pf_postmap_tables "$SEND_DIR/etc"
}

# pf_rewrite_example IN OUT BIN SOCKS DNS: copies a master.cf fragment (or
# main.cf lines) and makes it usable in this run:
#   - every argv=<path> whose file name is onionmx becomes argv=BIN;
#   - a "deliver" command gets --socks SOCKS (an existing --socks X is
#     replaced, otherwise the flag is inserted right after "deliver");
#   - "deliver", "socketmap" and "tcptable" commands get --dns DNS the same
#     way (this run's dnsmasq instead of the system's resolvers);
#   - /etc/postfix/ becomes the instance's config directory (for tables the
#     README names there).
# Lines are handled one at a time, so these words must stand on the same
# line as the word they follow (as in master.cf's continuation lines).
pf_rewrite_example() {
	local in=$1 out=$2 bin=$3 socks=$4 dns=$5 conf=${6:-/etc/postfix}
	local cmd='(^|[[:space:]])(deliver|socketmap|tcptable)([[:space:]]|$)'
	sed -E \
		-e "s#argv=[^[:space:]]*onionmx([[:space:]]|\$)#argv=$bin\\1#" \
		-e "/(^|[[:space:]])deliver([[:space:]]|\$)/{ /--socks/ s#--socks[= ][^[:space:]]+#--socks $socks#; /--socks/! s#(^|[[:space:]])deliver([[:space:]]|\$)#\\1deliver --socks $socks\\2# }" \
		-e "/$cmd/{ /--dns/ s#--dns[= ][^[:space:]]+#--dns $dns#; /--dns/! s#$cmd#\\1\\2 --dns $dns\\3# }" \
		-e "s#/etc/postfix/#$conf/#g" \
		"$in" >"$out"
}

# pf_main_from_comments MASTER_EXAMPLE: prints the main.cf lines that the
# master.cf fragment carries as a comment block starting "# main.cf:",
# uncommented ("#   key = value" starts a parameter, a deeper-indented
# line continues it).
pf_main_from_comments() {
	awk '
		/^#[[:space:]]*main\.cf:[[:space:]]*$/ { on = 1; next }
		on && /^#[[:space:]]+[^[:space:]]/ {
			line = substr($0, 2)
			if (line ~ /^[[:space:]]*[a-z0-9_]+[[:space:]]*=/) sub(/^[[:space:]]+/, "", line)
			else sub(/^[[:space:]]+/, "    ", line)
			print line
			next
		}
		{ on = 0 }
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
