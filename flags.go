package main

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/dns"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

// The flags and constructors that several commands share: the Tor
// SocksPort, the DNS client, the static maps and the route resolver, the
// EHLO name, and durations. Their errors are configErrors, worded with the
// flag that was wrong: the libraries say what is wrong with a value, the
// command line knows which flag gave it.

// Flags shared by the commands that resolve routes.
var (
	mapFlag = &cli.StringSliceFlag{Name: "map", Usage: "static map `FILE` (Postfix transport text, or the community YAML if it ends in .yml/.yaml); may be repeated, first match wins"}
	dnsFlag = &cli.StringFlag{Name: "dns", Usage: "DNS server `HOST:PORT` for SRV lookups (default: the system's resolvers)"}
	// transportFlag names onionmx's own master.cf service: the lookup
	// servers answer with it, and static-map entries for it are onionmx's
	// to judge.
	transportFlag = &cli.StringFlag{Name: "transport", Value: "onionmx", Usage: "the master.cf transport `NAME` of onionmx deliver"}
	// How SRV queries are sent: the flags of every command that looks
	// routes up (deliver, lookup, socketmap, tcptable, srv-record), beside
	// --dns.
	dnssecFlag = &cli.StringFlag{Name: "dnssec", Value: "off",
		Usage: "DNSSEC `MODE`: off, or require (SRV records count only when the resolver sets the AD bit, i.e. validated them; use a validating resolver on this machine)"}
	dnsViaTorFlag = &cli.StringFlag{Name: "dns-via-tor",
		Usage: "send SRV queries as DNS over TCP through the Tor SocksPort (--socks) to the resolver `HOST:PORT`, never in the clear"}
	socksFlag = &cli.StringFlag{Name: "socks", Value: "127.0.0.1:9050",
		Usage: "Tor SocksPort `ADDR`: host:port or unix:/path"}
)

// routeFlags are the flags of lookup, socketmap and tcptable; --map and
// the DNS flags are those of deliver, so that routing and delivery see
// the same routes. --socks is used only with --dns-via-tor.
func routeFlags() []cli.Flag {
	return []cli.Flag{
		mapFlag,
		dnsFlag,
		dnssecFlag,
		dnsViaTorFlag,
		socksFlag,
		transportFlag,
		&cli.StringSliceFlag{Name: "self", Usage: "our own `DOMAIN`, never routed over Tor (\".example.org\": its subdomains); may be repeated"},
	}
}

// heloName returns --helo, or this host's fully qualified name as Postfix
// forms its myhostname. guessed is set when the name was formed from a
// host name without a domain ("vm.localdomain").
func heloName(c *cli.Context) (name string, guessed bool) {
	// Given, even empty, it is the name: an empty one is an error
	// (checkHelo), not a request for a guess.
	if c.IsSet("helo") {
		return c.String("helo"), false
	}
	name, qualified := deliver.Hostname()
	return name, !qualified
}

// checkHelo checks the EHLO name: one word of printable ASCII.
func checkHelo(name string) error {
	if name == "" {
		return errors.New("--helo: empty EHLO name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f {
			return fmt.Errorf("--helo %q: an EHLO name is one word of printable ASCII", name)
		}
	}
	return nil
}

// newResolver builds the route resolver from --map and the DNS flags
// (newDNSClient). A map that cannot be read or parsed as a whole is a
// configuration error; its bad entries are not (Map.Problems), they are
// errors for the domains they cover. --transport, for the commands that
// have it, says which map entries are onionmx's.
func newResolver(c *cli.Context) (*lookup.Resolver, error) {
	r := &lookup.Resolver{}
	transport := lookup.DefaultTransport
	if t := c.String("transport"); t != "" {
		transport = t
	}
	for _, path := range c.StringSlice("map") {
		m, err := lookup.LoadMapFor(path, transport)
		if err != nil {
			var me *lookup.MapError
			if errors.As(err, &me) && me.Text != "" {
				err = fmt.Errorf("%w (--map %s)", err, me.Text)
			}
			return nil, badConfig(err)
		}
		r.Maps = append(r.Maps, m)
	}
	client, err := newDNSClient(c)
	if err != nil {
		return nil, err
	}
	r.DNS = client
	return r, nil
}

// newDNSClient builds the SRV resolver from --dns, --dns-via-tor, --socks
// and --dnssec: the system's resolvers (resolv.conf) by default, the --dns
// server, or with --dns-via-tor that resolver through Tor and nothing else.
func newDNSClient(c *cli.Context) (*dns.Client, error) {
	dnssec, err := dns.ParseDNSSEC(c.String("dnssec"))
	if err != nil {
		return nil, badConfig(flagError("dnssec", c.String("dnssec"), err))
	}
	// Checked even when unused, as every flag is.
	socks, err := socksDialer(c)
	if err != nil {
		return nil, badConfig(err)
	}
	client := &dns.Client{DNSSEC: dnssec}
	addr, viaTor := c.String("dns"), c.String("dns-via-tor")
	switch {
	case addr != "" && viaTor != "":
		return nil, badConfig(errors.New("--dns and --dns-via-tor exclude each other: with --dns-via-tor, SRV queries go through Tor only"))
	case viaTor != "":
		if err := checkHostPort(viaTor); err != nil {
			return nil, badConfig(flagError("dns-via-tor", viaTor, err))
		}
		// One server, TCP only, dialled through Tor with the SOCKS
		// credentials of that resolver (a circuit of its own): no UDP,
		// no other server, no fallback to the system's resolvers. The
		// resolver's name, if it is one, goes to Tor unresolved.
		client.Servers = []string{viaTor}
		client.TCP = true
		client.Dial = socks.DialContext
		client.Timeout = dns.ViaTorTimeout
	case addr != "":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, badConfig(flagError("dns", addr, errors.New("want host:port")))
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

// durationFlag is a flag for a duration, like cli.DurationFlag, whose
// errors say what is wrong: "5" lacks a unit.
func durationFlag(name string, value time.Duration, usage string) *cli.GenericFlag {
	d := durationValue(value)
	return &cli.GenericFlag{Name: name, Value: &d, Usage: usage}
}

// duration returns the value of a durationFlag.
func duration(c *cli.Context, name string) time.Duration {
	if d, ok := c.Generic(name).(*durationValue); ok {
		return time.Duration(*d)
	}
	return 0
}

type durationValue time.Duration

func (d *durationValue) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return fmt.Errorf("a duration needs a unit, such as %ss or %sm", s, s)
		}
		return errors.New("want a duration such as 30s, 5m or 1h30m")
	}
	*d = durationValue(v)
	return nil
}

func (d *durationValue) String() string { return time.Duration(*d).String() }

// socksDialer is --socks, Tor's SocksPort, for every command.
func socksDialer(c *cli.Context) (*tor.SOCKSDialer, error) {
	d, err := tor.ParseSOCKS(c.String("socks"))
	if err != nil {
		return nil, fmt.Errorf("--socks %w", err)
	}
	return d, nil
}
