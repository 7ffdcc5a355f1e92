# shellcheck shell=bash
# e2e/lib.sh: common helpers for the end-to-end harness: messages, waiting,
# port allocation, process bookkeeping, package installation.
#
# Sourced by e2e/run.sh; expects `set -euo pipefail` and $WORK to be set
# before the functions that touch the work directory are called.

E2E_T0=${E2E_T0:-$(date +%s.%N)}

# say MSG...: progress line on stderr, prefixed with the seconds since start.
say() {
	printf 'e2e [%6ss] %s\n' "$(elapsed_since "$E2E_T0")" "$*" >&2
}

die() {
	printf 'e2e: FAIL: %s\n' "$*" >&2
	exit 1
}

# elapsed_since T: seconds (one decimal) since the date +%s.%N value T.
elapsed_since() {
	awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

# wait_for SECONDS DESCRIPTION CMD...: run CMD every 0.5 s until it succeeds.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			say "timed out after ${secs}s waiting for: $what"
			return 1
		fi
		sleep 0.5
	done
}

# log_lines FILE: number of lines in FILE (0 if it does not exist), to
# look at what was logged after this point with tail -n +$((N + 1)).
log_lines() {
	if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi
}

# report_set KEY VALUE / report_get KEY: numbers for the final summary
# (scenarios run in subshells: they go through $WORK/report).
report_set() { echo "$1 $2" >>"$WORK/report"; }
report_get() { awk -v k="$1" '$1 == k { v = $2 } END { if (v != "") print v; else exit 1 }' "$WORK/report" 2>/dev/null; }

# ---------------------------------------------------------------------------
# Ports

# port_free PORT: true when nothing listens on PORT (TCP or UDP) on any address.
port_free() {
	local p=$1
	if command -v ss >/dev/null 2>&1; then
		! ss -Hltnu "( sport = :$p )" 2>/dev/null | grep -q .
	else
		! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null
	fi
}

# alloc_ports N: prints N distinct free ports from a random block in
# 15000-34999 (well below the kernel's ephemeral range, 32768+ on Debian, is
# not guaranteed, so each port is checked).
alloc_ports() {
	local n=$1 base p got=()
	base=$((15000 + (RANDOM % 190) * 100))
	for ((p = base; p < base + 1000 && ${#got[@]} < n; p++)); do
		port_free "$p" && got+=("$p")
	done
	((${#got[@]} == n)) || die "could not find $n free ports from $base"
	echo "${got[@]}"
}

# ---------------------------------------------------------------------------
# Packages

# ensure_packages: installs tor, postfix, dnsmasq and dig (bind9-dnsutils) if missing, without
# leaving their system services running (a policy-rc.d that refuses to
# start anything during the install, and a stop afterwards for good measure).
ensure_packages() {
	local want=(tor postfix dnsmasq bind9-dnsutils strace) missing=() p
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		say "installing ${missing[*]}"
		local had_policy=0
		[[ -e /usr/sbin/policy-rc.d ]] && had_policy=1
		if ((!had_policy)); then
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 755 /usr/sbin/policy-rc.d
		fi
		echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
		export DEBIAN_FRONTEND=noninteractive
		# apt-get update only when the lists are missing or the install fails.
		if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
			apt-get update -qq
		fi
		if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
			apt-get update -qq
			apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
		fi
		((had_policy)) || rm -f /usr/sbin/policy-rc.d
	fi
	stop_system_services
}

# stop_system_services: the packages' own daemons must not run: the system
# Postfix would hold /etc/postfix's queue and maybe port 25, the system tor
# would talk to the real network (there is none here), dnsmasq port 53.
stop_system_services() {
	local s
	for s in tor postfix dnsmasq; do
		if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
			systemctl stop "$s" >/dev/null 2>&1 || true
			systemctl disable "$s" >/dev/null 2>&1 || true
		elif [[ -x /etc/init.d/$s ]]; then
			"/etc/init.d/$s" stop >/dev/null 2>&1 || true
		fi
	done
	# The system instance keeps its pid under /var/spool/postfix.
	if [[ -s /var/spool/postfix/pid/master.pid ]] && kill -0 "$(tr -d ' ' </var/spool/postfix/pid/master.pid)" 2>/dev/null; then
		postfix stop >/dev/null 2>&1 || true
	fi
}

# ---------------------------------------------------------------------------
# Process bookkeeping: every daemon the harness starts is recorded in
# $WORK/pids as "NAME PIDFILE" so that cleanup (and `run.sh --down`) can stop
# exactly those processes and nothing else.

register_pidfile() { # NAME PIDFILE (once: a Postfix started again is listed once)
	grep -qxF "$1 $2" "$WORK/pids" 2>/dev/null || echo "$1 $2" >>"$WORK/pids"
}

pid_of() { # PIDFILE -> pid, if the file holds a live one
	local pid
	[[ -s $1 ]] || return 1
	pid=$(tr -dc '0-9' <"$1")
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# stop_pidfiles NAME PIDFILE [NAME PIDFILE...]: TERM to all of them at once,
# then up to 15 s for all to exit (a tor that caught TERM can take seconds on
# a busy machine), then KILL whatever is left.
stop_pidfiles() {
	local -A live=()
	local pid i
	while (($# >= 2)); do
		if pid=$(pid_of "$2"); then
			live[$pid]=$1
			kill -TERM "$pid" 2>/dev/null || true
		fi
		shift 2
	done
	for ((i = 0; i < 150 && ${#live[@]} > 0; i++)); do
		for pid in "${!live[@]}"; do
			kill -0 "$pid" 2>/dev/null || unset "live[$pid]"
		done
		((${#live[@]} == 0)) || sleep 0.1
	done
	for pid in "${!live[@]}"; do
		say "${live[$pid]} ($pid) did not stop, killing it"
		kill -KILL "$pid" 2>/dev/null || true
	done
}

stop_pidfile() { stop_pidfiles "$1" "$2"; }
