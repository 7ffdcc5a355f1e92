package main

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/dns"
)

// TestNewDNSClient: the SRV resolver each combination of flags builds.
// With --dns-via-tor it is one server, over TCP, dialled through the
// SocksPort; dns.Client never reads resolv.conf when it has servers (see
// lookup's TestDNSClientViaSOCKS), so nothing else is ever asked.
func TestNewDNSClient(t *testing.T) {
	build := func(args ...string) (*dns.Client, error) {
		var got *dns.Client
		app := &cli.App{
			Flags:          []cli.Flag{dnsFlag, dnssecFlag, dnsViaTorFlag, socksFlag},
			ExitErrHandler: func(*cli.Context, error) {},
			Action: func(c *cli.Context) (err error) {
				got, err = newDNSClient(c)
				return err
			},
		}
		err := app.Run(append([]string{"onionmx"}, args...))
		return got, err
	}
	c, err := build()
	if err != nil || len(c.Servers) != 0 || c.TCP || c.Dial != nil || c.DNSSEC != dns.DNSSECOff {
		t.Errorf("default: %+v %v, want the system's resolvers", c, err)
	}
	c, err = build("--dns", "127.0.0.1:5353", "--dnssec", "require")
	if err != nil || !slices.Equal(c.Servers, []string{"127.0.0.1:5353"}) || c.TCP || c.Dial != nil || c.DNSSEC != dns.DNSSECRequire {
		t.Errorf("--dns: %+v %v", c, err)
	}
	c, err = build("--dns-via-tor", "9.9.9.9:53", "--socks", "unix:/run/tor/socks")
	if err != nil || !slices.Equal(c.Servers, []string{"9.9.9.9:53"}) || !c.TCP || c.Dial == nil || c.Timeout != dns.ViaTorTimeout {
		t.Errorf("--dns-via-tor: %+v %v, want 9.9.9.9:53 over TCP through Tor", c, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dns", "127.0.0.1:53", "--dns-via-tor", "9.9.9.9:53"}, "--dns and --dns-via-tor exclude each other"},
		{[]string{"--dns-via-tor", "9.9.9.9"}, `--dns-via-tor "9.9.9.9": want host:port`},
		{[]string{"--dns-via-tor", "9.9.9.9:0"}, `--dns-via-tor "9.9.9.9:0": bad port`},
		{[]string{"--dnssec", "on"}, `--dnssec "on": want off or require`},
		{[]string{"--socks", "nowhere"}, `--socks "nowhere": want host:port or unix:/path`},
	} {
		var cfg *configError
		if _, err := build(tc.args...); !errors.As(err, &cfg) || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: %v, want the configuration error %q", tc.args, err, tc.want)
		}
	}
}
