package deliver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/dns"
	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

// routeEnv is a sender whose routes come from a recording DNS server, with
// a proxy that knows several onions: each a sink, or a SOCKS failure.
type routeEnv struct {
	dns    *dnstest.Server
	socks  *sockstest.Server
	client *deliver.Client
	sinks  map[string]*smtptest.Sink
}

func newRouteEnv(t *testing.T, failing map[string]byte, onions ...string) *routeEnv {
	r := &routeEnv{dns: dnstest.New(t), sinks: map[string]*smtptest.Sink{}}
	for _, o := range onions {
		r.sinks[o] = smtptest.New(t)
	}
	r.socks = sockstest.New(t, func(req sockstest.Request) sockstest.Response {
		if code, ok := failing[req.Host]; ok {
			return sockstest.Response{Reply: code}
		}
		if s, ok := r.sinks[req.Host]; ok {
			return sockstest.Response{Dial: s.Addr}
		}
		return sockstest.Response{Reply: 0xF0}
	})
	r.client = &deliver.Client{
		Dialer:         &tor.SOCKSDialer{Network: "tcp", Addr: r.socks.Addr},
		Resolver:       &lookup.Resolver{DNS: &dns.Client{Servers: []string{r.dns.Addr()}}},
		Helo:           "sender.test",
		CommandTimeout: 5 * time.Second,
	}
	return r
}

func (r *routeEnv) deliver(t *testing.T, nexthop string, rcpt string) (*deliver.Result, error) {
	r.client.Timeout = 3 * time.Second
	return r.client.Deliver(context.Background(), nexthop, &deliver.Message{
		Sender: "a@sender.test", Recipients: []string{rcpt}, Body: strings.NewReader(testBody),
	})
}

func (r *routeEnv) connects() []string {
	var out []string
	for _, q := range r.socks.Requests() {
		out = append(out, q.Addr())
	}
	return out
}

// TestSRVOrderAndFailover: targets are tried in RFC 2782 priority order,
// unusable ones are skipped without a connection, and a temporary failure
// moves on to the next target.
func TestSRVOrderAndFailover(t *testing.T) {
	down, busy, good, unused := oniontest.New(), oniontest.New(), oniontest.New(), oniontest.New()
	r := newRouteEnv(t, map[string]byte{down: 0xF2}, busy, good, unused)
	r.sinks[busy].SetHooks(smtptest.Hooks{Hello: func(*smtp.Conn) error {
		return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "busy"}
	}})
	r.dns.SetSRV("_onion-mx._tcp.example.org.",
		dnstest.SRV{Priority: 40, Port: 25, Target: unused},
		dnstest.SRV{Priority: 30, Port: 2525, Target: good},
		dnstest.SRV{Priority: 20, Port: 25, Target: busy},
		dnstest.SRV{Priority: 15, Port: 25, Target: "mx.example.org."},
		dnstest.SRV{Priority: 12, Port: 25, Target: "expyuzz4wqqyqhjn.onion."},
		dnstest.SRV{Priority: 10, Port: 25, Target: down},
	)
	res, err := r.deliver(t, "", "user@Example.ORG")
	if err != nil {
		t.Fatal(err)
	}
	if res.Target.Host != good || res.Target.Port != 2525 {
		t.Errorf("delivered to %v, want %s:2525", res.Target, good)
	}
	want := []string{down + ":25", busy + ":25", good + ":2525"}
	if got := r.connects(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("CONNECTs %v, want %v (the clear-net and v2 targets never)", got, want)
	}
	if n := len(r.sinks[good].Messages()); n != 1 {
		t.Errorf("%d messages at the good target", n)
	}
	if q := r.dns.Names(); len(q) != 1 || q[0] != "_onion-mx._tcp.example.org." {
		t.Errorf("DNS queries %v, want exactly _onion-mx._tcp.example.org. (fully qualified: no search domains)", q)
	}
}

// TestNoFailoverAfterPermanent: a permanent answer from one target is the
// answer; the next is not asked.
func TestNoFailoverAfterPermanent(t *testing.T) {
	first, second := oniontest.New(), oniontest.New()
	r := newRouteEnv(t, nil, first, second)
	r.sinks[first].SetHooks(smtptest.Hooks{Rcpt: func(*smtp.Conn, string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "unknown"}
	}})
	r.dns.SetSRV("_onion-mx._tcp.example.org.",
		dnstest.SRV{Priority: 1, Port: 25, Target: first},
		dnstest.SRV{Priority: 2, Port: 25, Target: second})
	_, err := r.deliver(t, "example.org", "user@example.org")
	if e := deliver.AsError(err); err == nil || e.Status != "5.1.1" {
		t.Fatalf("got %v, want 5.1.1", err)
	}
	if got := r.connects(); len(got) != 1 {
		t.Errorf("CONNECTs %v, want only the first target", got)
	}
}

// TestNoDNSWithoutNeed: a literal nexthop, an onion domain and a mapped
// domain make no DNS query at all; pinned routes must not leak.
func TestNoDNSWithoutNeed(t *testing.T) {
	a := oniontest.New()
	r := newRouteEnv(t, nil, a)
	m, err := lookup.ParseTransportMap("map", strings.NewReader("pinned.example smtptor:["+a+"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	r.client.Resolver.Maps = []*lookup.Map{m}
	r.dns.SetSRV("_onion-mx._tcp.pinned.example.", dnstest.SRV{Port: 25, Target: oniontest.New()})
	for _, tc := range []struct{ nexthop, rcpt string }{
		{"[" + a + "]:25", "user@example.org"},
		{"[" + a + "]", "user@" + a},
		{a, "user@example.org"},
		{"", "user@" + a},
		{"", "user@pinned.example"},
		{"pinned.example", "user@other.example"},
	} {
		if _, err := r.deliver(t, tc.nexthop, tc.rcpt); err != nil {
			t.Errorf("nexthop %q rcpt %s: %v", tc.nexthop, tc.rcpt, err)
		}
	}
	if q := r.dns.Queries(); len(q) != 0 {
		t.Errorf("DNS queries %v, want none", q)
	}
	if n := len(r.sinks[a].Messages()); n != 6 {
		t.Errorf("%d messages delivered, want 6", n)
	}
}

// TestDNSFailures: no record is permanent (5.4.4, saying what was looked
// up); a failure to get an answer is temporary (4.4.3), so that mail waits
// and never leaves over the clear net.
func TestDNSFailures(t *testing.T) {
	r := newRouteEnv(t, nil)
	r.dns.Set("_onion-mx._tcp.nx.example.", dnstest.NXDomain)
	r.dns.Set("_onion-mx._tcp.nodata.example.", dnstest.NoData)
	r.dns.SetSRV("_onion-mx._tcp.dot.example.", dnstest.SRV{Target: "."})
	r.dns.SetSRV("_onion-mx._tcp.clear.example.", dnstest.SRV{Port: 25, Target: "mx.clear.example."})
	r.dns.Set("_onion-mx._tcp.servfail.example.", dnstest.ServFail)
	r.dns.Set("_onion-mx._tcp.timeout.example.", dnstest.Timeout)
	for _, tc := range []struct {
		domain, status string
		exit           int
		text           string
	}{
		{"nx.example", "5.4.4", 68, "no onion route for nx.example: DNS SRV _onion-mx._tcp.nx.example."},
		{"nodata.example", "5.4.4", 68, "_onion-mx._tcp.nodata.example."},
		{"dot.example", "5.4.4", 68, "RFC 2782"},
		{"clear.example", "5.4.4", 68, "mx.clear.example:25: not a .onion name"},
		{"servfail.example", "4.4.3", 75, "_onion-mx._tcp.servfail.example."},
		{"timeout.example", "4.4.3", 75, "_onion-mx._tcp.timeout.example."},
	} {
		_, err := r.deliver(t, "", "user@"+tc.domain)
		e := deliver.AsError(err)
		if err == nil || e.Status != tc.status || e.Exit() != tc.exit || !strings.Contains(e.Error(), tc.text) {
			t.Errorf("%s: got %v (exit %d), want %s exit %d with %q", tc.domain, err, e.Exit(), tc.status, tc.exit, tc.text)
		}
	}
	if n := len(r.socks.Requests()); n != 0 {
		t.Errorf("%d CONNECTs without a route", n)
	}
}

// TestMapConfiguration: what only the configuration can cause defers
// (4.3.5) and names where to fix it, with no DNS query and no connection:
// a map entry that pins a domain to an unusable onion, one that routes it
// to another transport (Postfix sent it here all the same); and a nexthop
// list, as the lookup servers answer for an entry with several onions, is
// tried in its order.
func TestMapConfiguration(t *testing.T) {
	down, good := oniontest.New(), oniontest.New()
	r := newRouteEnv(t, map[string]byte{down: 0xF2}, good)
	m, err := lookup.ParseTransportMap("transport", strings.NewReader(
		"typo.example onionmx:["+typo(good)+"]\n"+
			"relayed.example smtp:[relay.example]:587\n"+
			"two.example onionmx:["+down+"]:25, ["+good+"]:2525\n"))
	if err != nil {
		t.Fatal(err)
	}
	r.client.Resolver.Maps = []*lookup.Map{m}
	for _, tc := range []struct{ rcpt, text string }{
		{"u@typo.example", "transport:1: "},
		{"u@relayed.example", "configuration mismatch: transport:2: "},
	} {
		_, err := r.deliver(t, "", tc.rcpt)
		if e := deliver.AsError(err); err == nil || e.Status != "4.3.5" || e.Exit() != 78 || !strings.HasPrefix(e.Msg, tc.text) {
			t.Errorf("%s: got %v, want 4.3.5 %s...", tc.rcpt, err, tc.text)
		}
	}
	res, err := r.deliver(t, "["+down+"]:25,["+good+"]:2525", "u@two.example")
	if err != nil || res.Target.Host != good {
		t.Fatalf("nexthop list: %v, %+v; want delivered to the second onion", err, res)
	}
	_, err = r.deliver(t, "["+good+"]:25, [mx.example.org]", "u@two.example")
	if e := deliver.AsError(err); err == nil || e.Status != "4.3.5" {
		t.Errorf("a list with a clear-net host: got %v, want 4.3.5", err)
	}
	if q := r.dns.Queries(); len(q) != 0 {
		t.Errorf("DNS queries %v, want none", q)
	}
	if got := r.connects(); strings.Join(got, " ") != down+":25 "+good+":2525" {
		t.Errorf("CONNECTs %v, want only the list's", got)
	}
}
