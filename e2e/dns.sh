# shellcheck shell=bash
# e2e/dns.sh: dnsmasq on 127.0.0.1:$DNS_PORT (UDP and TCP) as the only DNS
# server of the run. It reads no /etc/dnsmasq.conf, no /etc/hosts, no
# /etc/resolv.conf and forwards nothing: every name it has no record for is
# answered NXDOMAIN (--local=/#/ makes all domains local).
#
# Records (SRV _onion-mx._tcp.<domain>, as the community publishes them):
#   recv.onionmx.test     -> $TOR_ONION port 25         the working onion
#   dead.onionmx.test     -> $DNS_DEAD_ONION port 25    a valid v3 name no
#                                                       one serves (Tor F0)
#   badkey.onionmx.test   -> $DNS_BADKEY_ONION port 25  well-formed name, not a
#                                                       valid key (Tor F6)
#   v2.onionmx.test       -> a 16-character v2 onion    gone since Tor 0.4.6
#   notonion.onionmx.test -> mx.clear.onionmx.test      not an onion at all
#   clear.onionmx.test    -> no SRV record: NXDOMAIN/no data, default transport
#   pinned.onionmx.test   -> no record either: the sender's static map pins
#                            it, and no query may be made for it; the same
#                            for relayed.onionmx.test and typo.onionmx.test
# Extra records: DNS_EXTRA_ARGS=(--srv-host=... ...) before dns_start.

# A valid v3 address of a real ed25519 key (made once with openssl; the
# secret key was thrown away): nobody publishes a descriptor for it, Tor
# answers F0 (descriptor not found) once it has asked the HSDirs.
DNS_DEAD_ONION=y3xxv77neyroeb63my4cogrecjlbgv64enzkdjac5cumivcqo7flrcqd.onion
# Checksum and version right, but the "key" is a SHA-256 hash, not a point
# of the curve's prime-order group: Tor refuses it at once with F6.
DNS_BADKEY_ONION=qfzrq5pglzfes42uyty2rjecdcpb2uwekqttq5v44elvoyhsnqz4juid.onion
DNS_V2_ONION=expyuzz4wqqyqhjn.onion

dns_start() {
	DNS_DIR=$WORK/dns
	mkdir -p "$DNS_DIR"
	register_pidfile dnsmasq "$DNS_DIR/dnsmasq.pid"
	dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --no-poll \
		--user=root --group=root \
		--port="$DNS_PORT" --listen-address=127.0.0.1 --bind-interfaces \
		--local=/#/ \
		--srv-host="_onion-mx._tcp.recv.onionmx.test,$TOR_ONION,25,0,5" \
		--srv-host="_onion-mx._tcp.dead.onionmx.test,$DNS_DEAD_ONION,25,0,5" \
		--srv-host="_onion-mx._tcp.badkey.onionmx.test,$DNS_BADKEY_ONION,25,0,5" \
		--srv-host="_onion-mx._tcp.v2.onionmx.test,$DNS_V2_ONION,25,0,5" \
		--srv-host="_onion-mx._tcp.notonion.onionmx.test,mx.clear.onionmx.test,25,0,5" \
		"${DNS_EXTRA_ARGS[@]}" \
		--pid-file="$DNS_DIR/dnsmasq.pid" \
		--log-queries --log-facility="$DNS_DIR/dnsmasq.log" ||
		die "dnsmasq did not start"
	wait_for 10 "dnsmasq pid file" pid_of "$DNS_DIR/dnsmasq.pid" || die "dnsmasq is not running"
}

# dns_mark: the query log's length now; dns_queries_since MARK prints the
# "query[TYPE] NAME from ADDR" lines logged after it.
dns_mark() { log_lines "$WORK/dns/dnsmasq.log"; }

dns_queries_since() {
	tail -n +"$(($1 + 1))" "$WORK/dns/dnsmasq.log" | grep -E 'query\[[A-Za-z0-9]+\] ' || true
}

dns_stop() {
	[[ -n ${DNS_DIR:-} ]] || DNS_DIR=$WORK/dns
	stop_pidfile dnsmasq "$DNS_DIR/dnsmasq.pid"
}
