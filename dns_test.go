package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
	"github.com/onionmx/onionmx/lookup"
)

// runCmd runs the command line and returns its exit status and output.
func runCmd(stdin string, args ...string) (status int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	status = run(append([]string{"onionmx"}, args...), strings.NewReader(stdin), &out, &errOut)
	return status, out.String(), errOut.String()
}

// netstrings encodes socketmap requests for the onionmx map.
func netstrings(keys ...string) string {
	var b strings.Builder
	for _, k := range keys {
		req := "onionmx " + k
		fmt.Fprintf(&b, "%d:%s,", len(req), req)
	}
	return b.String()
}

const testMessage = "Subject: test\n\nbody\n"

// TestDNSSECRequire: with --dnssec require, SRV records count only when the
// resolver set the AD bit. deliver bounces an unauthenticated route with
// 5.4.4 "not authenticated", and the lookup servers answer NOTFOUND, so that
// Postfix's default transport takes the mail; an authenticated one is
// routed and delivered. With --dnssec off (the default) both are. The
// queries carry the DO bit only with require.
func TestDNSSECRequire(t *testing.T) {
	socks, onion, sink := fakeTor(t)
	dns := dnstest.New(t)
	dns.Set("_onion-mx._tcp.signed.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: onion}}, AD: true})
	dns.Set("_onion-mx._tcp.unsigned.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: onion}}})
	deliverTo := func(dnssec, rcpt string) (int, string, string) {
		return runCmd(testMessage, "deliver", "-f", "a@sender.test", "--socks", socks, "--helo", "h.test",
			"--dns", dns.Addr(), "--dnssec", dnssec, "--", rcpt)
	}

	status, out, errOut := deliverTo("require", "u@unsigned.example")
	if status != 68 || out != "" || !strings.HasPrefix(errOut, "5.4.4 no onion route for unsigned.example: ") ||
		!strings.Contains(errOut, "not authenticated") {
		t.Errorf("unsigned, require: exit %d, stdout %q, stderr %q; want 68 and 5.4.4 ... not authenticated", status, out, errOut)
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("%d messages delivered over an unauthenticated route", n)
	}
	if status, _, errOut := deliverTo("require", "u@signed.example"); status != 0 {
		t.Errorf("signed, require: exit %d, %s", status, errOut)
	}
	for _, q := range dns.Queries() {
		if !q.DO {
			t.Errorf("query %v without the DO bit", q)
		}
	}

	dns.Reset()
	for _, rcpt := range []string{"u@signed.example", "u@unsigned.example"} {
		if status, _, errOut := deliverTo("off", rcpt); status != 0 {
			t.Errorf("%s, off: exit %d, %s", rcpt, status, errOut)
		}
	}
	for _, q := range dns.Queries() {
		if q.DO {
			t.Errorf("query %v with the DO bit, --dnssec off", q)
		}
	}
	if n := len(sink.Messages()); n != 3 {
		t.Errorf("%d messages delivered, want 3", n)
	}

	// The socketmap, on stdin/stdout as under spawn(8).
	route := "OK onionmx:[" + onion + "]:25"
	ok := fmt.Sprintf("%d:%s,", len(route), route)
	for dnssec, want := range map[string]string{"require": ok + "9:NOTFOUND ,", "off": ok + ok} {
		status, out, _ := runCmd(netstrings("u@signed.example", "u@unsigned.example"), "socketmap", "--dns", dns.Addr(), "--dnssec", dnssec)
		if status != 0 || out != want {
			t.Errorf("socketmap --dnssec %s: exit %d, %q; want %q", dnssec, status, out, want)
		}
	}

	// The tcp table likewise; and lookup says why.
	status, out, _ = runCmd("get u@signed.example\nget u@unsigned.example\n", "tcptable", "--dns", dns.Addr(), "--dnssec", "require")
	if want := "200 onionmx:[" + onion + "]:25\n500 "; status != 0 || !strings.HasPrefix(out, want) {
		t.Errorf("tcptable: exit %d, %q; want %q...", status, out, want)
	}
	status, out, _ = runCmd("", "lookup", "--dns", dns.Addr(), "--dnssec", "require", "unsigned.example")
	if status != 1 || out != "# unsigned.example: NOTFOUND, Postfix uses its next table or its default transport: "+
		"no onion route for unsigned.example: DNS SRV _onion-mx._tcp.unsigned.example.: answer not authenticated by DNSSEC (the resolver did not set the AD bit)\n" {
		t.Errorf("lookup: exit %d, %q", status, out)
	}
}

// viaTorEnv is a fake Tor that relays CONNECTs to "dns.example:53" to a DNS
// server's TCP port and the onion to an SMTP sink; the DNS server publishes
// the onion for signed.example, with the AD bit.
type viaTorEnv struct {
	dns   *dnstest.Server
	socks *sockstest.Server
	sink  *smtptest.Sink
	onion string
}

const viaTorResolver = "dns.example:53"

func newViaTorEnv(t *testing.T) *viaTorEnv {
	e := &viaTorEnv{dns: dnstest.New(t), sink: smtptest.New(t), onion: oniontest.New()}
	e.dns.Set("_onion-mx._tcp.signed.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: e.onion}}, AD: true})
	e.socks = sockstest.New(t, func(r sockstest.Request) sockstest.Response {
		switch r.Addr() {
		case viaTorResolver:
			return sockstest.Response{Dial: e.dns.Addr()}
		case e.onion + ":25":
			return sockstest.Response{Dial: e.sink.Addr}
		}
		return sockstest.Response{Reply: 0xF0}
	})
	return e
}

func (e *viaTorEnv) connects() []string {
	var out []string
	for _, r := range e.socks.Requests() {
		out = append(out, r.Addr())
	}
	return out
}

// TestDNSViaTor: with --dns-via-tor the SRV query goes as DNS over TCP
// through the SocksPort: the proxy sees a CONNECT to the resolver, by
// name (Tor resolves it, not us), with credentials of its own (a circuit
// of its own), and then the one to the onion; the resolver sees TCP
// queries only.
func TestDNSViaTor(t *testing.T) {
	e := newViaTorEnv(t)
	status, out, errOut := runCmd("", "lookup", "--dns-via-tor", viaTorResolver, "--socks", e.socks.Addr, "--dnssec", "require", "signed.example")
	if status != 0 || !strings.HasPrefix(out, "signed.example\tonionmx:["+e.onion+"]:25\t") {
		t.Errorf("lookup: exit %d, %q %q", status, out, errOut)
	}
	if got := e.connects(); !slices.Equal(got, []string{viaTorResolver}) {
		t.Errorf("CONNECTs %v, want the resolver only", got)
	}
	if r := e.socks.Requests()[0]; r.ATYP != 3 || r.User != "onionmx" || r.Password != viaTorResolver {
		t.Errorf("CONNECT %+v: want the name unresolved and the resolver's own credentials", r)
	}

	status, out, errOut = runCmd(testMessage, "deliver", "-f", "a@sender.test", "--socks", e.socks.Addr, "--helo", "h.test",
		"--dns-via-tor", viaTorResolver, "--dnssec", "require", "--", "u@signed.example")
	if status != 0 {
		t.Fatalf("deliver: exit %d, %q %q", status, out, errOut)
	}
	if got := e.connects(); !slices.Equal(got, []string{viaTorResolver, viaTorResolver, e.onion + ":25"}) {
		t.Errorf("CONNECTs %v, want the resolver, then the onion", got)
	}
	if n := len(e.sink.Messages()); n != 1 {
		t.Errorf("%d messages delivered", n)
	}
	qs := e.dns.Queries()
	if len(qs) != 2 {
		t.Errorf("queries %v, want 2", qs)
	}
	for _, q := range qs {
		if q.Net != "tcp" || !q.DO {
			t.Errorf("query %v, want TCP only, with DO", q)
		}
	}
}

// TestDNSViaTorProxyDown: with --dns-via-tor and the SocksPort down, the
// answer is unknown — 4.4.3, TEMP, 75 — and never a lookup some other way.
func TestDNSViaTorProxyDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()

	status, _, errOut := runCmd(testMessage, "deliver", "-f", "a@sender.test", "--socks", down, "--helo", "h.test",
		"--dns-via-tor", viaTorResolver, "--", "u@signed.example")
	if status != 75 || !strings.HasPrefix(errOut, "4.4.3 cannot find onion route for signed.example: DNS SRV _onion-mx._tcp.signed.example.: ") {
		t.Errorf("deliver: exit %d, %q; want 75 and 4.4.3", status, errOut)
	}
	status, out, _ := runCmd("", "lookup", "--dns-via-tor", viaTorResolver, "--socks", down, "signed.example")
	if status != 75 || !strings.HasPrefix(out, "# signed.example: TEMP, Postfix defers the mail: ") {
		t.Errorf("lookup: exit %d, %q; want 75 and TEMP", status, out)
	}
	status, out, _ = runCmd(netstrings("u@signed.example"), "socketmap", "--dns-via-tor", viaTorResolver, "--socks", down)
	if status != 0 || !strings.Contains(out, ":TEMP ") {
		t.Errorf("socketmap: exit %d, %q; want TEMP", status, out)
	}
}

// TestNewDNSClient: the SRV resolver each combination of flags builds.
// With --dns-via-tor it is one server, over TCP, dialled through the
// SocksPort; DNSClient never reads resolv.conf when it has servers (see
// lookup's TestDNSClientViaSOCKS), so nothing else is ever asked.
func TestNewDNSClient(t *testing.T) {
	build := func(args ...string) (*lookup.DNSClient, error) {
		var got *lookup.DNSClient
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
	if err != nil || len(c.Servers) != 0 || c.TCP || c.Dial != nil || c.DNSSEC != lookup.DNSSECOff {
		t.Errorf("default: %+v %v, want the system's resolvers", c, err)
	}
	c, err = build("--dns", "127.0.0.1:5353", "--dnssec", "require")
	if err != nil || !slices.Equal(c.Servers, []string{"127.0.0.1:5353"}) || c.TCP || c.Dial != nil || c.DNSSEC != lookup.DNSSECRequire {
		t.Errorf("--dns: %+v %v", c, err)
	}
	c, err = build("--dns-via-tor", "9.9.9.9:53", "--socks", "unix:/run/tor/socks")
	if err != nil || !slices.Equal(c.Servers, []string{"9.9.9.9:53"}) || !c.TCP || c.Dial == nil || c.Timeout != lookup.ViaTorDNSTimeout {
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
