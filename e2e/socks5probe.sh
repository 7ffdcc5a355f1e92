#!/usr/bin/env bash
# socks5probe.sh SOCKSHOST:PORT HOST PORT [TIMEOUT]
#
# Opens one connection to HOST:PORT through a SOCKS5 proxy (the host name is
# sent unresolved, ATYP 3, as Tor needs for .onion names), prints the
# server's first line (an SMTP greeting), answers it with QUIT, and exits 0.
# Needs nothing but bash (/dev/tcp), dd and od.
#
# On a SOCKS failure it prints "socks reply 0xNN" (Tor's ExtendedErrors codes:
# F0 descriptor not found … F7 introduction timed out; 01 general failure,
# 04 host unreachable, 05 refused, 06 TTL expired) and exits 2; on any other
# failure (proxy unreachable, no greeting within TIMEOUT) it exits 1.
set -euo pipefail
proxy=$1 host=$2 port=$3 limit=${4:-60}
phost=${proxy%:*} pport=${proxy##*:}

inner() {
	exec 3<>"/dev/tcp/$phost/$pport" || { echo "cannot connect to proxy $proxy"; exit 1; }
	readhex() { dd bs=1 count="$1" status=none <&3 | od -An -tx1 -v | tr -d ' \n'; }
	# greeting: version 5, one method, "no authentication"
	printf '\x05\x01\x00' >&3
	local r
	r=$(readhex 2)
	[[ $r == 0500 ]] || { echo "proxy refused the handshake ($r)"; exit 1; }
	# CONNECT, ATYP 3 (domain name)
	printf "\\x05\\x01\\x00\\x03\\x$(printf %02x "${#host}")%s\\x$(printf %02x $((port >> 8)))\\x$(printf %02x $((port & 255)))" "$host" >&3
	r=$(readhex 4)
	[[ ${#r} == 8 ]] || { echo "proxy closed the connection"; exit 1; }
	local rep=${r:2:2} atyp=${r:6:2}
	case $atyp in
	01) readhex 6 >/dev/null ;;
	04) readhex 18 >/dev/null ;;
	03) readhex $((16#$(readhex 1) + 2)) >/dev/null ;;
	esac
	[[ $rep == 00 ]] || { echo "socks reply 0x$rep"; exit 2; }
	local line
	IFS= read -r line <&3 || { echo "connection closed before a greeting"; exit 1; }
	printf '%s\n' "${line%$'\r'}"
	printf 'QUIT\r\n' >&3
	IFS= read -r line <&3 || true
	exec 3>&-
}
export phost pport host port proxy
timeout "$limit" bash -c "$(declare -f inner); inner" || {
	rc=$?
	((rc == 124)) && echo "timed out after ${limit}s"
	exit "$rc"
}
