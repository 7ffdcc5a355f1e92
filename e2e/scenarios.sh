# shellcheck shell=bash
# e2e/scenarios.sh: helpers to drive the sending Postfix and check results,
# and the scenarios themselves. Every scenario is a function named
# scenario_NAME that returns non-zero (or calls fail) when it fails; run.sh
# runs them in the order of SCENARIOS (or the names given on its command
# line), each in a subshell, and prints a summary and "N passed, N failed".
#
# Helpers (all use $SEND_DIR, $RECV_DIR from the running environment):
#   new_token                     a unique token (also the Message-ID's local part)
#   msg_headers FROM TOKEN RCPT...
#                                 From, To, Subject, Message-ID, Date headers
#   mail_submit FILE FROM RCPT... sendmail -i with FILE as the message
#   mail_send FROM RCPT...        compose ($WORK/msgs/TOKEN.eml, body "token
#                                 TOKEN" and $MAIL_BODY), submit, print TOKEN
#   mail_qid TOKEN [SECS]         the sender's queue id of that message
#   wait_status TOKEN RCPT STATUS [SECS]
#                                 waits for the sender's maillog line
#                                 "QID: to=<RCPT>, ... status=STATUS" (sent,
#                                 deferred, bounced) and prints it
#   status_count QID RCPT STATUS  how many such lines there are
#   mailbox_files USER TOKEN [DIR]
#                                 the Maildir files (new/, cur/) of DIR/mail/USER
#                                 (default $RECV_DIR) that contain TOKEN
#   mailbox_count USER TOKEN [DIR]
#   mailbox_has USER TOKEN [DIR]  / wait_mailbox USER TOKEN [DIR] [SECS]
#   mailbox_verbatim FILE SENT    FILE (delivered) is SENT preceded by nothing
#                                 but the trace headers Postfix adds
#   transport_route ADDR          what the sender's transport_maps answer for
#                                 ADDR (full address, then domain), as
#                                 "TABLE -> RESULT"; fails when none answers
#                                 (1) or one has a lookup error (2)
#   queue_ids / queue_has QID / queue_wait_empty [SECS] / queue_flush /
#   queue_delete QID|ALL
#   smtp_dialog PORT LINE...      talks SMTP to 127.0.0.1:PORT, prints the
#                                 server's replies (for checks on the receiver)
#   run_check ARG...              onionmx check --socks <the client's SocksPort>
#                                 ARG...: sets CHECK_RC, CHECK_OUT, CHECK_TIME
#                                 and shows the output
#   check_rc RC / check_line N REGEX / check_lines N
#                                 assertions on the last run_check
#   recv_mark / recv_sessions MARK N
#                                 the receiver's smtpd "disconnect from" lines
#                                 since the mark (waits for N of them)
#   recv_maildirs / recv_queue_empty
#                                 every file in the receiver's Maildirs; its
#                                 queue (postqueue -j and the queue
#                                 directories) is empty
#   fail MSG                      marks the scenario failed (returns 1)

fail() {
	say "  FAIL: $*"
	return 1
}

new_token() {
	echo "e2e-$(date +%s%N)-$RANDOM"
}

# msg_headers FROM TOKEN RCPT...: a message's own Message-ID and Date, so
# that Postfix adds none and what was sent can be found verbatim.
msg_headers() {
	local from=$1 token=$2
	shift 2
	printf 'From: <%s>\n' "$from"
	printf 'To: %s\n' "$(printf '<%s>, ' "$@" | sed 's/, $//')"
	printf 'Subject: onionmx e2e %s\n' "$token"
	printf 'Message-ID: <%s@send.onionmx.test>\n' "$token"
	printf 'Date: %s\n' "$(LC_ALL=C date -R)"
}

# mail_submit FILE FROM RCPT...: -i, so that a line with a lone "." is
# part of the message (never reads the harness's stdin).
mail_submit() {
	local file=$1 from=$2
	shift 2
	sendmail -i -C "$SEND_DIR/etc" -f "$from" -- "$@" <"$file" || {
		say "sendmail failed for $file"
		return 1
	}
}

# mail_send FROM RCPT...: prints the token. $MAIL_BODY, if set, is added
# to the body.
mail_send() {
	local from=$1
	shift
	local token f
	token=$(new_token)
	mkdir -p "$WORK/msgs"
	f=$WORK/msgs/$token.eml
	{
		msg_headers "$from" "$token" "$@"
		printf '\n%s\n' "token $token"
		[[ -z ${MAIL_BODY:-} ]] || printf '%s\n' "$MAIL_BODY"
	} >"$f"
	mail_submit "$f" "$from" "$@" || return 1
	echo "$token"
}

mail_qid() {
	local token=$1 secs=${2:-20} deadline qid
	deadline=$((SECONDS + secs))
	while ((SECONDS < deadline)); do
		qid=$(sed -nE "s/.* ([0-9A-F]+): message-id=<$token@.*/\\1/p" "$SEND_DIR/maillog" 2>/dev/null | head -1)
		[[ -n $qid ]] && {
			echo "$qid"
			return 0
		}
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
		sleep 0.3
	done
	say "no status=$status for $rcpt ($qid); its log lines:"
	grep -F " $qid" "$SEND_DIR/maillog" | sed 's/^/    /' >&2 || true
	return 1
}

status_count() { # QID RCPT STATUS
	grep -F " $1: to=<$2>," "$SEND_DIR/maillog" | grep -c "status=$3" || true
}

mailbox_files() {
	local user=$1 token=$2 dir=${3:-$RECV_DIR}
	grep -rlsF -- "$token" "$dir/mail/$user/new" "$dir/mail/$user/cur" 2>/dev/null || true
}

mailbox_count() {
	mailbox_files "$@" | grep -c . || true
}

mailbox_has() {
	[[ -n $(mailbox_files "$@") ]]
}

wait_mailbox() {
	local user=$1 token=$2 dir=${3:-$RECV_DIR} secs=${4:-30}
	wait_for "$secs" "$token in $dir/mail/$user" mailbox_has "$user" "$token" "$dir"
}

# mailbox_one USER TOKEN [DIR]: waits for the message and prints its file;
# fails unless exactly one file holds TOKEN (delivered exactly once).
mailbox_one() {
	local user=$1 token=$2 dir=${3:-$RECV_DIR} n
	wait_mailbox "$user" "$token" "$dir" || fail "$token is not in $dir/mail/$user" || return 1
	n=$(mailbox_count "$user" "$token" "$dir")
	((n == 1)) || fail "$token is in $n messages in $dir/mail/$user, not exactly one: $(mailbox_files "$user" "$token" "$dir" | tr '\n' ' ')" || return 1
	mailbox_files "$user" "$token" "$dir"
}

# mailbox_verbatim FILE SENT: the delivered FILE ends with SENT, byte for
# byte, and what precedes it is only the trace headers Postfix adds on the
# way (Received by both, Return-Path, X-Original-To and Delivered-To by the
# receiver's virtual(8)).
mailbox_verbatim() {
	local file=$1 sent=$2 size dsize pre names
	size=$(stat -c %s "$sent")
	dsize=$(stat -c %s "$file")
	((dsize >= size)) || fail "delivered $file ($dsize bytes) is shorter than what was sent ($size bytes)" || return 1
	if ! tail -c "$size" "$file" | cmp -s - "$sent"; then
		say "  the delivered message does not end with the sent one; diff sent delivered-tail:"
		diff <(cat "$sent") <(tail -c "$size" "$file") | head -20 | cut -c1-200 | sed 's/^/    /' >&2
		fail "$file does not hold $sent verbatim"
		return 1
	fi
	pre=$WORK/msgs/prefix.$$
	head -c $((dsize - size)) "$file" >"$pre"
	if [[ -s $pre && $(tail -c 1 "$pre" | od -An -c | tr -d ' ') != '\n' ]]; then
		rm -f "$pre"
		fail "the sent message does not start at a line in $file"
		return 1
	fi
	if grep -vqE '^((Received|Return-Path|X-Original-To|Delivered-To):|[[:space:]])' "$pre"; then
		say "  unexpected lines before the sent message:"
		grep -vE '^((Received|Return-Path|X-Original-To|Delivered-To):|[[:space:]])' "$pre" | head -5 | sed 's/^/    /' >&2
		rm -f "$pre"
		fail "Postfix added more than trace headers to $file"
		return 1
	fi
	names=$(grep -oE '^[A-Za-z-]+:' "$pre" | tr '\n' ' ')
	rm -f "$pre"
	say "  byte for byte: the $size bytes sent are the tail of the delivered file, after only: ${names:-nothing}"
}

# transport_route ADDR: asks the tables of the sender's transport_maps in
# Postfix's order (every table for the full address, then every table for
# the domain; a socketmap or tcp table only for the full address), from the
# queue directory as trivial-rewrite does (private/... sockets). Status 1
# when no table answers, 2 (and "TABLE[KEY] -> lookup error: ...") when one
# fails, as a socketmap's TEMP does: Postfix then defers the mail.
transport_route() {
	local addr=$1 key t out tables
	read -r -a tables <<<"$(postconf -c "$SEND_DIR/etc" -h transport_maps | tr ',' ' ')"
	for key in "$addr" "${addr#*@}"; do
		for t in "${tables[@]}"; do
			[[ $key != "$addr" && ($t == socketmap:* || $t == tcp:*) ]] && continue
			if out=$(cd "$SEND_DIR/queue" && postmap -c "$SEND_DIR/etc" -q "$key" "$t" 2>&1); then
				echo "${t}[$key] -> $out"
				return 0
			fi
			# Not found is silent; a lookup error (a socketmap's TEMP) stops
			# Postfix's search as it stops this one.
			if [[ -n $out ]]; then
				echo "${t}[$key] -> lookup error: $(grep -m1 'warning: ' <<<"$out" | sed 's/^.*warning: //')"
				return 2
			fi
		done
	done
	return 1
}

queue_ids() {
	postqueue -c "$SEND_DIR/etc" -j 2>/dev/null | sed -nE 's/.*"queue_id": *"([0-9A-F]+)".*/\1/p'
}

queue_has() { queue_ids | grep -qx "$1"; }

queue_empty() { [[ -z $(postqueue -c "$SEND_DIR/etc" -j 2>/dev/null) ]]; }

queue_wait_empty() {
	wait_for "${1:-60}" "an empty queue in $SEND_DIR" queue_empty
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

# re_quote STRING: STRING as an extended regexp that matches only itself.
# shellcheck disable=SC2001 # a bracket expression, not one substitution
re_quote() {
	sed 's/[][\.*^$+?(){}|/]/\\&/g' <<<"$1"
}

# run_check ARG...: onionmx check through the Tor client's SocksPort, as a
# monitoring system runs it. Sets CHECK_RC (the exit status), CHECK_OUT
# (stdout: the plugin output) and CHECK_TIME (seconds); shows the output.
# A plugin speaks on stdout only: anything on stderr fails the check_rc
# that follows.
run_check() {
	local t0 lines
	t0=$(date +%s.%N)
	CHECK_OUT=$("$WORK/onionmx" check --socks "127.0.0.1:$TOR_SOCKS_PORT" "$@" 2>"$WORK/check.stderr")
	CHECK_RC=$?
	CHECK_TIME=$(elapsed_since "$t0")
	say "  onionmx check $* -> exit $CHECK_RC in ${CHECK_TIME}s:"
	mapfile -t lines <<<"$CHECK_OUT"
	printf '    | %s\n' "${lines[@]}" >&2
	if [[ -s $WORK/check.stderr ]]; then
		say "  and on stderr:"
		sed 's/^/    ! /' "$WORK/check.stderr" >&2
	fi
}

# check_rc RC: the last check exited RC and wrote nothing on stderr.
check_rc() {
	((CHECK_RC == $1)) || fail "onionmx check exited $CHECK_RC, not $1" || return 1
	[[ ! -s $WORK/check.stderr ]] || fail "onionmx check wrote on stderr: $(head -3 "$WORK/check.stderr")" || return 1
}

# check_line N REGEX: line N of the last check's output matches REGEX
# (extended, bash =~).
check_line() {
	local l
	l=$(sed -n "$1p" <<<"$CHECK_OUT")
	[[ $l =~ $2 ]] || fail "line $1 of the check's output does not match /$2/: $l" || return 1
}

# check_lines N: the last check printed exactly N lines (the status line
# and one per target).
check_lines() {
	local n
	n=$(grep -c '' <<<"$CHECK_OUT")
	((n == $1)) || fail "the check printed $n lines, not $1" || return 1
}

# recv_mark: the receiver's maillog length now (for recv_since/recv_sessions).
recv_mark() { log_lines "$RECV_DIR/maillog"; }

recv_since() { tail -n +"$(($1 + 1))" "$RECV_DIR/maillog"; }

# recv_sessions MARK N: waits (10 s) for N smtpd sessions to end in the
# receiver's maillog since MARK (postlogd writes with a small delay), fails
# if there are more or fewer, and prints their "disconnect from" lines.
recv_disconnects() { recv_since "$1" | grep -E 'postfix/smtpd\[[0-9]+\]: disconnect from ' || true; }
recv_disconnects_reach() { (($(recv_disconnects "$1" | grep -c .) >= $2)); }
recv_sessions() {
	local mark=$1 n=$2 got
	wait_for 10 "$n smtpd disconnects in $RECV_DIR/maillog" recv_disconnects_reach "$mark" "$n" || true
	sleep 0.5 # one more that should not be there would show up now
	got=$(recv_disconnects "$mark")
	(($(grep -c . <<<"$got") == n)) || {
		say "  the receiver's maillog since the check:"
		recv_since "$mark" | sed 's/^/    /' >&2
		fail "$(grep -c . <<<"$got") smtpd sessions ended at the receiver, not $n"
		return 1
	}
	echo "$got"
}

# recv_maildirs: every file in the receiver's Maildirs (to compare before
# and after: the check must deliver nothing).
recv_maildirs() { find "$RECV_DIR/mail" -type f | sort; }

# recv_queue_empty: nothing in the receiver's queue, as postqueue sees it
# and as the queue directories hold it (waits up to 5 s for the cleanup
# server to remove a transaction that RSET aborted).
recv_queue_files() {
	local d
	for d in maildrop incoming active deferred hold corrupt; do
		[[ ! -d $RECV_DIR/queue/$d ]] || find "$RECV_DIR/queue/$d" -type f
	done
	postqueue -c "$RECV_DIR/etc" -j 2>/dev/null || true
}
recv_queue_is_empty() { [[ -z $(recv_queue_files) ]]; }
recv_queue_empty() {
	wait_for 5 "an empty queue at the receiver" recv_queue_is_empty ||
		fail "the receiver's queue is not empty: $(recv_queue_files | tr '\n' ' ')" || return 1
}

# recv_nothing_kept MAILDIRS: after a check, the receiver's Maildirs are
# still MAILDIRS (recv_maildirs before it), its queue is empty, and no
# message reached its queue manager or a delivery agent meanwhile (MARK).
recv_nothing_kept() {
	local before=$1 mark=$2 l
	[[ $(recv_maildirs) == "$before" ]] || fail "the receiver's Maildirs changed: $(diff <(echo "$before") <(recv_maildirs) | grep '^[<>]' | tr '\n' ' ')" || return 1
	recv_queue_empty || return 1
	l=$(recv_since "$mark" | grep -E 'postfix/(qmgr|cleanup|virtual|smtp|error|bounce|pickup)\[') || true
	[[ -z $l ]] || fail "a message went further than smtpd at the receiver: $l" || return 1
}

# recv_queued_qids TOKEN: the receiving Postfix's queue ids of the message
# whose Message-ID is <TOKEN@...> that it really queued: cleanup logged the
# Message-ID and qmgr took the queue file ("QID: from=<...>"). A
# transaction that was aborted in the middle of DATA has a cleanup line
# too, but never a qmgr line.
recv_queued_qids() {
	local q
	for q in $(sed -nE "s/.* postfix\/cleanup\[[0-9]+\]: ([0-9A-F]+): message-id=<$(re_quote "$1")@.*/\1/p" "$RECV_DIR/maillog" | sort -u); do
		grep -qE " postfix/qmgr\[[0-9]+\]: $q: from=<" "$RECV_DIR/maillog" && echo "$q"
	done
	return 0
}
recv_queued_one() { (($(recv_queued_qids "$1" | grep -c .) == 1)); }

# check_sent LINE TOKEN [TARGET]: LINE is a status=sent line of the onionmx
# transport whose text is deliver's success line as pipe(8) logs it (its
# first 100 characters), whole: "(delivered via onionmx service (TARGET:
# 250 Ok: queued as QID))", or to BDAT, whose reply is "Ok: N bytes queued
# as QID", "(TARGET: 250 Ok: ... queued as QID))". TARGET is the receiver's onion, with ":PORT"
# when the port is not 25 (default: the onion, port 25), and QID the queue
# id under which the receiving Postfix queued that very message: found in
# the receiver's maillog by the Message-ID of TOKEN (waits 10 s for
# postlogd), exactly one. Prints QID.
check_sent() {
	local line=$1 token=$2 target=${3:-$TOR_ONION} re host rqid got
	[[ $line == *" relay=onionmx,"* ]] || fail "not delivered by the onionmx transport: $line" || return 1
	re='status=sent \(delivered via onionmx service \(([^ ()]+): 250 Ok: (\.\.\. )?queued as ([0-9A-F]+)\)\)$'
	[[ $line =~ $re ]] ||
		fail "status=sent without deliver's whole success line '<onion>: 250 Ok: [... ]queued as QID': $line" || return 1
	host=${BASH_REMATCH[1]} rqid=${BASH_REMATCH[3]}
	[[ $host == "$target" ]] || fail "the success line names $host, not $target: $line" || return 1
	wait_for 10 "the receiver to log the queue id of $token" recv_queued_one "$token" ||
		fail "the receiver did not queue $token exactly once: queue ids '$(recv_queued_qids "$token" | tr '\n' ' ')'" || return 1
	got=$(recv_queued_qids "$token")
	[[ $rqid == "$got" ]] ||
		fail "the success line's queue id $rqid is not $got, the receiver's queue id of $token (by Message-ID in its maillog)" || return 1
	echo "$rqid"
}

# no_dns_since MARK PATTERN WHAT: dnsmasq saw no query matching PATTERN
# (extended regexp on the query line) since MARK.
no_dns_since() {
	local q
	q=$(dns_queries_since "$1" | grep -E "$2") || true
	[[ -z $q ]] || fail "DNS queries for $3: $(sed 's/^.*: //' <<<"$q" | sort -u | tr '\n' ';')" || return 1
}

# is_selftest: the binary under test is e2e/testdata/fake-onionmx.
is_selftest() { cmp -s "$WORK/onionmx" "$E2E_DIR/testdata/fake-onionmx"; }

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
	queue_empty || fail "sender queue not empty at start" || return 1
	# The deliberately open smtpd (the onion's port 2525) must really relay,
	# or relay_open would test nothing. RSET: no mail is ever queued.
	out=$(smtp_dialog "$RECV_OPEN_PORT" "EHLO probe.onionmx.test" "MAIL FROM:<x@example.org>" \
		"RCPT TO:<bob@example.org>" "RSET" "QUIT")
	grep -q '^250 2\.1\.5 ' <<<"$out" || fail "the open smtpd on $RECV_OPEN_PORT does not take a foreign recipient: $out" || return 1
	# The picky one (the onion's port 2526): refuses the probe's sender at
	# RCPT, relays for the null sender.
	out=$(smtp_dialog "$RECV_PICKY_PORT" "EHLO probe.onionmx.test" "MAIL FROM:<probe@onionmx-relay-test.invalid>" \
		"RCPT TO:<bob@example.org>" "RSET" "MAIL FROM:<>" "RCPT TO:<bob@example.org>" "RSET" "QUIT")
	grep -q '^550 5\.1\.8 <probe@onionmx-relay-test\.invalid>: Sender address rejected: Domain not found' <<<"$out" ||
		fail "the picky smtpd on $RECV_PICKY_PORT does not refuse the probe's sender with 550 5.1.8: $out" || return 1
	grep -q '^250 2\.1\.5 ' <<<"$out" || fail "the picky smtpd on $RECV_PICKY_PORT does not relay for <>: $out" || return 1
	say "infrastructure checks passed (receiver 550 5.1.1, no relay; its open smtpd on $RECV_OPEN_PORT relays; the one on $RECV_PICKY_PORT refuses the probe's sender, relays for <>; SRV over UDP and TCP, NXDOMAIN)"
}

# ---------------------------------------------------------------------------
# Scenarios that need the real onionmx binary. The numbers are issue 4's.

SCENARIOS=(srv_domain big_message static_map onion_address unknown_user tor_down no_srv burst
	dead_onion receiver_down invalid_onion unusable_onion static_typo postfix_stop
	check_ok check_partial check_tor_down relay_safe relay_open relay_picky environment)

declare -A SCENARIO_DESC=(
	[srv_domain]="1. SRV route via the lookup server, byte for byte"
	[big_message]="1. 10 MiB attachment, byte for byte, sha256"
	[static_map]="2. static transport map, no DNS query"
	[onion_address]="2. bare user@<onion>.onion, no DNS query"
	[unknown_user]="3. unknown user: DSN quoting the 550"
	[tor_down]="4. Tor client stopped: deferred; restarted: once"
	[no_srv]="5. no SRV record: default transport"
	[burst]="6. burst of 50, each delivered exactly once"
	[dead_onion]="   onion without a descriptor: deferred"
	[receiver_down]="   receiving MTA down: deferred, then delivered"
	[invalid_onion]="   invalid onion key (F6): bounced"
	[unusable_onion]="   v2/typo .onion recipients: 5.1.2 by onionmx, no DNS"
	[static_typo]="   static map pins a typo: deferred, file:line, no DNS"
	[postfix_stop]="   postfix stop mid-message: no end; restarted: one copy"
	[check_ok]="   onionmx check: OK, EHLO and QUIT only"
	[check_partial]="   onionmx check: a dead onion too: WARNING"
	[check_tor_down]="   onionmx check: Tor client stopped: CRITICAL"
	[relay_safe]="   check --relay-test, safe smtpd: 554, OK"
	[relay_open]="   check --relay-test, open smtpd: CRITICAL"
	[relay_picky]="   relay test, probe sender refused: WARNING; <>: CRITICAL"
	[environment]="   GOMAXPROCS=1 from master.cf reaches onionmx deliver"
	[selftest_defer]="   harness self-test: fake onionmx defers"
)

# A body that exercises SMTP transparency: lone dots, leading dots, a
# "From " line, trailing white space, a tab, a long line, empty lines.
tricky_body() {
	local token=$1
	printf 'token %s\n' "$token"
	printf '.\n'
	printf '.leading dot\n'
	printf '..two leading dots\n'
	printf 'From the start of a line (no ">" quoting in a Maildir)\n'
	printf 'trailing spaces   \n'
	printf '\ta tab, then an empty line\n'
	printf '\n'
	printf '%0990d\n' 0
	printf 'last line\n'
}

# 1. sendmail to a domain whose _onion-mx._tcp SRV record names the onion:
#    the lookup server routes it to onionmx, which delivers it over Tor.
scenario_srv_domain() {
	local rcpt=bob@recv.onionmx.test t f line rqid qid dmark route file
	dmark=$(dns_mark)
	t=$(new_token)
	mkdir -p "$WORK/msgs"
	f=$WORK/msgs/$t.eml
	{
		msg_headers alice@send.onionmx.test "$t" "$rcpt"
		echo
		tricky_body "$t"
	} >"$f"
	mail_submit "$f" alice@send.onionmx.test "$rcpt" || return 1
	line=$(wait_status "$t" "$rcpt" sent 120) || return 1
	say "  $(sed -E 's/.*(relay=)/\1/' <<<"$line")"
	rqid=$(check_sent "$line" "$t") || return 1
	say "  the success line names the receiver's onion and its queue id $rqid of this Message-ID"
	qid=$(mail_qid "$t")
	! queue_has "$qid" || fail "$qid is still queued" || return 1
	dns_queries_since "$dmark" | grep -qF "query[SRV] _onion-mx._tcp.recv.onionmx.test " ||
		fail "no SRV query for _onion-mx._tcp.recv.onionmx.test" || return 1
	route=$(transport_route "$rcpt") || fail "transport_maps have no route for $rcpt" || return 1
	[[ $route == socketmap:*" -> onionmx:"* ]] || fail "not routed by the lookup server: $route" || return 1
	say "  route: $route"
	file=$(mailbox_one bob "$t") || return 1
	mailbox_verbatim "$file" "$f" || return 1
	received_by_recv "$file" "$rqid" || return 1
}

# received_by_recv FILE RQID: the receiver's own Received header in FILE
# (the first one) names RQID, the queue id of the success line, and the
# EHLO name deliver gave: the sending Postfix's myhostname, which the
# example passes in ONIONMX_HELO (issue 9 case 15: never a bare "vm").
received_by_recv() {
	local file=$1 rqid=$2 rcvd helo
	rcvd=$(awk '
		f && /^[ \t]/ { r = r " " $0; next }
		f { exit }
		/^Received:/ { f = 1; r = $0 }
		END { gsub(/[ \t]+/, " ", r); print r }
	' "$file")
	[[ $rcvd =~ ^Received:\ from\ ([^ ]+)\ \(localhost\ \[127\.0\.0\.1\]\)\ by\ recv\.onionmx\.test\ \(Postfix\)\ with\ [A-Z]+\ id\ ([0-9A-F]+)[\ \;] ]] ||
		fail "the receiver's Received header is not what its smtpd writes: $rcvd" || return 1
	helo=${BASH_REMATCH[1]}
	[[ ${BASH_REMATCH[2]} == "$rqid" ]] || fail "the delivered file was queued as ${BASH_REMATCH[2]}, the success line says $rqid" || return 1
	[[ $helo == *.* ]] || fail "deliver's EHLO name '$helo' is not fully qualified" || return 1
	# The example hands deliver the sending Postfix's own $myhostname
	# (ONIONMX_HELO through export_environment).
	local mine
	mine=$(postconf -c "$SEND_DIR/etc" -h myhostname 2>/dev/null)
	[[ $helo == "$mine" ]] || fail "deliver's EHLO name is '$helo', not the sending Postfix's myhostname '$mine'" || return 1
	say "  the receiver's Received header: EHLO $helo (the sender's myhostname), id $rqid"
}

# 1. The same with a 10 MiB attachment (base64, about 14 MB): verbatim, and
#    the attachment decoded from the delivered file has the same sha256.
scenario_big_message() {
	local rcpt=bob@recv.onionmx.test t f bin b sum got line qid file
	t=$(new_token)
	mkdir -p "$WORK/msgs"
	f=$WORK/msgs/$t.eml bin=$WORK/msgs/$t.bin b="=_onionmx_e2e_$t"
	head -c $((10 * 1024 * 1024)) /dev/urandom >"$bin"
	sum=$(sha256sum <"$bin" | cut -d' ' -f1)
	{
		msg_headers alice@send.onionmx.test "$t" "$rcpt"
		printf 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="%s"\n\n' "$b"
		printf 'This is a multi-part message in MIME format.\n\n--%s\n' "$b"
		printf 'Content-Type: text/plain; charset=us-ascii\n\ntoken %s\n10 MiB of random bytes attached, sha256 %s\n\n--%s\n' "$t" "$sum" "$b"
		printf 'Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="random.bin"\nContent-Transfer-Encoding: base64\n\n'
		base64 -w 76 "$bin"
		printf '\n--%s--\n' "$b"
	} >"$f"
	say "  sending $(stat -c %s "$f") bytes (10 MiB attachment, sha256 ${sum:0:16}...)"
	mail_submit "$f" alice@send.onionmx.test "$rcpt" || return 1
	line=$(wait_status "$t" "$rcpt" sent 300) || return 1
	say "  $(sed -E 's/.*(relay=)/\1/' <<<"$line")"
	check_sent "$line" "$t" >/dev/null || return 1
	qid=$(mail_qid "$t")
	! queue_has "$qid" || fail "$qid is still queued" || return 1
	file=$(mailbox_one bob "$t") || return 1
	mailbox_verbatim "$file" "$f" || return 1
	got=$(awk -v b="--$b" '
		$0 == b { part++; hdr = 1; b64 = 0; next }
		index($0, b) == 1 { exit }
		hdr && $0 == "" { hdr = 0; next }
		hdr && tolower($0) ~ /^content-transfer-encoding: *base64/ { b64 = 1 }
		!hdr && b64 && part == 2 { print }
	' "$file" | base64 -d | sha256sum | cut -d' ' -f1)
	[[ $got == "$sum" ]] || fail "attachment sha256 $got, sent $sum" || return 1
	say "  attachment decoded from the Maildir file: sha256 matches ($sum)"
	rm -f "$bin"
}

# 2. A domain pinned in the sender's static transport map
#    (hash:.../onionmx_transport, "pinned.onionmx.test onionmx:[ONION]:25"):
#    delivered, and not one DNS query names the domain.
scenario_static_map() {
	local rcpt="bob@$PF_PINNED_DOMAIN" t line dmark route
	route=$(transport_route "$rcpt") || fail "transport_maps have no route for $rcpt" || return 1
	[[ $route == *" -> onionmx:[$TOR_ONION]:25" ]] || fail "unexpected route: $route" || return 1
	say "  route: $route"
	route=$(postmap -c "$SEND_DIR/etc" -q "$PF_PINNED_DOMAIN" "$(postconf -c "$SEND_DIR/etc" -h transport_maps | tr -s ', ' '\n' | grep -F ":$PF_STATIC_MAP" | head -1)") ||
		fail "$PF_PINNED_DOMAIN is not in the static map $PF_STATIC_MAP" || return 1
	[[ $route == "onionmx:[$TOR_ONION]:25" ]] || fail "static map entry: $route" || return 1
	dmark=$(dns_mark)
	t=$(mail_send alice@send.onionmx.test "$rcpt") || return 1
	line=$(wait_status "$t" "$rcpt" sent 120) || return 1
	check_sent "$line" "$t" >/dev/null || return 1
	mailbox_one bob "$t" >/dev/null || return 1
	no_dns_since "$dmark" "$PF_PINNED_DOMAIN" "$PF_PINNED_DOMAIN" || return 1
	say "  no DNS query for $PF_PINNED_DOMAIN ($(dns_queries_since "$dmark" | grep -c . || true) queries in all)"
}

# The example's export_environment hands GOMAXPROCS=1 (and ONIONMX_HELO)
# to the onionmx deliver process that pipe(8) starts: read in its
# /proc/PID/environ while it runs. It runs for a few hundred milliseconds
# (Tor's connect, the parent guard's settle), so a message that slips
# past the watch is followed by another, up to three.
scenario_environment() {
	local rcpt="bob@$PF_PINNED_DOMAIN" t try pid mark env= seen= body
	# A few MB of body keep the delivery running for a second or more: a
	# small one took 0.15 s and slipped between two looks on a loaded
	# machine. (A shell variable of the subshell, not in the environment
	# of the commands mail_send runs: too big for an exec.)
	body=$(head -c 3000000 /dev/urandom | base64)
	for try in 1 2 3; do
		mark=$(log_lines "$SEND_DIR/maillog")
		t=$(
			MAIL_BODY=$body
			mail_send alice@send.onionmx.test "$rcpt"
		) || return 1
		local deadline=$((SECONDS + 60))
		# Until the delivery is logged: pipe(8) logs after onionmx exits.
		while [[ -z $env ]] && ((SECONDS < deadline)) &&
			! tail -n +"$((mark + 1))" "$SEND_DIR/maillog" | grep -q " to=<$rcpt>, relay=onionmx"; do
			for pid in $(pgrep -x onionmx); do
				[[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == "$WORK/onionmx deliver "* ]] || continue
				env=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null) || env=
				[[ -n $env ]] && seen=$pid && break
			done
		done
		wait_status "$t" "$rcpt" sent 120 >/dev/null || return 1
		[[ -z $env ]] || break
	done
	[[ -n $env ]] || fail "no running onionmx deliver seen in 3 deliveries" || return 1
	grep -qx 'GOMAXPROCS=1' <<<"$env" || fail "onionmx deliver (pid $seen) has no GOMAXPROCS=1: $(tr '\n' ' ' <<<"$env")" || return 1
	grep -qx "ONIONMX_HELO=$(postconf -c "$SEND_DIR/etc" -h myhostname)" <<<"$env" ||
		fail "onionmx deliver (pid $seen) has no ONIONMX_HELO=myhostname: $(tr '\n' ' ' <<<"$env")" || return 1
	say "  onionmx deliver pid $seen (delivery $try): $(grep -E '^(GOMAXPROCS|ONIONMX_HELO)=' <<<"$env" | tr '\n' ' ')"
}

# 2. A recipient at the onion name itself: no configuration, no DNS.
scenario_onion_address() {
	local rcpt="bob@$TOR_ONION" t line dmark
	dmark=$(dns_mark)
	t=$(mail_send alice@send.onionmx.test "$rcpt") || return 1
	line=$(wait_status "$t" "$rcpt" sent 120) || return 1
	check_sent "$line" "$t" >/dev/null || return 1
	mailbox_one bob "$t" >/dev/null || return 1
	no_dns_since "$dmark" '\.onion from' ".onion names" || return 1
}

# 3. An unknown user behind the onion: 550 5.1.1 at RCPT → bounced, and the
#    DSN back to alice quotes the remote's reply.
scenario_unknown_user() {
	local rcpt=nosuchuser@recv.onionmx.test t line qid dsn
	t=$(mail_send alice@send.onionmx.test "$rcpt") || return 1
	line=$(wait_status "$t" "$rcpt" bounced 120) || return 1
	[[ $line == *" relay=onionmx,"* && $line == *"dsn=5.1.1"* && $line == *"said: 550 5.1.1 "* ]] ||
		fail "bounce without the remote's 550 5.1.1: $line" || return 1
	qid=$(mail_qid "$t")
	! queue_has "$qid" || fail "$qid is still queued" || return 1
	dsn=$(mailbox_one alice "$t" "$SEND_DIR") || fail "no DSN for $t in alice's mailbox" || return 1
	grep -q '^From: Mail Delivery System <MAILER-DAEMON@' "$dsn" || fail "$dsn is not a DSN" || return 1
	grep -q '^Status: 5\.1\.1' "$dsn" || fail "DSN $dsn without Status: 5.1.1" || return 1
	grep -q "^Final-Recipient: rfc822; $rcpt" "$dsn" || fail "DSN $dsn does not name $rcpt" || return 1
	# The reply is folded in the DSN: unfold before looking for it.
	tr -s '\n ' '  ' <"$dsn" | grep -qF "said: 550 5.1.1 <$rcpt>: Recipient address rejected" ||
		fail "DSN $dsn does not quote the remote's '550 5.1.1 <$rcpt>: ...'" || return 1
	(($(mailbox_count bob "$t") == 0)) || fail "$t reached a mailbox at the receiver" || return 1
	say "  DSN $(basename "$dsn"): Status 5.1.1, quotes '550 5.1.1 <$rcpt>: Recipient address rejected'"
}

# 4. The Tor client is stopped (by its pid; the onion service keeps
#    running): the message is deferred with 4.4.1, again and again, never
#    bounced. Then the client is started again with the same torrc and,
#    once it reaches the onion, postqueue -f delivers the message once.
scenario_tor_down() {
	local rcpt=bob@recv.onionmx.test t line qid rc=0
	tornet_client_stop || fail "could not stop the Tor client" || return 1
	tor_down_while_stopped || rc=1
	tornet_client_start || fail "the Tor client did not come back" || return 1
	((rc == 0)) || return 1
	queue_has "$TOR_DOWN_QID" || fail "$TOR_DOWN_QID left the queue while Tor was being restarted" || return 1
	queue_flush
	line=$(wait_status "$TOR_DOWN_TOKEN" "$rcpt" sent 120) || return 1
	check_sent "$line" "$TOR_DOWN_TOKEN" >/dev/null || return 1
	mailbox_one bob "$TOR_DOWN_TOKEN" >/dev/null || return 1
	! queue_has "$TOR_DOWN_QID" || fail "$TOR_DOWN_QID is still queued" || return 1
	say "  after the restart: delivered once ($(status_count "$TOR_DOWN_QID" "$rcpt" deferred) deferrals before)"
}

tor_down_while_stopped() {
	local rcpt=bob@recv.onionmx.test t line qid n
	t=$(mail_send alice@send.onionmx.test "$rcpt") || return 1
	TOR_DOWN_TOKEN=$t
	line=$(wait_status "$t" "$rcpt" deferred 60) || return 1
	qid=$(mail_qid "$t")
	TOR_DOWN_QID=$qid
	say "  $(sed -E 's/.*(relay=)/\1/' <<<"$line")"
	[[ $line == *" relay=onionmx,"* && $line == *"dsn=4.4.1,"* ]] || fail "not deferred with 4.4.1: $line" || return 1
	# Postfix retries after minimal_backoff_time (10 s here): wait for a
	# second attempt, which must be deferred the same way.
	wait_for 45 "a second deferral of $qid" bash -c '(( $(grep -F " $1: to=<$2>," "$3" | grep -c "status=deferred") >= 2 ))' _ "$qid" "$rcpt" "$SEND_DIR/maillog" ||
		fail "no second delivery attempt of $qid" || return 1
	n=$(status_count "$qid" "$rcpt" deferred)
	line=$(grep -F " $qid: to=<$rcpt>," "$SEND_DIR/maillog" | grep -F status=deferred | grep -vF 'dsn=4.4.1,') || true
	[[ -z $line ]] || fail "a deferral of $qid without 4.4.1: $line" || return 1
	(($(status_count "$qid" "$rcpt" bounced) == 0)) || fail "$qid bounced" || return 1
	! grep -qF "$qid: sender non-delivery notification" "$SEND_DIR/maillog" || fail "a bounce for $qid" || return 1
	(($(mailbox_count alice "$t" "$SEND_DIR") == 0)) || fail "a bounce for $t in alice's mailbox" || return 1
	(($(mailbox_count bob "$t") == 0)) || fail "$t delivered although Tor is down" || return 1
	queue_has "$qid" || fail "$qid is no longer queued" || return 1
	say "  $n attempts, all deferred with 4.4.1; no bounce; $qid still queued"
}

# 5. A domain without an SRV record is not routed to onionmx: the lookup
#    server answers NOTFOUND and the default transport (plain SMTP to the
#    receiver, the "clear net" here) delivers it.
scenario_no_srv() {
	local rcpt=bob@clear.onionmx.test t line dmark route rc
	dmark=$(dns_mark)
	t=$(mail_send alice@send.onionmx.test "$rcpt") || return 1
	line=$(wait_status "$t" "$rcpt" sent 60) || return 1
	[[ $line =~ \ relay=([^,]*), ]] || fail "no relay= in $line" || return 1
	[[ ${BASH_REMATCH[1]} != onionmx* ]] || fail "routed to onionmx: $line" || return 1
	[[ ${BASH_REMATCH[1]} == "127.0.0.1[127.0.0.1]:$RECV_SMTP_PORT" && $line == *"postfix/smtp["* ]] ||
		fail "not the default transport (smtp to 127.0.0.1:$RECV_SMTP_PORT): $line" || return 1
	say "  relay=${BASH_REMATCH[1]} (default transport)"
	# (The harness's own fake onionmx asks no DNS.)
	is_selftest || dns_queries_since "$dmark" | grep -qF "query[SRV] _onion-mx._tcp.clear.onionmx.test " ||
		fail "the lookup server did not ask for _onion-mx._tcp.clear.onionmx.test" || return 1
	route=$(transport_route "$rcpt") && rc=0 || rc=$?
	((rc == 1)) || fail "transport_maps answer for $rcpt: $route" || return 1
	mailbox_one bob "$t" >/dev/null || return 1
}

# 6. A burst of 50 messages, each with its own token: every one delivered
#    exactly once. Reports the wall time from the first submission to the
#    empty queue.
scenario_burst() {
	local rcpt=bob@recv.onionmx.test n=50 i t0 tsub twall tokens=() t counts bad=0 deferred=0
	queue_empty || fail "the queue is not empty before the burst" || return 1
	local run
	run=burst-$(date +%s%N)
	mkdir -p "$WORK/msgs"
	for ((i = 1; i <= n; i++)); do
		t=$run-$(printf %02d "$i")
		tokens+=("$t")
		{
			msg_headers alice@send.onionmx.test "$t" "$rcpt"
			printf '\ntoken %s\nmessage %d of %d\n' "$t" "$i" "$n"
		} >"$WORK/msgs/$t.eml"
	done
	# All 50 sendmail processes at once: a burst, not a trickle.
	local pids=() p
	t0=$(date +%s.%N)
	for t in "${tokens[@]}"; do
		mail_submit "$WORK/msgs/$t.eml" alice@send.onionmx.test "$rcpt" &
		pids+=($!)
	done
	for p in "${pids[@]}"; do
		wait "$p" || bad=1
	done
	((bad == 0)) || fail "sendmail failed for some of the burst" || return 1
	tsub=$(elapsed_since "$t0")
	# Done: the log has all of them removed from the queue, and the queue
	# is empty (showq may miss a message that moves between queues).
	# Polled every 0.2 s for a tight wall time.
	local deadline=$((SECONDS + 300))
	until burst_done "$run" "$n"; do
		((SECONDS < deadline)) || fail "the queue is not empty after 300 s: $(queue_ids | wc -l) left" || return 1
		sleep 0.2
	done
	twall=$(elapsed_since "$t0")
	report_set burst_wall "$twall"
	report_set burst_submit "$tsub"
	say "  $n messages submitted (in parallel) in ${tsub}s; queue empty ${twall}s after the first submission"
	# The log, in one pass: per message (by its Message-ID), its queue id,
	# how many status=sent lines (must be 1, via onionmx), deferrals and
	# bounces. Lines may lag the queue by a moment: retry for 10 s.
	local summary deadline2=$((SECONDS + 10))
	while :; do
		summary=$(awk -v run="$run" -v rcpt="$rcpt" '
			match($0, / [0-9A-F]+: message-id=</) {
				q = substr($0, RSTART + 1, RLENGTH - 15)
				id = substr($0, RSTART + RLENGTH)
				sub(/@.*/, "", id)
				if (index(id, run "-") == 1) { tok[q] = id; order[++n] = q }
				next
			}
			match($0, / [0-9A-F]+: to=</) {
				q = substr($0, RSTART + 1, RLENGTH - 7)
				if (!(q in tok) || index($0, "to=<" rcpt ">,") == 0) next
				if ($0 ~ /status=sent/) { sent[q]++; if ($0 !~ / relay=onionmx,/) other[q]++ }
				else if ($0 ~ /status=deferred/) def[q]++
				else if ($0 ~ /status=(bounced|expired)/) bnc[q]++
			}
			END {
				for (i = 1; i <= n; i++) {
					q = order[i]
					printf "%s %s %d %d %d %d\n", tok[q], q, sent[q], def[q], bnc[q], other[q]
				}
			}
		' "$SEND_DIR/maillog")
		bad=0
		[[ $(grep -c . <<<"$summary") == "$n" ]] || bad=1
		awk '$3 != 1 || $5 != 0 || $6 != 0 { exit 1 }' <<<"$summary" || bad=1
		((bad == 0 || SECONDS >= deadline2)) && break
		sleep 0.5
	done
	if ((bad)); then
		say "  per message: token qid sent deferred bounced not-via-onionmx (those not exactly 1 0 0 0, or missing):"
		awk '$3 != 1 || $5 != 0 || $6 != 0' <<<"$summary" | sed 's/^/    /' >&2
		say "  $(grep -c . <<<"$summary") of $n messages in the log"
		fail "not every message of the burst was sent exactly once via onionmx"
		return 1
	fi
	deferred=$(awk '{ d += $4 } END { print d + 0 }' <<<"$summary")
	# The mailbox: each token in exactly one file.
	counts=$(grep -rlsF -- "$run-" "$RECV_DIR/mail/bob/new" "$RECV_DIR/mail/bob/cur" |
		xargs -r grep -hoE "^Message-ID: <$run-[0-9]+@" | sort | uniq -c)
	for t in "${tokens[@]}"; do
		i=$(awk -v k="<$t@" '$3 == k { print $1 }' <<<"$counts")
		[[ ${i:-0} == 1 ]] || {
			say "  $t is in ${i:-0} messages"
			bad=1
		}
	done
	[[ $(grep -c . <<<"$counts") == "$n" ]] || bad=1
	((bad == 0)) || fail "the mailbox does not hold each of the $n messages exactly once" || return 1
	say "  all $n in bob's Maildir exactly once ($deferred deferrals on the way)"
}

# burst_done RUN N: N messages with Message-IDs <RUN-...@ were queued and
# removed from the queue, and the queue is empty.
burst_done() {
	local ids
	ids=$(sed -nE "s/.* ([0-9A-F]+): message-id=<$1-[0-9]+@.*/\1/p" "$SEND_DIR/maillog" | sort -u)
	(($(grep -c . <<<"$ids") >= $2)) || return 1
	(($(grep -cE " ($(paste -sd'|' <<<"$ids")): removed\$" "$SEND_DIR/maillog") >= $2)) || return 1
	queue_empty
}

# An onion nobody serves (no descriptor): temporary failure, stays queued.
scenario_dead_onion() {
	local rcpt=bob@dead.onionmx.test t line qid
	t=$(mail_send alice@send.onionmx.test "$rcpt") || return 1
	line=$(wait_status "$t" "$rcpt" deferred 200) || return 1
	say "  $(sed -E 's/.*(relay=)/\1/' <<<"$line")"
	[[ $line == *" relay=onionmx,"* && $line == *"dsn=4."* ]] || fail "unexpected deferral: $line" || return 1
	qid=$(mail_qid "$t")
	queue_has "$qid" || fail "$qid is no longer queued" || return 1
	queue_delete "$qid"
}

# The receiving MTA is down (the onion is up, its target port closed):
# deferred; once it is back, a queue flush delivers the message once.
scenario_receiver_down() {
	local rcpt=bob@recv.onionmx.test t line
	pf_stop "$RECV_DIR"
	t=$(mail_send alice@send.onionmx.test "$rcpt") || {
		pf_start "$RECV_DIR"
		return 1
	}
	line=$(wait_status "$t" "$rcpt" deferred 200) || {
		pf_start "$RECV_DIR"
		return 1
	}
	say "  $(sed -E 's/.*(relay=)/\1/' <<<"$line")"
	[[ $line == *" relay=onionmx,"* && $line == *"dsn=4."* ]] || {
		pf_start "$RECV_DIR"
		fail "unexpected deferral: $line"
		return 1
	}
	pf_start "$RECV_DIR"
	wait_for 20 "receiver smtpd" smtp_listening "$RECV_SMTP_PORT" || fail "the receiver did not come back" || return 1
	queue_flush
	line=$(wait_status "$t" "$rcpt" sent 120) || return 1
	check_sent "$line" "$t" >/dev/null || return 1
	mailbox_one bob "$t" >/dev/null || return 1
}

# An SRV target that looks like a v3 onion but is no valid key: Tor
# refuses it (F6) and the message bounces instead of waiting for days.
scenario_invalid_onion() {
	local rcpt=bob@badkey.onionmx.test t line
	t=$(mail_send alice@send.onionmx.test "$rcpt") || return 1
	line=$(wait_status "$t" "$rcpt" bounced 60) || return 1
	say "  $(sed -E 's/.*(relay=)/\1/' <<<"$line")"
	[[ $line == *" relay=onionmx,"* && $line == *"dsn=5."* ]] || fail "unexpected bounce: $line" || return 1
	mailbox_one alice "$t" "$SEND_DIR" >/dev/null || fail "no bounce for $t in alice's mailbox" || return 1
}

# ---------------------------------------------------------------------------
# postfix stop in the middle of a delivery (issue 9 case 1).

# onionmx_procs [COMMAND]: the pids of this run's onionmx processes (those
# of COMMAND only: deliver, socketmap), from /proc.
onionmx_procs() {
	local p cmd
	for p in /proc/[0-9]*; do
		cmd=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
		[[ $cmd == "$WORK/onionmx ${1:-}"* ]] && echo "${p#/proc/}"
	done
	return 0
}
# proc_ppid PID / proc_io PID rchar|wchar / proc_start PID (its start time,
# which tells a process from a later one that got its pid) / proc_alive PID
# START: that process runs (a zombie does not) / proc_gone PID [START].
proc_ppid() { awk '$1 == "PPid:" { print $2 }' "/proc/$1/status" 2>/dev/null; }
proc_io() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/io" 2>/dev/null; }
proc_start() { sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }
proc_alive() {
	local st
	st=$(sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && ${st%% *} != Z && ( -z ${2:-} || $(cut -d' ' -f20 <<<"$st") == "$2" ) ]]
}
proc_gone() { ! proc_alive "$@"; }

# body_sha256 FILE: the sha256 of FILE's body (after the first empty line).
body_sha256() { sed '1,/^$/d' "$1" | sha256sum | cut -d' ' -f1; }

# A 56 MB message (40 MiB of random bytes in base64) to
# bob@relayed.onionmx.test, which the static map pins to the onion's port
# 26: there pause-relay.pl relays to the receiver's smtpd, and stops
# reading once 64 KiB have come, which is inside the body. onionmx's writes
# block once the buffers on the way are full (Tor's and the kernel's: 8 to
# 27 MB were seen, hence the size), while pipe(8) still has most of the
# message to give: "still streaming" is a fact, not a race (checked:
# onionmx has read less than the message, and writes no more). Then `postfix stop` the sender: master
# SIGTERMs its process group, pipe(8) dies, onionmx, in its own session,
# survives. The relay goes on; onionmx reads what pipe(8) had written, then
# end of file, and must not send the final dot: it exits (75, as strace
# sees it) and the receiver's session ends "lost connection after DATA"
# with nothing queued. Then `postfix start` and a flush: the receiver has
# exactly one copy, byte for byte (and the body's sha256), no bounce, no
# onionmx left over. The success line ends in ":26".
scenario_postfix_stop() {
	local rc=0
	PFS_PID= PFS_START= PFS_STRACE= PFS_RELAY=$WORK/relay
	pfstop_run || rc=1
	# Whatever happened: the relay lets everything through and stops, the
	# sender runs, and the onionmx this scenario orphaned is gone.
	touch "$PFS_RELAY/go" 2>/dev/null || true
	pid_of "$SEND_DIR/queue/pid/master.pid" >/dev/null || pf_start "$SEND_DIR"
	if proc_alive "$PFS_PID" "$PFS_START"; then
		wait_for 30 "the orphaned onionmx $PFS_PID to exit" proc_gone "$PFS_PID" "$PFS_START" || {
			say "  the orphaned onionmx $PFS_PID is still running: TERM"
			kill -TERM "$PFS_PID" 2>/dev/null || true
		}
		rc=1
	fi
	[[ -z $PFS_STRACE ]] || kill "$PFS_STRACE" 2>/dev/null || true
	stop_pidfile pause-relay "$PFS_RELAY/pid"
	return "$rc"
}

pfstop_run() {
	local rcpt="bob@$PF_RELAYED_DOMAIN" t f bin b rmark qid size ppid spid rq r w w0 i n line rqid file files out st paused
	local bad=()
	rm -rf "$PFS_RELAY"
	mkdir -p "$PFS_RELAY" "$WORK/msgs"
	register_pidfile pause-relay "$PFS_RELAY/pid"
	perl "$E2E_DIR/pause-relay.pl" "$RECV_RELAY_PORT" "$RECV_SMTP_PORT" $((64 * 1024)) "$PFS_RELAY" \
		</dev/null >"$PFS_RELAY/log" 2>&1 &
	wait_for 10 "the pausing relay on $RECV_RELAY_PORT" smtp_listening "$RECV_RELAY_PORT" ||
		fail "the pausing relay does not answer on $RECV_RELAY_PORT: $(cat "$PFS_RELAY/log")" || return 1
	rm -f "$PFS_RELAY/paused" # smtp_listening went through it (a session, no DATA)

	t=$(new_token)
	f=$WORK/msgs/$t.eml bin=$WORK/msgs/$t.bin b="=_onionmx_e2e_$t"
	head -c $((40 * 1024 * 1024)) /dev/urandom >"$bin"
	{
		msg_headers alice@send.onionmx.test "$t" "$rcpt"
		printf 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="%s"\n\n' "$b"
		printf 'This is a multi-part message in MIME format.\n\n--%s\n' "$b"
		printf 'Content-Type: text/plain; charset=us-ascii\n\ntoken %s\n\n--%s\n' "$t" "$b"
		printf 'Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n'
		base64 -w 76 "$bin"
		printf '\n--%s--\n' "$b"
	} >"$f"
	rm -f "$bin"
	rmark=$(recv_mark)
	say "  sending $(stat -c %s "$f") bytes to $rcpt, body sha256 $(body_sha256 "$f" | cut -c1-16)..."
	mail_submit "$f" alice@send.onionmx.test "$rcpt" || return 1
	qid=$(mail_qid "$t") || return 1

	# The relay pauses after 1 MiB; onionmx deliver, child of pipe(8),
	# then writes no more (for a second; 30 s at most).
	wait_for 60 "the relay to pause" test -s "$PFS_RELAY/paused" || fail "the relay never paused" || return 1
	paused=$(cat "$PFS_RELAY/paused")
	PFS_PID=$(onionmx_procs deliver)
	[[ -n $PFS_PID && $PFS_PID != *$'\n'* ]] || fail "not one onionmx deliver process: '${PFS_PID//$'\n'/ }'" || return 1
	PFS_START=$(proc_start "$PFS_PID")
	ppid=$(proc_ppid "$PFS_PID")
	[[ $(cat "/proc/$ppid/comm" 2>/dev/null) == pipe ]] || fail "onionmx $PFS_PID's parent $ppid is not pipe(8)" || return 1
	w0=-1 n=0
	for ((i = 0; i < 300 && n < 10; i++)); do
		w=$(proc_io "$PFS_PID" wchar)
		if [[ $w == "$w0" ]]; then n=$((n + 1)); else n=0 w0=$w; fi
		sleep 0.1
	done
	((n >= 10)) || fail "onionmx kept writing for 30 s to a paused relay" || return 1
	size=$(sed -nE "s/.* postfix\/qmgr\[[0-9]+\]: $qid: from=<[^>]*>, size=([0-9]+),.*/\1/p" "$SEND_DIR/maillog" | head -1)
	r=$(proc_io "$PFS_PID" rchar)
	[[ -n $size && -n $r ]] && ((r < size)) ||
		fail "onionmx had read ${r:-?} bytes of the ${size:-?}-byte message when its writes blocked: not streaming any more" || return 1
	wait_for 10 "the receiver's smtpd to log the transaction" pfstop_recv_client "$rmark" ||
		fail "the receiver's smtpd logged no transaction" || return 1
	read -r spid rq <<<"$(pfstop_recv_client "$rmark")"
	say "  the relay paused after $paused bytes; onionmx $PFS_PID (child of pipe(8) $ppid) is blocked mid-message, having read $r of the $size bytes and written $w0; receiver: smtpd[$spid], $rq"

	local ppstart
	ppstart=$(proc_start "$ppid")
	# Its exit status: nobody else will see it once pipe(8) is gone.
	if command -v strace >/dev/null 2>&1; then
		strace -q -e trace=none -o "$WORK/postfix_stop.strace" -p "$PFS_PID" 2>/dev/null &
		PFS_STRACE=$!
		wait_for 10 "strace to attach to $PFS_PID" pfstop_traced "$PFS_PID" || say "  (strace did not attach: the exit status will not be known)"
	fi
	pf_stop "$SEND_DIR"
	! pid_of "$SEND_DIR/queue/pid/master.pid" >/dev/null || fail "the sender's master still runs" || return 1
	wait_for 10 "pipe(8) $ppid to die" proc_gone "$ppid" "$ppstart" || fail "pipe(8) $ppid survived postfix stop" || return 1
	# onionmx runs in its own session: postfix stop does not signal it.
	# It gives up as soon as its pipe(8) is gone (nobody would learn the
	# outcome, and Postfix sends the message again), still blocked on the
	# paused relay, without the end of data.
	wait_for 30 "the orphaned onionmx $PFS_PID to give up" proc_gone "$PFS_PID" "$PFS_START" ||
		fail "the orphaned onionmx $PFS_PID went on for 30 s after pipe(8) died" || return 1
	say "  postfix stop: master and pipe(8) gone; onionmx $PFS_PID gave up with them"
	touch "$PFS_RELAY/go"
	PFS_START=
	if [[ -n $PFS_STRACE ]]; then
		wait "$PFS_STRACE" 2>/dev/null || true
		PFS_STRACE=
		st=$(sed -nE 's/^\+\+\+ exited with ([0-9]+) \+\+\+$/\1/p; s/^\+\+\+ killed by (SIG[A-Z0-9]+).*/\1/p' "$WORK/postfix_stop.strace" | tail -1)
		say "  the orphaned onionmx exited: ${st:-status unknown} ($(tail -1 "$WORK/postfix_stop.strace" 2>/dev/null))"
		[[ -z $st || $st == 75 ]] || bad+=("the orphaned onionmx exited with $st, not 75 (EX_TEMPFAIL)")
	fi
	# The receiver: that session ended without a message.
	wait_for 20 "smtpd[$spid] to end its session" pfstop_recv_ended "$rmark" "$spid" ||
		fail "the receiver's smtpd[$spid] did not end its session" || return 1
	out=$(recv_since "$rmark" | grep -E "postfix/smtpd\[$spid\]: " | grep -E 'lost connection|disconnect from' | sed 's/^.*\]: //')
	say "  receiver: $(paste -sd ';' <<<"$out")"
	# With DATA, "lost connection after DATA" and "data=0/1"; with BDAT
	# chunks, "lost connection after BDAT" and "bdat=N/M". Either way the
	# receiver's queue manager never saw the message.
	if ! grep -qE "^lost connection after (DATA|BDAT) \([0-9]+ bytes\) from " <<<"$out" ||
		! grep -qE '^disconnect from .* (data=0/1|bdat=[0-9]+/[0-9]+) ' <<<"$out" ||
		grep -qE " postfix/qmgr\[[0-9]+\]: $rq: from=<" "$RECV_DIR/maillog"; then
		line=$(grep -E " postfix/qmgr\[[0-9]+\]: $rq: from=<" "$RECV_DIR/maillog" | sed -E 's/^.*(size=[0-9]+).*/\1/')
		bad+=("the orphaned onionmx ended the session with the final dot: the receiver queued $rq (${line:-?}; the message is $size bytes)")
	fi

	# Postfix again: the message is still queued, and is sent once, whole.
	pf_start "$SEND_DIR"
	queue_flush
	line=$(wait_status "$t" "$rcpt" sent 120) || return 1
	say "  after postfix start: $(sed -E 's/.*(relay=)/\1/' <<<"$line")"
	wait_for 20 "the receiver to deliver what it queued of $t" pfstop_recv_delivered "$t" || true
	files=$(mailbox_files bob "$t")
	n=$(grep -c . <<<"$files" || true)
	if ((n != 1)); then
		for file in $files; do
			say "    copy $(basename "$file"): $(stat -c %s "$file") bytes, body sha256 $(body_sha256 "$file" | cut -c1-16)..."
		done
		bad+=("the receiver has $n copies of $t, not exactly one")
	fi
	if ((${#bad[@]})); then
		for i in "${bad[@]}"; do fail "$i"; done
		return 1
	fi
	rqid=$(check_sent "$line" "$t" "$TOR_ONION:26") || return 1
	file=$(mailbox_one bob "$t") || return 1
	mailbox_verbatim "$file" "$f" || return 1
	[[ $(body_sha256 "$file") == "$(body_sha256 "$f")" ]] || fail "the delivered body's sha256 is not the sent one's" || return 1
	say "  one copy ($rqid), body sha256 $(body_sha256 "$file" | cut -c1-16)... as sent"
	(($(status_count "$qid" "$rcpt" sent) == 1)) || fail "$qid logged status=sent $(status_count "$qid" "$rcpt" sent) times" || return 1
	(($(status_count "$qid" "$rcpt" bounced) == 0)) || fail "$qid bounced" || return 1
	! grep -qF "$qid: sender non-delivery notification" "$SEND_DIR/maillog" || fail "a bounce for $qid" || return 1
	(($(mailbox_count alice "$t" "$SEND_DIR") == 0)) || fail "a bounce for $t in alice's mailbox" || return 1
	wait_for 10 "no onionmx deliver, no orphaned onionmx" pfstop_none_left || {
		for i in $(onionmx_procs); do
			say "    left: $i (parent $(proc_ppid "$i")): $(tr '\0' ' ' <"/proc/$i/cmdline" 2>/dev/null)"
		done
		fail "onionmx processes left over"
		return 1
	}
	say "  no bounce; no onionmx deliver left, no orphaned onionmx"
	rm -f "$f"
}

# pfstop_none_left: no onionmx deliver runs, and no onionmx at all (a
# socketmap server too) that lost its parent.
pfstop_none_left() {
	local p
	[[ -z $(onionmx_procs deliver) ]] || return 1
	for p in $(onionmx_procs); do
		[[ $(proc_ppid "$p") != 1 ]] || return 1
	done
}
pfstop_traced() { awk '$1 == "TracerPid:" { exit $2 == 0 }' "/proc/$1/status"; }
# pfstop_recv_client MARK: "SMTPD_PID QID" of the transaction the receiver
# opened since MARK.
pfstop_recv_client() {
	local l
	l=$(recv_since "$1" | sed -nE 's/.* postfix\/smtpd\[([0-9]+)\]: ([0-9A-F]+): client=.*/\1 \2/p' | head -1)
	[[ -n $l ]] && echo "$l"
}
pfstop_recv_ended() { recv_since "$1" | grep -qE "postfix/smtpd\[$2\]: disconnect from "; }
# pfstop_recv_delivered TOKEN: every copy of TOKEN the receiver queued is
# delivered (or gone), and its queue is empty.
pfstop_recv_delivered() {
	local q
	for q in $(recv_queued_qids "$1"); do
		grep -qE " $q: removed\$" "$RECV_DIR/maillog" || return 1
	done
	recv_queue_is_empty
}

# ---------------------------------------------------------------------------
# Unusable onions (issue 9 cases 6 and 7): never a DNS query, never the
# clear net.

# onion_checksum_ok NAME: NAME ("<56>.onion") is version 3 and carries the
# checksum of its key (rend-spec-v3 section 6: the first two bytes of
# SHA3-256(".onion checksum" || key || 0x03)), computed here with base32
# and openssl, independently of onionmx.
onion_checksum_ok() {
	local n=${1%.onion} raw calc
	((${#n} == 56)) || return 1
	raw=$(printf '%s' "${n^^}" | base32 -d 2>/dev/null | od -An -v -tx1 | tr -d ' \n')
	((${#raw} == 70)) && [[ ${raw:68:2} == 03 ]] || return 1
	calc=$({
		printf '.onion checksum'
		# shellcheck disable=SC2059 # the \x escapes are the point
		printf "$(sed 's/../\\x&/g' <<<"${raw:0:64}03")"
	} | openssl dgst -sha3-256 -r | cut -c1-4)
	[[ $calc == "${raw:64:4}" ]]
}

# onion_typo ONION: ONION with two neighbouring characters of its key part
# swapped, as a typist swaps them, at the first place from the sixth
# character on where that breaks the checksum.
onion_typo() {
	local n=${1%.onion} i t
	onion_checksum_ok "$1" || return 1
	for ((i = 5; i < 50; i++)); do
		[[ ${n:i:1} != "${n:i+1:1}" ]] || continue
		t=${n:0:i}${n:i+1:1}${n:i:1}${n:i+2}.onion
		if ! onion_checksum_ok "$t"; then
			echo "$t"
			return 0
		fi
	done
	return 1
}

# only_onionmx QID RCPT: every delivery attempt the sender logged for QID
# and RCPT went to the onionmx transport: no smtp(8), no other relay.
only_onionmx() {
	local l
	l=$(grep -F " $1: to=<$2>," "$SEND_DIR/maillog" | grep -vF " relay=onionmx,") || true
	[[ -z $l ]] || fail "$2 went elsewhere than onionmx: $l" || return 1
	l=$(grep -E " postfix/(smtp|lmtp)\[[0-9]+\]: $1: " "$SEND_DIR/maillog") || true
	[[ -z $l ]] || fail "smtp(8) handled $1: $l" || return 1
}

# Recipients at .onion domains that are no usable v3 address: a v2 name,
# the receiver's onion with a typo (checksum mismatch), and a subdomain of
# each. The lookup server hands each to onionmx ("onionmx:", the domain
# itself), which bounces it at once: relay=onionmx, dsn=5.1.2, "bad
# destination DOMAIN: REASON" in the log and in the DSN. Not one DNS query
# names a .onion, and smtp(8) never sees the mail.
scenario_unusable_onion() {
	local typo dmark i rcpt dom t line qid dsn route
	typo=$(onion_typo "$TOR_ONION") || fail "no typo of $TOR_ONION breaks its checksum" || return 1
	local rcpts=("bob@$DNS_V2_ONION" "bob@$typo" "bob@mail.$DNS_V2_ONION" "bob@smtp.$typo")
	local reasons=('v2 onion address \(retired since Tor 0\.4\.6\)' 'onion address checksum mismatch \(typo\?\)'
		'v2 onion address \(retired since Tor 0\.4\.6\)' 'onion address checksum mismatch \(typo\?\)')
	local toks=()
	dmark=$(dns_mark)
	for rcpt in "${rcpts[@]}"; do
		route=$(transport_route "$rcpt") || fail "transport_maps have no route for $rcpt: $route" || return 1
		[[ $route == "socketmap:"*"[$rcpt] -> onionmx:" ]] || fail "not handed to onionmx by the lookup server: $route" || return 1
		t=$(mail_send alice@send.onionmx.test "$rcpt") || return 1
		toks+=("$t")
	done
	say "  the lookup server answers 'onionmx:' for each of ${rcpts[*]}"
	for i in "${!rcpts[@]}"; do
		rcpt=${rcpts[i]} t=${toks[i]} dom=${rcpts[i]#*@}
		line=$(wait_status "$t" "$rcpt" bounced 60) || return 1
		say "  $(sed -E 's/.*(to=)/\1/' <<<"$line")"
		[[ $line =~ \ relay=onionmx,\ .*\ dsn=5\.1\.2,\ status=bounced\ \(bad\ destination\ $(re_quote "$dom"):\ ${reasons[i]} ]] ||
			fail "not bounced by onionmx with 5.1.2 and the reason /${reasons[i]}/: $line" || return 1
		qid=$(mail_qid "$t")
		only_onionmx "$qid" "$rcpt" || return 1
		! queue_has "$qid" || fail "$qid is still queued" || return 1
		dsn=$(mailbox_one alice "$t" "$SEND_DIR") || fail "no DSN for $t in alice's mailbox" || return 1
		grep -q '^Status: 5\.1\.2' "$dsn" || fail "DSN $dsn without Status: 5.1.2" || return 1
		grep -qF "Final-Recipient: rfc822; $rcpt" "$dsn" || fail "DSN $dsn does not name $rcpt" || return 1
		tr -s '\n\t ' '   ' <"$dsn" | grep -qE "Diagnostic-Code: x-unix; bad destination $(re_quote "$dom"): ${reasons[i]}" ||
			fail "DSN $dsn does not give the reason /bad destination $dom: ${reasons[i]}/" || return 1
	done
	no_dns_since "$dmark" '\.onion( |$)' ".onion names" || return 1
	say "  4 bounces, each with its reason in the DSN; no DNS query for any .onion ($(dns_queries_since "$dmark" | grep -c . || true) queries in all)"
}

# A domain pinned in the static map to the receiver's onion with a typo
# (PF_TYPO_DOMAIN, set up by run.sh): a configuration error. The lookup
# server answers TEMP naming the map's file and line, so trivial-rewrite
# cannot route the mail and Postfix defers it (relay=none, 4.3.0 "address
# resolver failure"; the file:line is in trivial-rewrite's warning): never
# smtp(8), never a DNS query. deliver itself, given the same map, defers
# with 4.3.5 FILE:LINE too.
scenario_static_typo() {
	local rcpt="bob@$PF_TYPO_DOMAIN" typo ln entry dmark smark route rc t line qid out want
	typo=$(onion_typo "$TOR_ONION") || fail "no typo of $TOR_ONION breaks its checksum" || return 1
	ln=$(grep -nE "^$(re_quote "$PF_TYPO_DOMAIN")[[:space:]]" "$PF_STATIC_MAP" | cut -d: -f1)
	[[ -n $ln ]] || fail "$PF_TYPO_DOMAIN is not in $PF_STATIC_MAP" || return 1
	entry=$(sed -n "${ln}p" "$PF_STATIC_MAP")
	[[ $entry == "$PF_TYPO_DOMAIN"$'\t'"onionmx:[$typo]:25" ]] || fail "unexpected map line $ln: $entry" || return 1
	want="$(re_quote "$PF_STATIC_MAP"):$ln: $(re_quote "$PF_TYPO_DOMAIN"): nexthop \[$(re_quote "$typo")\]:25: onion address checksum mismatch"
	say "  $PF_STATIC_MAP:$ln: $entry"
	dmark=$(dns_mark)
	smark=$(log_lines "$SEND_DIR/maillog")
	route=$(transport_route "$rcpt") && rc=0 || rc=$?
	((rc == 2)) && [[ $route == "socketmap:"*"[$rcpt] -> lookup error: "* && $route =~ temporary\ error:\ $want ]] ||
		fail "the lookup server does not answer TEMP naming $PF_STATIC_MAP:$ln (status $rc): $route" || return 1
	say "  $route"
	t=$(mail_send alice@send.onionmx.test "$rcpt") || return 1
	line=$(wait_status "$t" "$rcpt" deferred 60) || return 1
	say "  $(sed -E 's/.*(to=)/\1/' <<<"$line")"
	[[ $line == *" relay=none, "*" dsn=4.3.0, status=deferred (address resolver failure)" ]] ||
		fail "not deferred by the resolver: $line" || return 1
	tail -n +"$((smark + 1))" "$SEND_DIR/maillog" | grep -qE " postfix/trivial-rewrite\[[0-9]+\]: warning: socketmap:[^ ]* socketmap server temporary error: $want" ||
		fail "trivial-rewrite did not log the lookup server's TEMP naming $PF_STATIC_MAP:$ln" || return 1
	qid=$(mail_qid "$t")
	queue_has "$qid" || fail "$qid is no longer queued" || return 1
	line=$(grep -F " $qid: to=<$rcpt>," "$SEND_DIR/maillog" | grep -vF " relay=none,") || true
	[[ -z $line ]] || fail "$qid went to a transport: $line" || return 1
	(($(mailbox_count bob "$t") == 0)) || fail "$t reached the receiver" || return 1
	(($(mailbox_count alice "$t" "$SEND_DIR") == 0)) || fail "a bounce for $t" || return 1
	# deliver, given the map (--map) and the domain, says the same.
	out=$("$WORK/onionmx" deliver --socks "127.0.0.1:$TOR_SOCKS_PORT" --dns "127.0.0.1:$DNS_PORT" \
		--map "$PF_STATIC_MAP" -f alice@send.onionmx.test -- "$rcpt" <"$WORK/msgs/$t.eml" 2>&1) && rc=0 || rc=$?
	say "  onionmx deliver --map $PF_STATIC_MAP -- $rcpt: exit $rc: $out"
	[[ ($rc == 75 || $rc == 78) && $out =~ ^4\.3\.5\ $want ]] ||
		fail "deliver does not defer with 4.3.5 naming $PF_STATIC_MAP:$ln" || return 1
	no_dns_since "$dmark" "$(re_quote "$PF_TYPO_DOMAIN")|\\.onion( |\$)" "$PF_TYPO_DOMAIN or a .onion" || return 1
	queue_delete "$qid"
	say "  deferred, never sent; no DNS query ($(dns_queries_since "$dmark" | grep -c . || true) in all); $qid removed"
}

# ---------------------------------------------------------------------------
# onionmx check against the real receiver, through the private Tor network
# (issue 5). The receiver's onion has two ports: 25, the safe smtpd
# (mynetworks empty, reject_unauth_destination), and 2525, a deliberately
# open one (mynetworks=127.0.0.0/8, permit_mynetworks: Tor connects from
# 127.0.0.1). The check must never send mail: every scenario asserts from
# the receiver's maillog how far each session went, and that the
# receiver's queue and Maildirs are untouched.

# The performance data of one target: 'LABEL'=VALUE;20;40;0;50 (the
# default --warn, --crit and --timeout), VALUE a time in seconds or U.
perf_re() { # LABEL VALUE-REGEX
	printf "'%s'=%s;20;40;0;50" "$(re_quote "$1")" "$2"
}
PERF_TIME='[0-9]+\.[0-9]{3}s'
GREETING='greeting: 220 recv\.onionmx\.test ESMTP onionmx-e2e'

# Every target answers: the onion by name and the domain by its SRV record.
# EHLO and QUIT, nothing else.
scenario_check_ok() {
	local onion=$TOR_ONION mark maildirs lines l o
	o=$(re_quote "$onion")
	maildirs=$(recv_maildirs)
	mark=$(recv_mark)
	run_check --dns "127.0.0.1:$DNS_PORT" "$onion" recv.onionmx.test
	check_rc 0 || return 1
	check_lines 3 || return 1
	check_line 1 "^ONIONMX OK - 2 of 2 targets answered EHLO \(slowest $PERF_TIME\) \| $(perf_re "$onion" "$PERF_TIME") $(perf_re recv.onionmx.test "$PERF_TIME")\$" || return 1
	check_line 2 "^$o: OK - EHLO answered in $PERF_TIME \(connect $PERF_TIME\); $GREETING\$" || return 1
	check_line 3 "^recv\.onionmx\.test: OK - EHLO answered in $PERF_TIME \(connect $PERF_TIME\); $GREETING; target \[$o\]:25 from DNS SRV _onion-mx\._tcp\.recv\.onionmx\.test\.\$" || return 1
	lines=$(recv_sessions "$mark" 2) || return 1
	while read -r l; do
		[[ $l =~ \ disconnect\ from\ [^\ ]*\[127\.0\.0\.1\]\ ehlo=1\ quit=1\ commands=2$ ]] ||
			fail "a session that did more than EHLO and QUIT: $l" || return 1
	done <<<"$lines"
	say "  receiver: 2 sessions, each: ${lines##*\]: }"
	recv_nothing_kept "$maildirs" "$mark" || return 1
}

# One target answers, the other is an onion nobody serves (no descriptor):
# WARNING, and the dead one's line has Tor's SOCKS error.
scenario_check_partial() {
	local onion=$TOR_ONION dead=$DNS_DEAD_ONION mark maildirs lines
	maildirs=$(recv_maildirs)
	mark=$(recv_mark)
	run_check "$onion" "$dead"
	check_rc 1 || return 1
	check_lines 3 || return 1
	check_line 1 "^ONIONMX WARNING - 1 of 2 targets answered EHLO \(slowest $PERF_TIME\); failed: $(re_quote "$dead") \| $(perf_re "$onion" "$PERF_TIME") $(perf_re "$dead" U)\$" || return 1
	check_line 2 "^$(re_quote "$onion"): OK - EHLO answered in $PERF_TIME \(connect $PERF_TIME\); $GREETING\$" || return 1
	check_line 3 "^$(re_quote "$dead"): FAILED - connect to $(re_quote "$dead"):25 via Tor: .* \(SOCKS reply F[027]\)\$" || return 1
	lines=$(recv_sessions "$mark" 1) || return 1
	[[ $lines =~ \ ehlo=1\ quit=1\ commands=2$ ]] || fail "a session that did more than EHLO and QUIT: $lines" || return 1
	recv_nothing_kept "$maildirs" "$mark" || return 1
}

# The Tor client is stopped (by its pid): CRITICAL, the SocksPort is
# unreachable, no target tried (no connection, no DNS query). Started
# again: the same check is OK.
scenario_check_tor_down() {
	local onion=$TOR_ONION mark dmark rc=0 args
	args=(--dns "127.0.0.1:$DNS_PORT" "$onion" recv.onionmx.test)
	tornet_client_stop || fail "could not stop the Tor client" || return 1
	mark=$(recv_mark)
	dmark=$(dns_mark)
	run_check "${args[@]}"
	check_tor_down_assert "$onion" "$mark" "$dmark" || rc=1
	tornet_client_start || fail "the Tor client did not come back" || return 1
	((rc == 0)) || return 1
	run_check "${args[@]}"
	check_rc 0 || return 1
	check_line 1 "^ONIONMX OK - 2 of 2 targets answered EHLO " || return 1
}

check_tor_down_assert() {
	local onion=$1 mark=$2 dmark=$3 q
	check_rc 2 || return 1
	check_lines 3 || return 1
	check_line 1 "^ONIONMX CRITICAL - Tor SocksPort 127\.0\.0\.1:$TOR_SOCKS_PORT is unreachable: connect: connection refused; no target tried \| $(perf_re "$onion" U) $(perf_re recv.onionmx.test U)\$" || return 1
	check_line 2 "^$(re_quote "$onion"): NOT CHECKED - the SocksPort does not work\$" || return 1
	check_line 3 "^recv\.onionmx\.test: NOT CHECKED - the SocksPort does not work\$" || return 1
	awk -v t="$CHECK_TIME" 'BEGIN { exit !(t < 5) }' || fail "the check took ${CHECK_TIME}s to find the SocksPort closed" || return 1
	sleep 1
	[[ -z $(recv_disconnects "$mark") ]] || fail "the receiver had a session while Tor was down" || return 1
	q=$(dns_queries_since "$dmark")
	[[ -z $q ]] || fail "DNS queries although no target was tried: $q" || return 1
}

# The relay test against the safe smtpd (the onion's port 25): MAIL FROM
# and RCPT TO the foreign probe address, 554 5.7.1 Relay access denied,
# RSET, QUIT: OK.
scenario_relay_safe() {
	local onion=$TOR_ONION o mark maildirs lines probe='probe@onionmx-relay-test\.invalid'
	o=$(re_quote "$onion")
	maildirs=$(recv_maildirs)
	mark=$(recv_mark)
	run_check --relay-test --helo check.onionmx.test "$onion"
	check_rc 0 || return 1
	check_lines 2 || return 1
	check_line 1 "^ONIONMX OK - 1 of 1 targets answered EHLO \(slowest $PERF_TIME\); none relays to a foreign domain \| $(perf_re "$onion" "$PERF_TIME")\$" || return 1
	check_line 2 "^$o: OK - EHLO answered in $PERF_TIME \(connect $PERF_TIME\); $GREETING; relay test passed: RCPT TO:<$probe> rejected: 554 5\.7\.1 <$probe>: Relay access denied\$" || return 1
	lines=$(recv_sessions "$mark" 1) || return 1
	[[ $lines =~ \ disconnect\ from\ [^\ ]*\[127\.0\.0\.1\]\ ehlo=1\ mail=1\ rcpt=0/1\ rset=1\ quit=1\ commands=4/5$ ]] ||
		fail "not EHLO, MAIL, a rejected RCPT, RSET, QUIT: $lines" || return 1
	recv_since "$mark" | grep -qE "NOQUEUE: reject: RCPT from [^ ]*\[127\.0\.0\.1\]: 554 5\.7\.1 <$probe>: Relay access denied; from=<$probe> to=<$probe> proto=ESMTP helo=<check\.onionmx\.test>" ||
		fail "the receiver did not log the 554 5.7.1 reject of the probe" || return 1
	say "  receiver: rejected the probe (554 5.7.1 Relay access denied); ${lines##*\]: }"
	recv_nothing_kept "$maildirs" "$mark" || return 1
}

# The relay test against the deliberately open smtpd (the onion's port
# 2525): RCPT TO the foreign address accepted: CRITICAL, OPEN RELAY, and
# still RSET and QUIT, never DATA: nothing is queued. Then both ports in one
# check: CRITICAL, naming only :2525.
scenario_relay_open() {
	local onion=$TOR_ONION o open mark maildirs lines qid named probe='probe@onionmx-relay-test\.invalid'
	o=$(re_quote "$onion")
	open="[$onion]:2525"
	maildirs=$(recv_maildirs)
	mark=$(recv_mark)
	run_check --relay-test --helo check.onionmx.test "$open"
	check_rc 2 || return 1
	check_lines 2 || return 1
	check_line 1 "^ONIONMX CRITICAL - OPEN RELAY: \[$o\]:2525 accepted RCPT TO:<$probe>, a foreign domain, from anyone on the Tor network; 1 of 1 targets answered EHLO \(slowest $PERF_TIME\) \| $(perf_re "$open" "$PERF_TIME")\$" || return 1
	check_line 2 "^\[$o\]:2525: OPEN RELAY - EHLO answered in $PERF_TIME \(connect $PERF_TIME\); $GREETING; relay test failed: RCPT TO:<$probe> accepted: 250 2\.1\.5 Ok\$" || return 1
	lines=$(recv_sessions "$mark" 1) || return 1
	[[ $lines =~ \ disconnect\ from\ [^\ ]*\[127\.0\.0\.1\]\ ehlo=1\ mail=1\ rcpt=1\ rset=1\ quit=1\ commands=5$ ]] ||
		fail "not EHLO, MAIL, an accepted RCPT, RSET, QUIT: $lines" || return 1
	# smtpd opens a queue file at the first accepted RCPT (it logs
	# "QID: client=..."); RSET throws it away: the queue id must appear
	# nowhere else (no cleanup, no qmgr), and the queue must be empty.
	qid=$(recv_since "$mark" | sed -nE 's/.* postfix\/smtpd\[[0-9]+\]: ([0-9A-F]+): client=.*/\1/p' | head -1)
	if [[ -n $qid ]]; then
		(($(recv_since "$mark" | grep -cF " $qid: ") == 1)) ||
			fail "the transaction $qid went further: $(recv_since "$mark" | grep -F " $qid: " | tr '\n' ' ')" || return 1
		say "  receiver: accepted the probe (transaction $qid, then RSET: never queued); ${lines##*\]: }"
	fi
	recv_nothing_kept "$maildirs" "$mark" || return 1

	# Both at once: the safe port passes, the open one is named, alone.
	mark=$(recv_mark)
	run_check --relay-test --helo check.onionmx.test "$onion" "$open"
	check_rc 2 || return 1
	check_lines 3 || return 1
	check_line 1 "^ONIONMX CRITICAL - OPEN RELAY: (.*) accepted RCPT TO:<$probe>, a foreign domain, from anyone on the Tor network; 2 of 2 targets answered EHLO \(slowest $PERF_TIME\) \| $(perf_re "$onion" "$PERF_TIME") $(perf_re "$open" "$PERF_TIME")\$" || return 1
	named=$(sed -nE '1s/^ONIONMX CRITICAL - OPEN RELAY: (.*) accepted RCPT TO:.*/\1/p' <<<"$CHECK_OUT")
	[[ $named == "$open" ]] || fail "the status line names '$named' as open relays, not only $open" || return 1
	check_line 2 "^$o: OK - .*; relay test passed: RCPT TO:<$probe> rejected: 554 5\.7\.1 " || return 1
	check_line 3 "^\[$o\]:2525: OPEN RELAY - .*; relay test failed: RCPT TO:<$probe> accepted: 250 " || return 1
	lines=$(recv_sessions "$mark" 2) || return 1
	! grep -q 'data=' <<<"$lines" || fail "a session with DATA: $lines" || return 1
	recv_nothing_kept "$maildirs" "$mark" || return 1
}

# The relay test against an open smtpd that refuses the default probe
# sender at RCPT (the onion's port 2526: 550 5.1.8 Sender address
# rejected: Domain not found, as reject_unknown_sender_domain with
# unknown_address_reject_code = 550 answers): that refusal is no refusal
# to relay, so the test is inconclusive: WARNING (issue 9 case 11). With
# --probe-sender '<>', which it accepts: OPEN RELAY, CRITICAL.
scenario_relay_picky() {
	local onion=$TOR_ONION o picky mark maildirs lines probe='probe@onionmx-relay-test\.invalid'
	o=$(re_quote "$onion")
	picky="[$onion]:2526"
	maildirs=$(recv_maildirs)
	mark=$(recv_mark)
	run_check --relay-test --helo check.onionmx.test "$picky"
	check_rc 1 || return 1
	check_lines 2 || return 1
	check_line 1 "^ONIONMX WARNING - 1 of 1 targets answered EHLO \(slowest $PERF_TIME\); relay test inconclusive: \[$o\]:2526 \| $(perf_re "$picky" "$PERF_TIME")\$" || return 1
	check_line 2 "^\[$o\]:2526: (OK|WARNING) - EHLO answered in $PERF_TIME \(connect $PERF_TIME\); $GREETING; relay test inconclusive: RCPT TO:<$probe> refused, but not as relaying: 550 5\.1\.8 <$probe>: Sender address rejected: Domain not found \(.*--probe-sender.*\)\$" || return 1
	lines=$(recv_sessions "$mark" 1) || return 1
	[[ $lines =~ \ disconnect\ from\ [^\ ]*\[127\.0\.0\.1\]\ ehlo=1\ mail=1\ rcpt=0/1\ rset=1\ quit=1\ commands=4/5$ ]] ||
		fail "not EHLO, MAIL, a refused RCPT, RSET, QUIT: $lines" || return 1
	recv_since "$mark" | grep -qE "NOQUEUE: reject: RCPT from [^ ]*\[127\.0\.0\.1\]: 550 5\.1\.8 <$probe>: Sender address rejected: Domain not found; from=<$probe> to=<$probe> proto=ESMTP helo=<check\.onionmx\.test>" ||
		fail "the receiver did not log the 550 5.1.8 reject of the probe's sender" || return 1
	recv_nothing_kept "$maildirs" "$mark" || return 1
	say "  receiver: refused the probe's sender (550 5.1.8), so nothing was learnt about relaying: WARNING"

	mark=$(recv_mark)
	run_check --relay-test --probe-sender '<>' --helo check.onionmx.test "$picky"
	check_rc 2 || return 1
	check_lines 2 || return 1
	check_line 1 "^ONIONMX CRITICAL - OPEN RELAY: \[$o\]:2526 accepted RCPT TO:<$probe>, a foreign domain, from anyone on the Tor network; 1 of 1 targets answered EHLO \(slowest $PERF_TIME\) \| $(perf_re "$picky" "$PERF_TIME")\$" || return 1
	check_line 2 "^\[$o\]:2526: OPEN RELAY - EHLO answered in $PERF_TIME \(connect $PERF_TIME\); $GREETING; relay test failed: RCPT TO:<$probe> accepted: 250 2\.1\.5 Ok\$" || return 1
	lines=$(recv_sessions "$mark" 1) || return 1
	[[ $lines =~ \ disconnect\ from\ [^\ ]*\[127\.0\.0\.1\]\ ehlo=1\ mail=1\ rcpt=1\ rset=1\ quit=1\ commands=5$ ]] ||
		fail "not EHLO, MAIL, an accepted RCPT, RSET, QUIT: $lines" || return 1
	recv_nothing_kept "$maildirs" "$mark" || return 1
	say "  with the null sender: accepted, OPEN RELAY; never DATA, nothing queued"
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
	queue_has "$qid" || fail "$qid is no longer queued" || return 1
	queue_delete "$qid"
}
