package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

// How SRV queries are sent: the flags of every command that looks routes
// up (deliver, lookup, socketmap, tcptable, srv-record), beside --dns.
var (
	dnssecFlag = &cli.StringFlag{Name: "dnssec", Value: "off",
		Usage: "DNSSEC `MODE`: off, or require (SRV records count only when the resolver sets the AD bit, i.e. validated them; use a validating resolver on this machine)"}
	dnsViaTorFlag = &cli.StringFlag{Name: "dns-via-tor",
		Usage: "send SRV queries as DNS over TCP through the Tor SocksPort (--socks) to the resolver `HOST:PORT`, never in the clear"}
	socksFlag = &cli.StringFlag{Name: "socks", Value: "127.0.0.1:9050",
		Usage: "Tor SocksPort `ADDR`: host:port or unix:/path"}
)

// newDNSClient builds the SRV resolver from --dns, --dns-via-tor, --socks
// and --dnssec: the system's resolvers (resolv.conf) by default, the --dns
// server, or with --dns-via-tor that resolver through Tor and nothing else.
// Errors are configuration errors.
func newDNSClient(c *cli.Context) (*lookup.DNSClient, error) {
	dnssec, err := lookup.ParseDNSSEC(c.String("dnssec"))
	if err != nil {
		return nil, deliver.ConfigError(err)
	}
	// Checked even when unused, as every flag is.
	socks, err := tor.ParseSOCKS(c.String("socks"))
	if err != nil {
		return nil, deliver.ConfigError(fmt.Errorf("--socks %w", err))
	}
	client := &lookup.DNSClient{DNSSEC: dnssec}
	addr, viaTor := c.String("dns"), c.String("dns-via-tor")
	switch {
	case addr != "" && viaTor != "":
		return nil, deliver.ConfigError(errors.New("--dns and --dns-via-tor exclude each other: with --dns-via-tor, SRV queries go through Tor only"))
	case viaTor != "":
		if err := checkHostPort(viaTor); err != nil {
			return nil, deliver.ConfigError(fmt.Errorf("--dns-via-tor %q: %v", viaTor, err))
		}
		// One server, TCP only, dialled through Tor with the SOCKS
		// credentials of that resolver (a circuit of its own): no UDP,
		// no other server, no fallback to the system's resolvers. The
		// resolver's name, if it is one, goes to Tor unresolved.
		client.Servers = []string{viaTor}
		client.TCP = true
		client.Dial = socks.DialContext
		client.Timeout = lookup.ViaTorDNSTimeout
	case addr != "":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, deliver.ConfigError(fmt.Errorf("--dns %q: want host:port", addr))
		}
		client.Servers = []string{addr}
	}
	return client, nil
}

// checkHostPort checks a "host:port" with a host and a non-zero port.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return errors.New("want host:port")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return errors.New("bad port")
	}
	return nil
}
