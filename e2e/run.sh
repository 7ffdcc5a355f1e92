#!/usr/bin/env bash
# e2e/run.sh: end-to-end test of onionmx on one machine, as root, with no
# internet: a private Tor network on loopback, a receiving Postfix behind an
# onion service, a sending Postfix that uses onionmx, and dnsmasq publishing
# the _onion-mx._tcp SRV records.
#
# Usage:
#   e2e/run.sh                    install, build, bring up, check, run all
#                                 scenarios, tear down (what CI runs)
#   e2e/run.sh SCENARIO...        the same, with only these scenarios
#   e2e/run.sh --infra            bring up, check the infrastructure, tear down
#   e2e/run.sh --up               bring up, check, and leave it all running;
#                                 prints the ports and paths and writes
#                                 $WORK/env.sh (source it in a shell)
#   e2e/run.sh --scenarios WORK [SCENARIO...]
#                                 run scenarios against a --up environment
#   e2e/run.sh --down WORK        stop everything a --up started
#   e2e/run.sh --list             list the scenarios
#
# Environment:
#   ONIONMX_BIN=PATH              use this binary instead of `go build`
#                                 (e2e/testdata/fake-onionmx tests the harness
#                                 itself and runs the self-test scenarios)
#   ONIONMX_MASTER_EXAMPLE=FILE   master.cf fragment (default: the repository's
#                                 postfix-master.cf.example)
#   ONIONMX_MAIN_EXAMPLE=FILE     main.cf lines (default: the repository's
#                                 postfix-main.cf.example, else the "# main.cf"
#                                 comment block of the master.cf fragment)
#   E2E_WORK=DIR                  work directory (default: mktemp -d)
#   E2E_KEEP=1                    keep the work directory after a run
#   E2E_SKIP_INSTALL=1            do not check/install Debian packages
set -euo pipefail

# Go from the machine's own installation when it is not on PATH (as .ci/run).
command -v go >/dev/null 2>&1 || PATH=/usr/local/go/bin:$PATH

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$E2E_DIR/.." && pwd)
# shellcheck source=./lib.sh
. "$E2E_DIR/lib.sh"
# shellcheck source=./tornet.sh
. "$E2E_DIR/tornet.sh"
# shellcheck source=./postfix.sh
. "$E2E_DIR/postfix.sh"
# shellcheck source=./dns.sh
. "$E2E_DIR/dns.sh"
# shellcheck source=./scenarios.sh
. "$E2E_DIR/scenarios.sh"
# shellcheck source=./exim.sh
. "$E2E_DIR/exim.sh"
# shellcheck source=./setup_postfix.sh
. "$E2E_DIR/setup_postfix.sh"

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	exit "${1:-0}"
}

# ---------------------------------------------------------------------------
# Bring-up

build_onionmx() {
	if [[ -n ${ONIONMX_BIN:-} ]]; then
		[[ -x $ONIONMX_BIN ]] || die "ONIONMX_BIN=$ONIONMX_BIN is not executable"
		cp "$ONIONMX_BIN" "$WORK/onionmx"
		say "using ONIONMX_BIN=$ONIONMX_BIN"
	else
		say "building onionmx"
		# Static, as the README says to build it.
		(cd "$REPO" && CGO_ENABLED=0 go build -trimpath -tags urfave_cli_no_docs -o "$WORK/onionmx" .) || die "go build failed"
	fi
	# The pipe and spawn services run it as nobody.
	chmod 755 "$WORK/onionmx"
}

# The configuration the other half of the project ships. Both files are used
# as they are, but for the rewrite in pf_rewrite_example.
# The main.cf lines: ONIONMX_MAIN_EXAMPLE, else the repository's
# postfix-main.cf.example, else the "# main.cf" comment block of the
# master.cf fragment (pf_main_from_comments).
find_examples() {
	MASTER_EXAMPLE=${ONIONMX_MASTER_EXAMPLE:-$REPO/postfix-master.cf.example}
	[[ -f $MASTER_EXAMPLE ]] || die "no master.cf fragment at $MASTER_EXAMPLE (set ONIONMX_MASTER_EXAMPLE)"
	MAIN_EXAMPLE=${ONIONMX_MAIN_EXAMPLE:-$REPO/postfix-main.cf.example}
	MAIN_SRC=$MAIN_EXAMPLE
	if [[ -z ${ONIONMX_MAIN_EXAMPLE:-} && ! -f $MAIN_EXAMPLE ]]; then
		MAIN_EXAMPLE=$WORK/main.cf.from-comments
		MAIN_SRC="the '# main.cf' comment block of $MASTER_EXAMPLE"
		pf_main_from_comments "$MASTER_EXAMPLE" >"$MAIN_EXAMPLE" ||
			die "cannot read the main.cf lines from $MASTER_EXAMPLE (see above)"
		[[ -s $MAIN_EXAMPLE ]] || die "no main.cf lines: no postfix-main.cf.example, no '# main.cf' block in $MASTER_EXAMPLE (set ONIONMX_MAIN_EXAMPLE)"
		say "main.cf lines from $MAIN_SRC:"
		sed 's/^/    | /' "$MAIN_EXAMPLE" >&2
	fi
	[[ -f $MAIN_EXAMPLE ]] || die "no main.cf lines at $MAIN_EXAMPLE"
}

# postfix_configure: both instances' configuration (needs the ports and
# $WORK/onionmx); dies when postconf warns about the sender's. Fast: run
# before Tor starts, so that a broken example fails at once.
postfix_configure() {
	local maps=()
	SEND_DIR=$WORK/send RECV_DIR=$WORK/recv
	pf_rewrite_example "$MAIN_EXAMPLE" "$WORK/main.cf.example" "$WORK/onionmx" \
		"127.0.0.1:$TOR_SOCKS_PORT" "127.0.0.1:$DNS_PORT" "$SEND_DIR/etc"
	# The lookup server gets the static maps the main.cf lines name.
	read -r -a maps <<<"$(sed -nE 's/^transport_maps[[:space:]]*=//p' "$WORK/main.cf.example" |
		grep -oE '(hash|lmdb|cdb|btree):/[^ ,]+' | sed 's/^[a-z]*://' | tr '\n' ' ')"
	pf_rewrite_example "$MASTER_EXAMPLE" "$WORK/master.cf.example" "$WORK/onionmx" \
		"127.0.0.1:$TOR_SOCKS_PORT" "127.0.0.1:$DNS_PORT" "$SEND_DIR/etc" "${maps[@]}"
	pf_setup_sender "$WORK/master.cf.example" "$WORK/main.cf.example"
	say "sending postfix configured; postconf has no warnings; onionmx lines in its master.cf:"
	# Each master.cf entry that runs onionmx, with its continuation lines.
	awk '
		/^[ \t]*#/ || /^[ \t]*$/ { next }
		/^[^ \t]/ { if (e ~ /argv=[^ \t]*onionmx/) printf "%s", e; e = "" }
		{ e = e "    | " $0 "\n" }
		END { if (e ~ /argv=[^ \t]*onionmx/) printf "%s", e }
	' "$SEND_DIR/etc/master.cf" >&2
	pf_setup_receiver
}

# postfix_start_both: both instances (in the background, while Tor votes).
postfix_start_both() {
	pf_start "$SEND_DIR"
	say "sending postfix up ($SEND_DIR)"
	pf_start "$RECV_DIR"
	wait_for 20 "receiver smtpd on $RECV_SMTP_PORT" smtp_listening "$RECV_SMTP_PORT" ||
		die "receiving postfix does not listen on $RECV_SMTP_PORT"
	wait_for 20 "receiver's open smtpd on $RECV_OPEN_PORT" smtp_listening "$RECV_OPEN_PORT" ||
		die "receiving postfix does not listen on $RECV_OPEN_PORT"
	wait_for 20 "receiver's picky open smtpd on $RECV_PICKY_PORT" smtp_listening "$RECV_PICKY_PORT" ||
		die "receiving postfix does not listen on $RECV_PICKY_PORT"
	say "receiving postfix up on 127.0.0.1:$RECV_SMTP_PORT, deliberately open relays on 127.0.0.1:$RECV_OPEN_PORT and (refusing the probe's sender) $RECV_PICKY_PORT ($RECV_DIR)"
}

up() {
	WORK=${E2E_WORK:-$(mktemp -d /tmp/onionmx-e2e.XXXXXX)}
	mkdir -p "$WORK"
	# mktemp makes it 0700; the pipe/spawn services (user=nobody) and the
	# virtual delivery agent must get through it.
	chmod 755 "$WORK"
	: >"$WORK/pids"
	: >"$WORK/report"
	say "work directory $WORK"

	find_examples
	[[ ${E2E_SKIP_INSTALL:-} == 1 ]] || ensure_packages
	build_onionmx

	local ports t_up0 typo
	t_up0=$(date +%s.%N)
	read -r -a ports <<<"$(alloc_ports $((2 * TOR_NAUTH + TOR_NRELAY + 7)))"
	RECV_PICKY_PORT=${ports[-5]}
	RECV_RELAY_PORT=${ports[-4]}
	RECV_OPEN_PORT=${ports[-3]}
	RECV_SMTP_PORT=${ports[-2]}
	DNS_PORT=${ports[-1]}
	tornet_init "${ports[@]:0:$((2 * TOR_NAUTH + TOR_NRELAY + 2))}"
	run_hook tor_init
	postfix_configure
	tornet_start_core

	# Neither Postfix needs anything from Tor but the onion name, which the
	# receiver gets by a reload later: start them while the authorities
	# vote, in the background so that the consensus is seen when it comes.
	postfix_start_both &
	PF_JOB=$!
	tornet_wait_consensus
	tornet_start_edge
	run_hook tor_edge
	wait "$PF_JOB" || die "the Postfix instances did not come up"
	PF_JOB=
	pf_receiver_add_domain "$TOR_ONION"
	typo=$(onion_typo "$TOR_ONION") || die "no typo of $TOR_ONION that breaks its checksum"
	pf_sender_pin "$PF_PINNED_DOMAIN" "[$TOR_ONION]:25" "$PF_RELAYED_DOMAIN" "[$TOR_ONION]:26" \
		"$PF_TYPO_DOMAIN" "[$typo]:25"
	say "static map $PF_STATIC_MAP: $PF_PINNED_DOMAIN onionmx:[$TOR_ONION]:25, $PF_RELAYED_DOMAIN onionmx:[$TOR_ONION]:26, and (a typo) $PF_TYPO_DOMAIN onionmx:[$typo]:25"
	dns_start
	say "dnsmasq up on 127.0.0.1:$DNS_PORT"
	exim_up
	tornet_wait_ready
	write_env
	report_set tor_consensus "$TOR_T_CONSENSUS"
	report_set tor_descriptor "$TOR_T_DESC"
	report_set tor_ready "$TOR_T_READY"
	report_set bringup "$(elapsed_since "$t_up0")"
	say "TIMING tor network: consensus ${TOR_T_CONSENSUS}s, descriptor ${TOR_T_DESC}s, first onion connection ${TOR_T_READY}s (from the authorities' start); bring-up $(report_get bringup)s (from port allocation; $(elapsed_since "$E2E_T0")s with install and build)"
}

# run_hook NAME: calls hook_NAME if a script that sources this one (soak.sh)
# defines it: tor_init after the torrc files are written (more onion
# services), tor_edge once the onion services run (their names, before
# dnsmasq starts), down once everything is stopped at the exit.
run_hook() {
	if declare -F "hook_$1" >/dev/null; then "hook_$1"; fi
}

write_env() {
	cat >"$WORK/env.sh" <<-EOF
		# Written by e2e/run.sh --up; source it to use the helpers below, e.g.
		#   . $WORK/env.sh; t=\$(mail_send alice@send.onionmx.test bob@recv.onionmx.test)
		export WORK=$WORK
		export SEND_DIR=$SEND_DIR RECV_DIR=$RECV_DIR
		export TOR_DIR=$TOR_DIR TOR_ONION=$TOR_ONION
		export TOR_SOCKS_PORT=$TOR_SOCKS_PORT TOR_CONTROL_PORT=$TOR_CONTROL_PORT
		export RECV_SMTP_PORT=$RECV_SMTP_PORT RECV_OPEN_PORT=$RECV_OPEN_PORT DNS_PORT=$DNS_PORT
		export RECV_RELAY_PORT=$RECV_RELAY_PORT RECV_PICKY_PORT=$RECV_PICKY_PORT
		export ONIONMX=$WORK/onionmx PF_STATIC_MAP=$PF_STATIC_MAP
		E2E_DIR=$E2E_DIR
		. $E2E_DIR/lib.sh; . $E2E_DIR/tornet.sh; . $E2E_DIR/postfix.sh; . $E2E_DIR/dns.sh; . $E2E_DIR/scenarios.sh; . $E2E_DIR/setup_postfix.sh
		. $E2E_DIR/exim.sh; exim_paths
	EOF
}

print_env() {
	cat <<-EOF
		onionmx e2e environment is up. Work directory: $WORK
		  onion service        $TOR_ONION  (port 25 -> 127.0.0.1:$RECV_SMTP_PORT,
		                       port 2525 -> 127.0.0.1:$RECV_OPEN_PORT, the deliberately open relay,
		                       port 2526 -> 127.0.0.1:$RECV_PICKY_PORT, open but refusing the probe's sender,
		                       port 26 -> 127.0.0.1:$RECV_RELAY_PORT, postfix_stop's pausing relay to port 25, when it runs)
		  Tor SocksPort        127.0.0.1:$TOR_SOCKS_PORT (ExtendedErrors)
		  Tor ControlPort      127.0.0.1:$TOR_CONTROL_PORT (cookie $TOR_DIR/client/control_auth_cookie)
		  dnsmasq              127.0.0.1:$DNS_PORT  (log $WORK/dns/dnsmasq.log)
		  receiving Postfix    MAIL_CONFIG=$RECV_DIR/etc  smtpd 127.0.0.1:$RECV_SMTP_PORT (open: $RECV_OPEN_PORT)  log $RECV_DIR/maillog
		                       mailboxes $RECV_DIR/mail/{bob,postmaster}/ (Maildir)
		  sending Postfix      MAIL_CONFIG=$SEND_DIR/etc log $SEND_DIR/maillog
		                       bounces to alice@send.onionmx.test: $SEND_DIR/mail/alice/
		  onionmx binary       $WORK/onionmx
		  Tor logs             $TOR_DIR/*/notice.log, $TOR_DIR/{hs,client}/info.log
		Try:
		  . $WORK/env.sh
		  printf 'Subject: hi\n\nhello\n' | sendmail -C \$SEND_DIR/etc -f alice@send.onionmx.test bob@recv.onionmx.test
		  $E2E_DIR/socks5probe.sh 127.0.0.1:$TOR_SOCKS_PORT $TOR_ONION 25
		  $WORK/onionmx check --socks 127.0.0.1:$TOR_SOCKS_PORT --dns 127.0.0.1:$DNS_PORT --relay-test $TOR_ONION '[$TOR_ONION]:2525'
		  $0 --scenarios $WORK            # all scenarios
		  $0 --down $WORK                 # stop everything
	EOF
}

# ---------------------------------------------------------------------------
# Tear-down: every process recorded in $WORK/pids, by pid, nothing else.

down() {
	[[ -n ${WORK:-} && -f $WORK/pids ]] || return 0
	# A Postfix still being started in the background would register its
	# master after we read the list: let it finish first.
	[[ -z ${PF_JOB:-} ]] || wait "$PF_JOB" 2>/dev/null || true
	local name pf others=()
	# Postfix first, by its own stop command; the rest all at once. fd 9:
	# nothing in the loop may eat the list from stdin (script(1) would).
	while read -r name pf <&9; do
		case $name in
		postfix-*) pf_stop "${pf%/queue/pid/master.pid}" ;;
		*) others+=("$name" "$pf") ;;
		esac
	done 9<"$WORK/pids"
	((${#others[@]} == 0)) || stop_pidfiles "${others[@]}"
}

# The logs worth reading when something fails.
log_files() {
	local f
	for f in "$WORK"/tor/*/notice.log "$WORK"/tor/hs/info.log "$WORK"/tor/client/info.log \
		"$WORK"/send/maillog "$WORK"/recv/maillog "$WORK"/dns/dnsmasq.log; do
		[[ -s $f ]] && echo "$f"
	done
	return 0
}

show_logs() {
	[[ -n ${WORK:-} && -d $WORK ]] || return 0
	local f
	for f in $(log_files); do
		echo "----- tail $f" >&2
		grep -vE '\[(debug)\]' "$f" | tail -n 15 >&2
	done
}

# logs_mark: "FILE LINES" for each log, to show what a scenario logged.
logs_mark() {
	local f
	for f in "$WORK"/send/maillog "$WORK"/recv/maillog "$WORK"/dns/dnsmasq.log \
		"$WORK"/tor/client/notice.log "$WORK"/tor/hs/notice.log "$WORK"/exim/log/mainlog; do
		echo "$f $(log_lines "$f")"
	done
}

# logs_since MARKS: the last 30 lines each log got since logs_mark.
logs_since() {
	local f n
	while read -r f n; do
		[[ -f $f ]] || continue
		echo "----- $f, since the scenario started (last 30 lines)" >&2
		tail -n +"$((n + 1))" "$f" | tail -n 30 | cut -c1-400 >&2
	done <<<"$1"
}

on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	if ((rc != 0)) && [[ ${SCENARIOS_RAN:-} != 1 ]]; then
		show_logs
		say "failed (exit $rc)"
	fi
	say "stopping everything this run started"
	down
	run_hook down
	local sum=""
	[[ ${mode:-} == infra ]] || sum=$(summary)
	if [[ -n ${WORK:-} && ${E2E_KEEP:-} != 1 && $rc == 0 ]]; then
		rm -rf "$WORK"
	elif [[ -n ${WORK:-} ]]; then
		say "work directory kept: $WORK"
	fi
	[[ -z $sum ]] || echo "$sum"
	exit "$rc"
}

# ---------------------------------------------------------------------------
# Scenarios

# run_scenarios NAME...: each in a subshell; between them, the queue must be
# empty (a scenario that leaves mail behind fails, and the mail is removed so
# that the next one starts clean). Results go to RESULTS for the summary.
RESULTS=()
run_scenarios() {
	local names=("$@") n t0 marks ok dt
	if ((${#names[@]} == 0)); then
		if [[ $(basename "${ONIONMX_BIN:-}") == fake-onionmx ]]; then
			names=("${SELFTEST_SCENARIOS[@]}")
		else
			names=("${SCENARIOS[@]}")
		fi
	fi
	for n in "${names[@]}"; do
		declare -F "scenario_$n" >/dev/null || die "no scenario $n (try --list)"
	done
	SCENARIOS_RAN=1
	for n in "${names[@]}"; do
		t0=$(date +%s.%N)
		marks=$(logs_mark)
		say "scenario $n: ${SCENARIO_DESC[$n]:-}"
		ok=1
		("scenario_$n") || ok=0
		if ! queue_wait_empty 15 2>/dev/null; then
			say "  FAIL: $n left mail in the queue: $(queue_ids | tr '\n' ' '); removing it"
			postqueue -c "$SEND_DIR/etc" -p >&2 || true
			queue_delete ALL
			ok=0
		fi
		dt=$(elapsed_since "$t0")
		if ((ok)); then
			say "  ok $n (${dt}s)"
			RESULTS+=("$n ok $dt")
		else
			say "  FAILED $n (${dt}s); what the logs got meanwhile:"
			logs_since "$marks"
			RESULTS+=("$n FAILED $dt")
		fi
	done
	PLANNED=${#names[@]}
}

# summary: bring-up, each scenario, the burst, the total; the last line is
# "e2e: N passed, N failed" (scenarios that never ran count as failed).
summary() {
	local r n res dt passed=0 failed=0 v
	[[ -n ${WORK:-} ]] || return 0
	echo "===== e2e summary"
	if v=$(report_get bringup); then
		printf '  %-16s %6ss  (Tor: consensus %ss, descriptor %ss, first onion connection %ss after the authorities started)\n' \
			bring-up "$v" "$(report_get tor_consensus)" "$(report_get tor_descriptor)" "$(report_get tor_ready)"
	else
		printf '  %-16s FAILED\n' bring-up
	fi
	for r in "${RESULTS[@]}"; do
		read -r n res dt <<<"$r"
		printf '  %-16s %6ss  %-6s  %s\n' "$n" "$dt" "$res" "${SCENARIO_DESC[$n]:-}"
		if [[ $res == ok ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
	done
	if v=$(report_get burst_wall); then
		printf '  %-16s %6ss  from the first of 50 submissions to the empty queue (submitting took %ss)\n' \
			"burst wall time" "$v" "$(report_get burst_submit)"
	fi
	v=$(grep -c ' warning: ' "$WORK/send/maillog" 2>/dev/null) || v=0
	if ((v > 0)); then
		echo "  sending Postfix logged $v warnings; distinct ones:"
		grep ' warning: ' "$WORK/send/maillog" | sed -E 's/^.*(postfix\/[a-z-]+)\[[0-9]+\]: /\1: /' | sort | uniq -c | sort -rn | head -10 | cut -c1-300 | sed 's/^/    /'
	fi
	printf '  %-16s %6ss\n' total "$(elapsed_since "$E2E_T0")"
	v=$((${PLANNED:-${#RESULTS[@]}} - ${#RESULTS[@]}))
	if ((v > 0)); then
		echo "  $v scenarios did not run (counted as failed)"
		failed=$((failed + v))
	fi
	echo "e2e: ${passed} passed, ${failed} failed"
}

# ---------------------------------------------------------------------------

main() {
	mode=all
	# Nothing here reads stdin; CI may give it an open pipe or none at all.
	exec </dev/null
	case ${1:-} in
	-h | --help) usage ;;
	--list)
		local n
		for n in "${SCENARIOS[@]}" "${SELFTEST_SCENARIOS[@]}"; do
			printf '%-16s %s\n' "$n" "${SCENARIO_DESC[$n]:-}"
		done
		exit 0
		;;
	--up | --infra) mode=${1#--}; shift ;;
	--down)
		WORK=${2:?usage: run.sh --down WORK}
		down
		say "stopped everything listed in $WORK/pids (work directory left in place)"
		exit 0
		;;
	--scenarios)
		WORK=${2:?usage: run.sh --scenarios WORK [SCENARIO...]}
		shift 2
		# shellcheck source=/dev/null
		. "$WORK/env.sh"
		run_scenarios "$@"
		summary
		local r
		for r in "${RESULTS[@]}"; do
			[[ $r == *" ok "* ]] || exit 1
		done
		exit 0
		;;
	-*) usage 64 ;;
	esac
	[[ $(id -u) == 0 ]] || die "run as root (installs packages, runs Postfix)"

	if [[ $mode == up ]]; then
		trap 'rc=$?; if ((rc)); then show_logs; down; fi' EXIT
		up
		check_infra
		print_env
		trap - EXIT
		return 0
	fi
	PLANNED=$#
	((PLANNED > 0)) || PLANNED=${#SCENARIOS[@]}
	[[ $(basename "${ONIONMX_BIN:-}") != fake-onionmx || $# -gt 0 ]] || PLANNED=${#SELFTEST_SCENARIOS[@]}
	trap on_exit EXIT
	trap 'exit 130' INT TERM
	up
	check_infra || die "infrastructure checks failed"
	[[ $mode == infra ]] && return 0
	run_scenarios "$@"
	local r
	for r in "${RESULTS[@]}"; do
		[[ $r == *" ok "* ]] || return 1
	done
	((${#RESULTS[@]} == PLANNED))
}

# Sourced (by soak.sh), it only defines the functions.
[[ ${BASH_SOURCE[0]} != "$0" ]] || main "$@"
