# shellcheck shell=bash
# e2e/scenarios.sh: helpers to drive the sending Postfix and check results,
# and the scenarios themselves. Every scenario is a function named
# scenario_NAME that returns non-zero (or calls fail) when it fails; run.sh
# runs them in the order of SCENARIOS (or the names given on its command
# line) and prints "N passed, N failed".
#
# Helpers (all use $SEND_DIR, $RECV_DIR from the running environment):
#   mail_send FROM RCPT...        submit a message with sendmail; prints its
#                                 token (also its Message-ID local part)
#   mail_qid TOKEN [SECS]         the sender's queue id of that message
#   wait_status TOKEN RCPT STATUS [SECS]
#                                 waits for the sender's maillog line
#                                 "QID: to=<RCPT>, ... status=STATUS" (sent,
#                                 deferred, bounced) and prints it
#   mailbox_has USER TOKEN [DIR]  a message with TOKEN is in DIR/mail/USER
#                                 (default $RECV_DIR), maildir new/ or cur/
#   wait_mailbox USER TOKEN [DIR] [SECS]
#   queue_ids                     queue ids in the sender's queue
#   queue_wait_empty [SECS]
#   queue_flush                   postqueue -f (retry deferred mail now)
#   queue_delete QID|ALL
#   smtp_dialog PORT LINE...      talks SMTP to 127.0.0.1:PORT, prints the
#                                 server's replies (for checks on the receiver)
#   fail MSG                      marks the scenario failed (returns 1)

fail() {
	say "  FAIL: $*"
	return 1
}

# mail_send FROM RCPT... (body on stdin if it is not a terminal): prints the token.
mail_send() {
	local from=$1
	shift
	local token body=""
	# Unique although every scenario runs in a subshell of its own.
	token="e2e-$(date +%s%N)-$RANDOM"
	[[ -t 0 ]] || body=$(cat)
	{
		printf 'From: <%s>\n' "$from"
		printf 'To: %s\n' "$(printf '<%s>, ' "$@" | sed 's/, $//')"
		printf 'Subject: onionmx e2e %s\n' "$token"
		printf 'Message-ID: <%s@send.onionmx.test>\n' "$token"
		printf 'Date: %s\n' "$(LC_ALL=C date -R)"
		printf '\n%s\n%s\n' "token $token" "$body"
	} | sendmail -C "$SEND_DIR/etc" -f "$from" -- "$@" || {
		say "sendmail failed for $token"
		return 1
	}
	echo "$token"
}

mail_qid() {
	local token=$1 secs=${2:-20} deadline qid
	deadline=$((SECONDS + secs))
	while ((SECONDS < deadline)); do
		qid=$(sed -nE "s/.* ([0-9A-F]+): message-id=<$token@.*/\\1/p" "$SEND_DIR/maillog" 2>/dev/null | head -1)
		[[ -n $qid ]] && { echo "$qid"; return 0; }
		sleep 0.3
	done
	say "no queue id for $token in $SEND_DIR/maillog"
	return 1
}

wait_status() {
	local token=$1 rcpt=$2 status=$3 secs=${4:-120} qid deadline line
	qid=$(mail_qid "$token") || return 1
	deadline=$((SECONDS + secs))
	while ((SECONDS < deadline)); do
		line=$(grep -F " $qid: to=<$rcpt>," "$SEND_DIR/maillog" | grep -E "status=($status|sent|bounced|expired)" | tail -1) || true
		if [[ $line == *"status=$status"* ]]; then
			echo "$line"
			return 0
		fi
		[[ -n $line ]] && break # a final status, but not the one expected
		sleep 0.5
	done
	say "no status=$status for $rcpt ($qid); its log lines:"
	grep -F " $qid" "$SEND_DIR/maillog" | sed 's/^/    /' >&2 || true
	return 1
}

mailbox_has() {
	local user=$1 token=$2 dir=${3:-$RECV_DIR}
	grep -rlsF "$token" "$dir/mail/$user/new" "$dir/mail/$user/cur" 2>/dev/null | grep -q .
}

wait_mailbox() {
	local user=$1 token=$2 dir=${3:-$RECV_DIR} secs=${4:-30}
	wait_for "$secs" "$token in $dir/mail/$user" mailbox_has "$user" "$token" "$dir"
}

queue_ids() {
	postqueue -c "$SEND_DIR/etc" -j 2>/dev/null | sed -nE 's/.*"queue_id": *"([0-9A-F]+)".*/\1/p'
}

queue_wait_empty() {
	wait_for "${1:-60}" "an empty queue in $SEND_DIR" bash -c '[[ -z $(postqueue -c "$1" -j 2>/dev/null) ]]' _ "$SEND_DIR/etc"
}

queue_flush() { postqueue -c "$SEND_DIR/etc" -f; }

queue_delete() { postsuper -c "$SEND_DIR/etc" -d "$1" >/dev/null 2>&1; }

# smtp_dialog PORT LINE...: sends each LINE after reading the previous reply
# (multi-line replies are read to their last line); prints all replies.
smtp_dialog() {
	local port=$1
	shift
	timeout 20 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		shift
		reply() { local l; while IFS= read -r l <&3; do l=${l%$'"'\r'"'}; echo "$l"; [[ ${l:3:1} == "-" ]] || break; done; }
		reply
		for cmd in "$@"; do printf "%s\r\n" "$cmd" >&3; reply; done' _ "$port" "$@"
}

# ---------------------------------------------------------------------------
# Infrastructure checks (run by every mode before anything else).

check_infra() {
	local out
	smtp_listening "$RECV_SMTP_PORT" || fail "receiver does not answer on 127.0.0.1:$RECV_SMTP_PORT" || return 1
	out=$(smtp_dialog "$RECV_SMTP_PORT" "EHLO probe.onionmx.test" "MAIL FROM:<x@example.org>" \
		"RCPT TO:<nosuchuser@recv.onionmx.test>" "RCPT TO:<bob@example.org>" "RCPT TO:<bob@$TOR_ONION>" "QUIT")
	grep -q '^550 5\.1\.1 ' <<<"$out" || fail "receiver does not reject unknown users with 550 5.1.1: $out" || return 1
	grep -q '^554 5\.7\.1 .*Relay access denied' <<<"$out" || fail "receiver relays for foreign domains: $out" || return 1
	grep -q '^250 2\.1\.5 ' <<<"$out" || fail "receiver does not accept bob@$TOR_ONION: $out" || return 1
	out=$(dig +short +time=2 +tries=1 -p "$DNS_PORT" @127.0.0.1 SRV _onion-mx._tcp.recv.onionmx.test)
	[[ $out == "0 5 25 $TOR_ONION." ]] || fail "dnsmasq SRV answer is '$out'" || return 1
	out=$(dig +time=2 +tries=1 -p "$DNS_PORT" @127.0.0.1 SRV _onion-mx._tcp.clear.onionmx.test)
	grep -q 'status: NXDOMAIN' <<<"$out" || fail "dnsmasq does not answer NXDOMAIN for clear.onionmx.test" || return 1
	out=$(dig +tcp +short +time=2 +tries=1 -p "$DNS_PORT" @127.0.0.1 SRV _onion-mx._tcp.recv.onionmx.test)
	[[ $out == "0 5 25 $TOR_ONION." ]] || fail "dnsmasq over TCP answers '$out'" || return 1
	[[ -z $(postqueue -c "$SEND_DIR/etc" -j) ]] || fail "sender queue not empty at start" || return 1
	say "infrastructure checks passed (receiver 550 5.1.1, no relay, SRV over UDP and TCP, NXDOMAIN)"
}

# ---------------------------------------------------------------------------
# Scenarios that need the real onionmx binary.

SCENARIOS=(srv_domain onion_address unknown_user dead_onion no_srv receiver_down invalid_onion)

# 1. A domain with an _onion-mx._tcp SRV record is delivered over Tor.
scenario_srv_domain() {
	local t line
	t=$(mail_send alice@send.onionmx.test bob@recv.onionmx.test) || return 1
	line=$(wait_status "$t" bob@recv.onionmx.test sent 120) || return 1
	[[ $line == *"relay=onionmx"* ]] || fail "not delivered by the onionmx transport: $line" || return 1
	wait_mailbox bob "$t" || fail "message $t not in bob's mailbox" || return 1
}

# 2. A recipient at the onion name itself.
scenario_onion_address() {
	local t line
	t=$(mail_send alice@send.onionmx.test "bob@$TOR_ONION") || return 1
	line=$(wait_status "$t" "bob@$TOR_ONION" sent 120) || return 1
	[[ $line == *"relay=onionmx"* ]] || fail "not delivered by the onionmx transport: $line" || return 1
	wait_mailbox bob "$t" || fail "message $t not in bob's mailbox" || return 1
}

# 3. An unknown user behind the onion: 550 5.1.1 → bounce, back to alice.
scenario_unknown_user() {
	local t line
	t=$(mail_send alice@send.onionmx.test nosuchuser@recv.onionmx.test) || return 1
	line=$(wait_status "$t" nosuchuser@recv.onionmx.test bounced 120) || return 1
	[[ $line == *"dsn=5.1.1"* ]] || fail "bounce without dsn=5.1.1: $line" || return 1
	wait_mailbox alice "$t" "$SEND_DIR" || fail "no bounce for $t in alice's mailbox" || return 1
}

# 4. An onion nobody serves: temporary failure, the message stays queued.
scenario_dead_onion() {
	local t line qid
	t=$(mail_send alice@send.onionmx.test bob@dead.onionmx.test) || return 1
	line=$(wait_status "$t" bob@dead.onionmx.test deferred 200) || return 1
	[[ $line == *"relay=onionmx"* && $line == *"dsn=4."* ]] || fail "unexpected deferral: $line" || return 1
	qid=$(mail_qid "$t")
	queue_ids | grep -qx "$qid" || fail "$qid is no longer queued" || return 1
	queue_delete "$qid"
}

# 5. A domain without an SRV record goes to the default transport (clearnet).
scenario_no_srv() {
	local t line
	t=$(mail_send alice@send.onionmx.test bob@clear.onionmx.test) || return 1
	line=$(wait_status "$t" bob@clear.onionmx.test sent 60) || return 1
	[[ $line == *"relay=127.0.0.1[127.0.0.1]:$RECV_SMTP_PORT"* ]] || fail "not the default transport: $line" || return 1
	wait_mailbox bob "$t" || fail "message $t not in bob's mailbox" || return 1
}

# 6. The receiving MTA is down (the onion is up, its target port closed):
#    deferred; once it is back, a queue flush delivers the message.
scenario_receiver_down() {
	local t line
	pf_stop "$RECV_DIR"
	t=$(mail_send alice@send.onionmx.test bob@recv.onionmx.test) || { pf_start "$RECV_DIR"; return 1; }
	line=$(wait_status "$t" bob@recv.onionmx.test deferred 200) || { pf_start "$RECV_DIR"; return 1; }
	[[ $line == *"relay=onionmx"* && $line == *"dsn=4."* ]] || { pf_start "$RECV_DIR"; fail "unexpected deferral: $line"; return 1; }
	pf_start "$RECV_DIR"
	queue_flush
	wait_status "$t" bob@recv.onionmx.test sent 120 >/dev/null || return 1
	wait_mailbox bob "$t" || fail "message $t not in bob's mailbox" || return 1
}

# ---------------------------------------------------------------------------
# Harness self-test with e2e/testdata/fake-onionmx (whose deliver always
# exits 75): the routing works, the pipe defers, the default transport delivers.
SELFTEST_SCENARIOS=(selftest_defer no_srv)

scenario_selftest_defer() {
	local t line qid
	t=$(mail_send alice@send.onionmx.test bob@recv.onionmx.test) || return 1
	line=$(wait_status "$t" bob@recv.onionmx.test deferred 60) || return 1
	[[ $line == *"relay=onionmx"* && $line == *"fake onionmx"* ]] || fail "unexpected: $line" || return 1
	qid=$(mail_qid "$t")
	queue_ids | grep -qx "$qid" || fail "$qid is no longer queued" || return 1
	queue_delete "$qid"
}

# 7. An SRV target that looks like a v3 onion but is no valid key: Tor
#    refuses it (F6) and the message bounces instead of waiting for days.
scenario_invalid_onion() {
	local t line
	t=$(mail_send alice@send.onionmx.test bob@badkey.onionmx.test) || return 1
	line=$(wait_status "$t" bob@badkey.onionmx.test bounced 60) || return 1
	[[ $line == *"relay=onionmx"* && $line == *"dsn=5."* ]] || fail "unexpected bounce: $line" || return 1
	wait_mailbox alice "$t" "$SEND_DIR" || fail "no bounce for $t in alice's mailbox" || return 1
}
