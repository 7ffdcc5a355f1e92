#!/usr/bin/env bash
# e2e/soak.sh: the soak test. Many messages through the sending Postfix,
# onionmx, the private Tor network and the receiving Postfix (the same
# set-up as e2e/run.sh), while things break on a schedule; then a check
# that every message arrived, byte for byte, exactly once per recipient.
#
# Usage:
#   e2e/soak.sh [--messages N] [--rate R] [--spacing S] [--write FILE]
#
#   --messages N   messages in all (default 10000); the first tenth (at
#                  least 20) go without faults, as fast as Postfix takes
#                  them: the throughput without faults
#   --rate R       messages per second submitted while the faults run
#                  (default 15)
#   --spacing S    seconds from one fault to the next (default 20); the
#                  faults go round until the submission is over and every
#                  fault has run at least once
#   --write FILE   write the report there too (SOAK.md)
#
# Traffic: three onion services, reached by an SRV domain (srv.soak.test),
# a domain the static map pins (pinned.soak.test) and the onion's own name
# (user@<onion>.onion); one to three recipients a message; 1 KiB to 10 MiB;
# every tenth message from the null sender. The second and third onions
# reach the receiver through `soak proxy`, which can drop the reply to the
# end of data.
#
# Faults, in this order: the Tor client killed (SIGKILL) and started
# again; the onion service's Tor restarted; the receiving Postfix stopped
# for 10 s; the receiver answering 450 to everything for 10 s; the proxy
# hanging up after the end of data instead of passing on the 250 (three
# times); the lookup service's processes killed; `postfix reload` of the
# sender; `postfix stop` of the sender in the middle of deliveries, then
# start.
#
# It fails on a message lost, corrupted, misdelivered, bounced, or
# duplicated without an explanation (onionmx's "message may be sent more
# than once", or the sending Postfix stopped while the end of data was in
# flight); on mail left in a queue; on an onionmx deliver process left
# over; on an onionmx process over 32 MiB. Never on timing.
#
# Environment: as e2e/run.sh (ONIONMX_BIN, E2E_WORK, E2E_KEEP,
# E2E_SKIP_INSTALL).
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=./run.sh
. "$E2E_DIR/run.sh"
# The soak sends through Postfix only: no Exim beside it (run.sh's up
# starts one for the Exim scenarios, with a queue run every 2 s, whose CPU
# the soak would count).
exim_up() { :; }

SOAK_N=10000 SOAK_RATE=15 SOAK_SPACING=20 SOAK_WRITE= SOAK_RCPTS=
# The soak's own background jobs, and the fault under way: hook_down
# stops the jobs and names the fault when the run ends early.
SOAK_WATCH_PID= SOAK_SUB_PID= SOAK_FAULT=
SOAK_FAULTS=(tor_client_kill onion_service_restart receiver_stop receiver_4xx
	drop_after_dot lookup_kill sender_reload sender_stop)
SOAK_USERS=(u1 u2 u3)

# ---------------------------------------------------------------------------
# Set-up: two more onion services and the proxy (hooks of run.sh's up).

hook_tor_init() {
	local p used=" ${ports[*]} "
	SOAK_DIR=$WORK/soak
	mkdir -p "$SOAK_DIR"
	for p in $(alloc_ports 20); do
		[[ $used == *" $p "* ]] || {
			SOAK_PROXY_PORT=$p
			break
		}
	done
	[[ -n ${SOAK_PROXY_PORT:-} ]] || die "no free port for the proxy"
	"$SOAK_BIN" proxy -listen "127.0.0.1:$SOAK_PROXY_PORT" -to "127.0.0.1:$RECV_SMTP_PORT" \
		-log "$SOAK_DIR/proxy.log" </dev/null >>"$SOAK_DIR/proxy.out" 2>&1 &
	echo $! >"$SOAK_DIR/proxy.pid"
	register_pidfile soak-proxy "$SOAK_DIR/proxy.pid"
	mkdir -m 700 "$TOR_DIR/hs/service2" "$TOR_DIR/hs/service3"
	cat >>"$TOR_DIR/hs/torrc" <<-EOF
		HiddenServiceDir $TOR_DIR/hs/service2
		HiddenServicePort 25 127.0.0.1:$SOAK_PROXY_PORT
		HiddenServiceDir $TOR_DIR/hs/service3
		HiddenServicePort 25 127.0.0.1:$SOAK_PROXY_PORT
	EOF
}

hook_tor_edge() {
	local n
	for n in 2 3; do
		wait_for 30 "onion service $n hostname" test -s "$TOR_DIR/hs/service$n/hostname" ||
			die "tor: onion service $n wrote no hostname"
	done
	SOAK_ONION2=$(tr -d ' \n' <"$TOR_DIR/hs/service2/hostname")
	SOAK_ONION3=$(tr -d ' \n' <"$TOR_DIR/hs/service3/hostname")
	DNS_EXTRA_ARGS=("--srv-host=_onion-mx._tcp.srv.soak.test,$SOAK_ONION2,25,0,5")
}

# soak_probe ONION: one connection through the client to ONION:25 gets 220.
soak_probe() {
	local out
	out=$("$E2E_DIR/socks5probe.sh" "127.0.0.1:$TOR_SOCKS_PORT" "$1" 25 2>&1) && [[ $out == 220* ]]
}

# soak_setup: the receiver's soak domains and users, the sender's pin, and
# the two extra onions answering.
soak_setup() {
	local d u
	postconf -c "$RECV_DIR/etc" -e \
		"virtual_mailbox_domains = $(postconf -c "$RECV_DIR/etc" -h virtual_mailbox_domains), srv.soak.test, pinned.soak.test"
	for u in "${SOAK_USERS[@]}"; do
		for d in srv.soak.test pinned.soak.test "$TOR_ONION"; do
			printf '%s@%s soak-%s/%s/\n' "$u" "$d" "${d%%.*}" "$u" >>"$RECV_DIR/etc/vmailbox"
			SOAK_RCPTS+="${SOAK_RCPTS:+,}$u@$d"
		done
	done
	pf_reload "$RECV_DIR"
	pf_sender_pin pinned.soak.test "[$SOAK_ONION3]:25"
	for d in "$SOAK_ONION2" "$SOAK_ONION3"; do
		wait_for 120 "a connection to $d:25" soak_probe "$d" || die "tor: $d does not answer"
	done
	say "soak: $SOAK_ONION2 (srv.soak.test) and $SOAK_ONION3 (pinned.soak.test) answer through the proxy on $SOAK_PROXY_PORT; $TOR_ONION directly"
}

# ---------------------------------------------------------------------------
# Faults. Each one logs its start and end to $SOAK_DIR/faults.

fault_log() { printf '%s %s %s\n' "$(date +%s.%N)" "$1" "$2" >>"$SOAK_DIR/faults"; }

fault_tor_client_kill() {
	local pid
	pid=$(pid_of "$TOR_DIR/client/tor.pid") || return 0
	kill -KILL "$pid"
	wait_for 10 "tor client ($pid) to die" bash -c "! kill -0 $pid" _ || true
	sleep 3
	tornet_client_start >/dev/null 2>&1 || {
		tornet_client_start || die "the Tor client did not come back"
	}
}

fault_onion_service_restart() {
	local pid
	pid=$(pid_of "$TOR_DIR/hs/tor.pid") || return 0
	kill -TERM "$pid"
	wait_for 15 "the onion service's tor ($pid) to exit" bash -c "! kill -0 $pid" _ ||
		kill -KILL "$pid" 2>/dev/null || true
	sleep 2
	tor -f "$TOR_DIR/hs/torrc" --defaults-torrc "$TOR_DIR/empty" >>"$TOR_DIR/hs/stdout.log" 2>&1 ||
		die "the onion service's tor did not start again"
}

fault_receiver_stop() {
	pf_stop "$RECV_DIR"
	sleep 10
	pf_start "$RECV_DIR"
}

fault_receiver_4xx() {
	postconf -c "$RECV_DIR/etc" -e 'smtpd_client_restrictions = defer'
	pf_reload "$RECV_DIR"
	sleep 10
	postconf -c "$RECV_DIR/etc" -X smtpd_client_restrictions
	pf_reload "$RECV_DIR"
}

fault_drop_after_dot() {
	kill -USR1 "$(pid_of "$SOAK_DIR/proxy.pid")"
	sleep 5
}

fault_lookup_kill() {
	# The sending Postfix's: spawn(8)'s children.
	local spawn
	for spawn in $(pgrep -f "^spawn -n onionmx-lookup .*argv=$WORK/onionmx "); do
		pkill -KILL -P "$spawn" || true
	done
	sleep 2
}

fault_sender_reload() { pf_reload "$SEND_DIR"; }

fault_sender_stop() {
	local t0
	t0=$(date +%s%N)
	pf_stop "$SEND_DIR"
	sleep 3
	pf_start "$SEND_DIR"
	echo "$t0 $(date +%s%N)" >>"$SOAK_DIR/stops"
}

# ---------------------------------------------------------------------------
# Measurement

# cpu_busy: seconds of CPU time the whole machine spent busy so far.
cpu_busy() {
	awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { print ($2 + $3 + $4 + $7 + $8 + $9) / hz; exit }' /proc/stat
}

# The soak and everything it starts (Tor, both Postfix instances, every
# onionmx) run in a cpuacct cgroup of their own: their CPU time, told
# apart from whatever else the machine runs. Without cgroup v1's cpuacct,
# cpu_soak prints nothing.
SOAK_CG=
soak_cgroup_enter() {
	local root
	for root in /sys/fs/cgroup/cpuacct /sys/fs/cgroup/cpu,cpuacct; do
		[[ -w $root/cgroup.procs ]] || continue
		mkdir "$root/onionmx-soak-$$" 2>/dev/null || continue
		SOAK_CG=$root/onionmx-soak-$$
		echo $$ >"$SOAK_CG/cgroup.procs" || SOAK_CG=
		return 0
	done
}

cpu_soak() {
	[[ -n $SOAK_CG ]] && awk '{ printf "%.3f", $1 / 1e9 }' "$SOAK_CG/cpuacct.usage"
	return 0
}

# hook_down: the soak's own jobs stopped (a run that failed half-way
# leaves the submitter calling sendmail, and soak watch reading /proc
# every 50 ms, for good), then out of the cgroup and remove it.
hook_down() {
	local pid
	[[ -z $SOAK_FAULT ]] || say "soak: ended during the fault $SOAK_FAULT"
	for pid in $SOAK_SUB_PID $SOAK_WATCH_PID; do
		{ kill -TERM "$pid" && wait "$pid"; } 2>/dev/null || true
	done
	[[ -n $SOAK_CG ]] || return 0
	echo $$ >"$(dirname "$SOAK_CG")/cgroup.procs" 2>/dev/null || true
	rmdir "$SOAK_CG" 2>/dev/null || say "soak: $SOAK_CG still has processes: $(tr '\n' ' ' <"$SOAK_CG/cgroup.procs")"
}

# per_message A B N: (B - A) seconds over N messages, in ms, or "-".
per_message() {
	[[ -n $1 && -n $2 ]] || { echo -; return 0; }
	awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.1f ms", (b - a) * 1000 / n }'
}

# queues_empty: nothing in the sender's queue, nothing in the receiver's.
queues_empty() { queue_empty && recv_queue_is_empty; }

# drain SECONDS: one flush of the sender's queue, as an admin would after
# an outage, then waits until both queues are empty. No more flushes: a
# flush sends every deferred message at once, and a soak that flushed
# every 10 s made a storm of its own (136,650 deferrals "too many
# connections" in one run); the e2e's retry times are 10 to 20 s anyway.
drain() {
	local deadline=$((SECONDS + $1))
	queue_flush 2>/dev/null || true
	until queues_empty; do
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
}

# ---------------------------------------------------------------------------

soak_main() {
	while (($#)); do
		case $1 in
		--messages) SOAK_N=$2; shift 2 ;;
		--rate) SOAK_RATE=$2; shift 2 ;;
		--spacing) SOAK_SPACING=$2; shift 2 ;;
		--write) SOAK_WRITE=$(realpath -m "$2"); shift 2 ;;
		-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
		*) die "unknown argument $1 (try --help)" ;;
		esac
	done
	[[ $(id -u) == 0 ]] || die "run as root (installs packages, runs Postfix)"
	exec </dev/null
	local cmdline="e2e/soak.sh --messages $SOAK_N --rate $SOAK_RATE --spacing $SOAK_SPACING"
	local clean=$((SOAK_N / 10))
	((clean >= 20)) || clean=20
	((SOAK_N > clean)) || die "--messages must be more than $clean"

	# run.sh's exit handler stops everything; mode=infra: it has no
	# scenario summary to print.
	mode=infra
	trap on_exit EXIT
	trap 'exit 130' INT TERM
	soak_cgroup_enter
	SOAK_BIN=$(mktemp /tmp/onionmx-soak.XXXXXX)
	(cd "$REPO" && CGO_ENABLED=0 go build -o "$SOAK_BIN" ./e2e/soak) || die "go build ./e2e/soak failed"
	up
	mv "$SOAK_BIN" "$WORK/soak-tool"
	SOAK_BIN=$WORK/soak-tool
	check_infra || die "infrastructure checks failed"
	soak_setup
	SCENARIOS_RAN=1

	local run ledger="$SOAK_DIR/ledger" send=(submit) t0 t1 c0 c1 g0 g1 clean_s clean_cpu clean_mcpu
	run=$(date +%Y%m%d%H%M%S)
	send+=(-ledger "$ledger" -run "$run" -conf "$SEND_DIR/etc" -rcpts "$SOAK_RCPTS")
	"$SOAK_BIN" watch -bin "$WORK/onionmx" -pids "$WORK/pids" -out "$SOAK_DIR/watch" &
	SOAK_WATCH_PID=$!

	say "soak: phase 1, $clean messages without faults, as fast as sendmail takes them"
	t0=$(date +%s.%N) c0=$(cpu_busy) g0=$(cpu_soak)
	"$SOAK_BIN" "${send[@]}" -from 0 -to "$clean" || die "submission failed"
	drain 600 || say "soak: phase 1: the queues did not empty in 600 s"
	t1=$(date +%s.%N) c1=$(cpu_busy) g1=$(cpu_soak)
	clean_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	clean_cpu=$(per_message "$g0" "$g1" "$clean")
	clean_mcpu=$(per_message "$c0" "$c1" "$clean")
	say "soak: phase 1 done in ${clean_s}s"
	kill -USR1 "$SOAK_WATCH_PID"

	# The schedule: one fault every SPACING seconds, round and round, until
	# the submission is over and each has run once.
	local nf=${#SOAK_FAULTS[@]} k=0 due start f schedule
	schedule=$(for ((k = 0; k < nf; k++)); do
		printf '  t+%3ds %s\n' $(((k + 1) * SOAK_SPACING)) "${SOAK_FAULTS[k]}"
	done)
	say "soak: phase 2, messages $clean to $((SOAK_N - 1)) at $SOAK_RATE a second; faults every ${SOAK_SPACING}s, in this order, again and again while messages are submitted:"
	echo "$schedule" >&2
	t0=$(date +%s.%N) c0=$(cpu_busy) g0=$(cpu_soak)
	"$SOAK_BIN" "${send[@]}" -from "$clean" -to "$SOAK_N" -rate "$SOAK_RATE" &
	SOAK_SUB_PID=$!
	start=$SECONDS k=0
	while ((k < nf)) || kill -0 "$SOAK_SUB_PID" 2>/dev/null; do
		due=$((start + (k + 1) * SOAK_SPACING))
		((SECONDS >= due)) || sleep $((due - SECONDS))
		f=${SOAK_FAULTS[k % nf]}
		say "soak: fault $((k + 1)) at t+$((SECONDS - start))s: $f"
		fault_log start "$f"
		SOAK_FAULT=$f
		"fault_$f"
		SOAK_FAULT=
		fault_log end "$f"
		k=$((k + 1))
		# The daemons' descriptors and memory after each round.
		((k % nf)) || kill -USR1 "$SOAK_WATCH_PID"
	done
	local sub_rc=0
	wait "$SOAK_SUB_PID" || sub_rc=$?
	SOAK_SUB_PID=
	((sub_rc == 0)) || die "submission failed"
	say "soak: $k faults injected; the last message submitted at t+$((SECONDS - start))s; draining the queues"
	local drained=1
	drain 1800 || drained=0
	t1=$(date +%s.%N) c1=$(cpu_busy) g1=$(cpu_soak)
	local fault_s fault_cpu fault_mcpu nfault=$((SOAK_N - clean))
	fault_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	fault_cpu=$(per_message "$g0" "$g1" "$nfault")
	fault_mcpu=$(per_message "$c0" "$c1" "$nfault")
	sleep 5
	kill -USR1 "$SOAK_WATCH_PID"
	sleep 1
	kill -TERM "$SOAK_WATCH_PID"
	wait "$SOAK_WATCH_PID" || true
	SOAK_WATCH_PID=

	local failed=0 left verdict report="$SOAK_DIR/SOAK.md"
	left=$(onionmx_procs deliver | tr '\n' ' ')
	{
		echo "# Soak: $SOAK_N messages through Postfix, onionmx and a private Tor network while things break"
		echo
		echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo "- command: \`$cmdline\`"
		echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(. /etc/os-release && echo "$PRETTY_NAME"), Linux $(uname -r)"
		echo "- parts: $("$WORK/onionmx" --version 2>&1 | head -1), $(tor --version | head -1 | sed 's/\.$//'), Postfix $(postconf -dh mail_version), $(go version | cut -d' ' -f3)"
		echo
		echo "## Throughput"
		echo
		echo "| phase | messages | wall time | messages/s | CPU per message: the soak's processes | the whole machine |"
		echo "|---|---|---|---|---|---|"
		echo "| without faults (as fast as sendmail takes them) | $clean | ${clean_s} s | $(awk -v n="$clean" -v s="$clean_s" 'BEGIN { printf "%.1f", n / s }') | $clean_cpu | $clean_mcpu |"
		echo "| with faults (submitted at $SOAK_RATE/s; until the queues were empty) | $nfault | ${fault_s} s | $(awk -v n="$nfault" -v s="$fault_s" 'BEGIN { printf "%.1f", n / s }') | $fault_cpu | $fault_mcpu |"
		echo
		echo "The soak's processes: everything it started (Tor, both Postfix instances, every onionmx, dnsmasq, the submitter, the proxy), counted in a cpuacct cgroup of their own. The whole machine also runs whatever else it runs."
		echo
		echo "## Faults"
		echo
		echo "One every ${SOAK_SPACING} s while messages were submitted, in this order, again and again: $k in all."
		echo
		echo "| fault | times |"
		echo "|---|---|"
		for f in "${SOAK_FAULTS[@]}"; do
			echo "| $f | $(grep -c " start $f\$" "$SOAK_DIR/faults") |"
		done
		echo
		echo "## What arrived"
		echo
		verdict=$("$SOAK_BIN" verify -ledger "$ledger" -run "$run" -mail "$RECV_DIR/mail" \
			-sendlog "$SEND_DIR/maillog" -bounces "$SEND_DIR/mail" -stops "$SOAK_DIR/stops" \
			-watch "$SOAK_DIR/watch" -clean "$clean" 2>&1) || failed=1
		echo "$verdict"
		echo
		local dropped
		dropped=$(grep -c 'dropped the reply' "$SOAK_DIR/proxy.log" || true)
		echo "Proxy: $dropped replies to the end of data dropped."
		if ((dropped == 0)); then
			# The one fault that makes a duplicate onionmx must announce:
			# without it the soak proves nothing about duplicates.
			echo "FAILED: the proxy dropped no reply to the end of data: drop_after_dot was not injected"
			failed=1
		fi
		if ((!drained)); then
			echo "FAILED: the queues were not empty 1800 s after the last fault: sender $(queue_ids | wc -l) messages, receiver $(recv_queue_files | wc -l) files"
			failed=1
		fi
		if [[ -n $left ]]; then
			echo "FAILED: onionmx deliver processes left over: $left"
			failed=1
		else
			echo "No onionmx deliver process left over; both queues empty."
		fi
	} >"$report"
	cat "$report"
	[[ -z $SOAK_WRITE ]] || cp "$report" "$SOAK_WRITE"
	((failed == 0)) || die "soak failed (see above)"
	say "soak passed"
}

soak_main "$@"
