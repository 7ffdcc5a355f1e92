# shellcheck shell=bash
# e2e/tornet.sh: a private Tor network on loopback, shaped as Tor's own test
# networks are: 3 directory authorities, 3 non-exit relays, one onion
# service, one client, all with TestingTorNetwork 1. The torrc files below
# are the whole recipe. Everything lives under $WORK/tor.
#
# Functions, in the order run.sh calls them:
#   tornet_init         ports, directories, authority keys, torrc files
#   tornet_start_core   authorities and relays, started just after a 10 s
#                       wall-clock boundary
#   tornet_wait_consensus   until every router is Running Valid HSDir Fast Stable
#   tornet_start_edge   onion service and client; sets TOR_ONION
#   tornet_wait_ready   client bootstrapped, descriptor uploaded, and a real
#                       connection through the SocksPort to ONION:25 answers
#   tornet_newnym       SIGNAL NEWNYM on the client's ControlPort
#   tornet_client_stop, tornet_client_start
#                       stop the client by its pid; start it again with the
#                       same torrc and wait for a working onion connection
#
# Variables set: TOR_SOCKS_PORT, TOR_CONTROL_PORT, TOR_ONION (xyz.onion),
# TOR_DIR. Needs: RECV_SMTP_PORT, RECV_OPEN_PORT, RECV_PICKY_PORT and
# RECV_RELAY_PORT (where the onion service's ports 25, 2525, 2526 and 26
# point: the receiver's safe smtpd, its deliberately open one, an open one
# that refuses the relay test's probe sender, and the postfix_stop
# scenario's pausing relay to port 25), ports taken from alloc_ports.

E2E_DIR=${E2E_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

TOR_NAUTH=3
TOR_NRELAY=3

# tornet_init PORT... : needs 2*TOR_NAUTH + TOR_NRELAY + 2 ports.
tornet_init() {
	local ports=("$@") i d fp v3
	TOR_DIR=$WORK/tor
	mkdir -p "$TOR_DIR"
	: >"$TOR_DIR/empty" # tor refuses -f /dev/null: use an empty regular file
	TOR_AUTH_OR=() TOR_AUTH_DIR=() TOR_RELAY_OR=()
	for ((i = 0; i < TOR_NAUTH; i++)); do
		TOR_AUTH_OR+=("${ports[2 * i]}")
		TOR_AUTH_DIR+=("${ports[2 * i + 1]}")
	done
	for ((i = 0; i < TOR_NRELAY; i++)); do
		TOR_RELAY_OR+=("${ports[2 * TOR_NAUTH + i]}")
	done
	TOR_SOCKS_PORT=${ports[2 * TOR_NAUTH + TOR_NRELAY]}
	TOR_CONTROL_PORT=${ports[2 * TOR_NAUTH + TOR_NRELAY + 1]}

	# The keys take seconds each (RSA): make the three sets in parallel.
	local dirauth_lines="" guards="" kpids=()
	for ((i = 1; i <= TOR_NAUTH; i++)); do
		tornet_authority_keys "$i" &
		kpids+=($!)
	done
	for i in "${kpids[@]}"; do
		wait "$i" || die "tor authority key generation failed (see $TOR_DIR/auth*/keygen.log)"
	done
	for ((i = 1; i <= TOR_NAUTH; i++)); do
		d=$TOR_DIR/auth$i
		fp=$(awk '{print $2}' "$d/data/fingerprint")
		v3=$(awk '$1 == "fingerprint" {print $2}' "$d/data/keys/authority_certificate")
		dirauth_lines+="DirAuthority auth$i orport=${TOR_AUTH_OR[i - 1]} v3ident=$v3 127.0.0.1:${TOR_AUTH_DIR[i - 1]} $fp"$'\n'
		guards+="${guards:+,}\$$fp"
	done

	local common
	common=$(
		cat <<-EOF
			TestingTorNetwork 1
			RunAsDaemon 1
			ShutdownWaitLength 0
			ClientUseIPv6 0
			PathsNeededToBuildCircuits 0.67
			V3AuthNIntervalsValid 3
			Schedulers Vanilla
			SafeLogging 0
			LogTimeGranularity 1
			${dirauth_lines}
		EOF
	)

	for ((i = 1; i <= TOR_NAUTH; i++)); do
		tornet_write_torrc "auth$i" "$common" <<-EOF
			ORPort 127.0.0.1:${TOR_AUTH_OR[i - 1]}
			DirPort 127.0.0.1:${TOR_AUTH_DIR[i - 1]}
			Address 127.0.0.1
			AssumeReachable 1
			ExitRelay 0
			ExitPolicy reject *:*
			SocksPort 0
			AuthoritativeDirectory 1
			V3AuthoritativeDirectory 1
			TestingV3AuthInitialVotingInterval 10
			TestingV3AuthInitialVoteDelay 2
			TestingV3AuthInitialDistDelay 2
			V3AuthVotingInterval 20
			V3AuthVoteDelay 4
			V3AuthDistDelay 4
			TestingDirAuthVoteHSDir *
			TestingDirAuthVoteGuard $guards
			TestingDirAuthVoteGuardIsStrict 1
			AuthDirVoteStableGuaranteeMinUptime 0
			AuthDirVoteStableGuaranteeMTBF 0
		EOF
	done
	for ((i = 1; i <= TOR_NRELAY; i++)); do
		tornet_write_torrc "relay$i" "$common" <<-EOF
			ORPort 127.0.0.1:${TOR_RELAY_OR[i - 1]}
			Address 127.0.0.1
			AssumeReachable 1
			ExitRelay 0
			ExitPolicy reject *:*
			SocksPort 0
		EOF
	done
	mkdir -p "$TOR_DIR/hs" && mkdir -m 700 "$TOR_DIR/hs/service"
	tornet_write_torrc hs "$common" <<-EOF
		SocksPort 0
		HiddenServiceDir $TOR_DIR/hs/service
		HiddenServicePort 25 127.0.0.1:$RECV_SMTP_PORT
		HiddenServicePort 2525 127.0.0.1:$RECV_OPEN_PORT
		HiddenServicePort 2526 127.0.0.1:$RECV_PICKY_PORT
		HiddenServicePort 26 127.0.0.1:$RECV_RELAY_PORT
		Log info file $TOR_DIR/hs/info.log
	EOF
	tornet_write_torrc client "$common" <<-EOF
		SocksPort 127.0.0.1:$TOR_SOCKS_PORT ExtendedErrors
		ControlPort 127.0.0.1:$TOR_CONTROL_PORT
		CookieAuthentication 1
		CookieAuthFile $TOR_DIR/client/control_auth_cookie
		Log info file $TOR_DIR/client/info.log
	EOF
}

# tornet_authority_keys N: relay identity (the fingerprint of the
# DirAuthority line) and v3 authority certificate (its v3ident) of authN.
tornet_authority_keys() {
	local d=$TOR_DIR/auth$1
	mkdir -p -m 700 "$d/data"
	{
		tor --list-fingerprint --ORPort 1 --DataDirectory "$d/data" \
			-f "$TOR_DIR/empty" --defaults-torrc "$TOR_DIR/empty" &&
			cd "$d/data/keys" &&
			printf '\n' | tor-gencert --create-identity-key --passphrase-fd 0 \
				-m 12 -a "127.0.0.1:${TOR_AUTH_DIR[$1 - 1]}"
	} >"$d/keygen.log" 2>&1
}

# tornet_write_torrc NAME COMMON < extra lines
tornet_write_torrc() {
	local name=$1 common=$2 d=$TOR_DIR/$1
	mkdir -p -m 700 "$d/data"
	{
		echo "Nickname $name"
		echo "DataDirectory $d/data"
		echo "PidFile $d/tor.pid"
		echo "Log notice file $d/notice.log"
		echo "$common"
		cat
	} >"$d/torrc"
}

# tornet_launch NAME: start one tor (it daemonizes after its config checks).
tornet_launch() {
	local name=$1 d=$TOR_DIR/$1
	register_pidfile "tor-$name" "$d/tor.pid"
	tor -f "$d/torrc" --defaults-torrc "$TOR_DIR/empty" >"$d/stdout.log" 2>&1 ||
		die "tor $name did not start: $(tail -5 "$d/stdout.log")"
}

# tornet_start_core: authorities and relays. A first consensus made from an
# unaligned start can list no relays, so start 0.5 s after a multiple of 10 s.
tornet_start_core() {
	local now ms wait i
	now=$(date +%s%N)
	ms=$(((now / 1000000) % 10000))
	wait=$(((10500 - ms) % 10000))
	((wait < 200)) && wait=$((wait + 10000)) # too close: take the next boundary
	say "tor: waiting ${wait} ms for the 10 s boundary"
	sleep "$(awk -v m="$wait" 'BEGIN { printf "%.3f", m / 1000 }')"
	TOR_T0=$(date +%s.%N)
	for ((i = 1; i <= TOR_NAUTH; i++)); do tornet_launch "auth$i"; done
	for ((i = 1; i <= TOR_NRELAY; i++)); do tornet_launch "relay$i"; done
	say "tor: ${TOR_NAUTH} authorities and ${TOR_NRELAY} relays started"
}

# tornet_consensus_ok: auth1's latest consensus lists all routers, each with
# the flags an onion service and its client need.
tornet_consensus_ok() {
	local f=$TOR_DIR/auth1/data/cached-consensus
	[[ -s $f ]] || return 1
	awk -v want=$((TOR_NAUTH + TOR_NRELAY)) '
		/^r / { n++ }
		/^s / {
			ok = 1
			split("Running Valid HSDir Fast Stable", need, " ")
			for (k in need) if (index(" " substr($0, 3) " ", " " need[k] " ") == 0) ok = 0
			good += ok
		}
		END { exit !(n == want && good == want) }
	' "$f"
}

tornet_wait_consensus() {
	wait_for 120 "a consensus with all relays Running Valid HSDir Fast Stable" tornet_consensus_ok ||
		die "tor: no usable consensus (see $TOR_DIR/auth1/notice.log)"
	TOR_T_CONSENSUS=$(elapsed_since "$TOR_T0")
	say "tor: usable consensus after ${TOR_T_CONSENSUS}s"
}

# tornet_start_edge: the onion service and the client; waits for the
# service's hostname file and sets TOR_ONION.
tornet_start_edge() {
	tornet_launch hs
	tornet_launch client
	wait_for 30 "onion service hostname" test -s "$TOR_DIR/hs/service/hostname" ||
		die "tor: onion service wrote no hostname"
	TOR_ONION=$(tr -d ' \n' <"$TOR_DIR/hs/service/hostname")
	say "tor: onion service is $TOR_ONION"
}

tornet_descriptor_uploaded() {
	grep -q 'Uploading hidden service descriptor: finished with status 200' "$TOR_DIR/hs/info.log" 2>/dev/null
}

tornet_client_bootstrapped() {
	grep -q 'Bootstrapped 100%' "$TOR_DIR/client/notice.log" 2>/dev/null
}

# tornet_probe: one SOCKS5 connection to $TOR_ONION:25; succeeds on a 220.
tornet_probe() {
	local out
	out=$("$E2E_DIR/socks5probe.sh" "127.0.0.1:$TOR_SOCKS_PORT" "$TOR_ONION" 25 2>&1) || {
		say "tor: probe: $out"
		return 1
	}
	[[ $out == 220* ]] || {
		say "tor: probe got: $out"
		return 1
	}
	TOR_PROBE_GREETING=$out
}

# tornet_wait_ready: descriptor uploaded, client bootstrapped, and a real
# connection answered; on failure NEWNYM clears the client's HSDir state.
tornet_wait_ready() {
	wait_for 120 "client bootstrap" tornet_client_bootstrapped ||
		die "tor: client did not bootstrap"
	say "tor: client bootstrapped after $(elapsed_since "$TOR_T0")s"
	wait_for 120 "onion descriptor upload" tornet_descriptor_uploaded ||
		die "tor: onion service descriptor was not uploaded"
	TOR_T_DESC=$(elapsed_since "$TOR_T0")
	say "tor: descriptor uploaded after ${TOR_T_DESC}s"
	tornet_wait_onion || die "tor: no connection to $TOR_ONION:25 through the SocksPort"
	TOR_T_READY=$(elapsed_since "$TOR_T0")
	say "tor: onion connection works after ${TOR_T_READY}s: $TOR_PROBE_GREETING"
}

# tornet_wait_onion: up to 8 probes of $TOR_ONION:25 through the client,
# with a NEWNYM and 2 s between them.
tornet_wait_onion() {
	local tries=0
	until tornet_probe; do
		((++tries < 8)) || return 1
		tornet_newnym || true
		sleep 2
	done
}

# tornet_client_stop: stops the Tor client (only it: the onion service and
# the relays keep running) by the pid in its PidFile, and waits until it is
# gone and its SocksPort refuses connections.
tornet_client_stop() {
	local pid
	pid=$(pid_of "$TOR_DIR/client/tor.pid") || {
		say "tor: the client is not running"
		return 1
	}
	kill -TERM "$pid" 2>/dev/null || return 1
	if ! wait_for 15 "tor client ($pid) to exit" bash -c "! kill -0 $pid" _; then
		kill -KILL "$pid" 2>/dev/null || true
		wait_for 5 "tor client ($pid) to die" bash -c "! kill -0 $pid" _ || return 1
	fi
	wait_for 10 "SocksPort $TOR_SOCKS_PORT to close" port_free "$TOR_SOCKS_PORT" || return 1
	say "tor: client (pid $pid) stopped"
}

# tornet_client_start: starts the client again with the same torrc (same
# PidFile, so the pid bookkeeping still covers it), waits for it to
# bootstrap again and for a working connection to the onion. Prints the
# seconds it took.
tornet_client_start() {
	local mark t0
	t0=$(date +%s.%N)
	mark=$(log_lines "$TOR_DIR/client/notice.log")
	tor -f "$TOR_DIR/client/torrc" --defaults-torrc "$TOR_DIR/empty" >>"$TOR_DIR/client/stdout.log" 2>&1 || {
		say "tor: the client did not start again: $(tail -5 "$TOR_DIR/client/stdout.log")"
		return 1
	}
	wait_for 90 "client bootstrap after the restart" tornet_client_bootstrapped_since "$mark" || return 1
	say "tor: client (pid $(pid_of "$TOR_DIR/client/tor.pid")) bootstrapped again after $(elapsed_since "$t0")s"
	tornet_wait_onion || return 1
	say "tor: onion connection works again after $(elapsed_since "$t0")s: $TOR_PROBE_GREETING"
}

tornet_client_bootstrapped_since() { # MARK (lines of notice.log before the restart)
	tail -n +"$(($1 + 1))" "$TOR_DIR/client/notice.log" 2>/dev/null | grep -q 'Bootstrapped 100%'
}

# tornet_newnym: fresh circuits and forgotten HSDir failures on the client.
tornet_newnym() {
	local cookie reply
	cookie=$(od -An -tx1 -v "$TOR_DIR/client/control_auth_cookie" | tr -d ' \n')
	reply=$(timeout 5 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "AUTHENTICATE %s\r\nSIGNAL NEWNYM\r\nQUIT\r\n" "$2" >&3
		cat <&3' _ "$TOR_CONTROL_PORT" "$cookie") || true
	[[ $reply == *"250 OK"* ]]
}
