package dns

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/net/proxy"

	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// newTarget returns a fresh SRV target name. The client passes targets on
// as DNS gives them; whether they are usable onions is package lookup's
// to judge.
func newTarget() string {
	b := make([]byte, 16)
	crand.Read(b)
	return hex.EncodeToString(b) + ".onion"
}

func lookupSRV(t *testing.T, c *Client, name string) ([]*net.SRV, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, srvs, err := c.LookupSRV(ctx, "", "", name)
	return srvs, err
}

func nets(qs []dnstest.Query) []string {
	var out []string
	for _, q := range qs {
		out = append(out, q.Net)
	}
	return out
}

// TestDNSClientAnswers: how each kind of answer comes back, in the terms
// Resolver reads (*net.DNSError, IsNotFound), and what the queries look
// like: UDP, EDNS(0), no DO bit without --dnssec require.
func TestDNSClientAnswers(t *testing.T) {
	dns := dnstest.New(t)
	o1, o2 := newTarget(), newTarget()
	dns.SetSRV("_onion-mx._tcp.example.org.",
		dnstest.SRV{Priority: 10, Weight: 1, Port: 2525, Target: o2},
		dnstest.SRV{Priority: 0, Weight: 5, Port: 25, Target: o1})
	dns.Set("_onion-mx._tcp.nodata.example.", dnstest.NoData)
	dns.Set("_onion-mx._tcp.servfail.example.", dnstest.ServFail)
	dns.Set("_onion-mx._tcp.refused.example.", dnstest.Refused)
	dns.Set("_onion-mx._tcp.dead.example.", dnstest.Timeout)
	dns.SetSRV("_onion-mx._tcp.dot.example.", dnstest.SRV{Target: "."})
	c := &Client{Servers: []string{dns.Addr()}, Timeout: 300 * time.Millisecond, Attempts: 1}

	srvs, err := lookupSRV(t, c, "_onion-mx._tcp.Example.ORG")
	if err != nil || len(srvs) != 2 {
		t.Fatalf("got %v, %v", srvs, err)
	}
	// In the order of the answer, targets with their trailing dot, as
	// Go's resolver returns them; Resolver orders them.
	if *srvs[0] != (net.SRV{Target: o2 + ".", Port: 2525, Priority: 10, Weight: 1}) ||
		*srvs[1] != (net.SRV{Target: o1 + ".", Port: 25, Priority: 0, Weight: 5}) {
		t.Errorf("records %+v %+v", *srvs[0], *srvs[1])
	}
	if srvs, err := lookupSRV(t, c, "_onion-mx._tcp.dot.example."); err != nil || len(srvs) != 1 || srvs[0].Target != "." {
		t.Errorf("dot: %v %v", srvs, err)
	}
	if srvs, err := lookupSRV(t, c, "_onion-mx._tcp.nodata.example."); err != nil || len(srvs) != 0 {
		t.Errorf("NODATA: %v %v, want no records and no error", srvs, err)
	}

	for _, tc := range []struct {
		name               string
		notFound, timedOut bool
		text               string
	}{
		{"_onion-mx._tcp.nxdomain.example.", true, false, "NXDOMAIN"},
		{"_onion-mx._tcp.servfail.example.", false, false, "answered SERVFAIL"},
		{"_onion-mx._tcp.refused.example.", false, false, "answered REFUSED"},
		{"_onion-mx._tcp.dead.example.", false, true, "timed out"},
	} {
		_, err := lookupSRV(t, c, tc.name)
		var de *net.DNSError
		if !errors.As(err, &de) || de.IsNotFound != tc.notFound || de.IsTimeout != tc.timedOut ||
			!strings.Contains(de.Err, tc.text) || de.Server != dns.Addr() {
			t.Errorf("%s: %#v, want IsNotFound %v, IsTimeout %v, %q", tc.name, err, tc.notFound, tc.timedOut, tc.text)
		}
	}

	for _, q := range dns.Queries() {
		if q.Net != "udp" || q.Type != dnsmessage.TypeSRV || !q.EDNS || q.DO {
			t.Errorf("query %v: want SRV over UDP, EDNS(0), no DO bit", q)
		}
	}
}

// TestDNSClientInvalidName: junk never becomes a query.
func TestDNSClientInvalidName(t *testing.T) {
	dns := dnstest.New(t)
	c := &Client{Servers: []string{dns.Addr()}}
	for _, name := range []string{"a b.example", "a..example", strings.Repeat("a", 64) + ".example", "x\x00.example", strings.Repeat("abcdefg.", 40)} {
		_, err := lookupSRV(t, c, name)
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("%q: %v, want not found", name, err)
		}
	}
	if q := dns.Queries(); len(q) != 0 {
		t.Errorf("queries %v", q)
	}
}

// TestDNSClientTruncated: a truncated UDP answer is asked again over TCP.
func TestDNSClientTruncated(t *testing.T) {
	dns := dnstest.New(t)
	o := newTarget()
	dns.Set("_onion-mx._tcp.big.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: o}}, Truncate: true})
	c := &Client{Servers: []string{dns.Addr()}}
	srvs, err := lookupSRV(t, c, "_onion-mx._tcp.big.example.")
	if err != nil || len(srvs) != 1 || srvs[0].Target != o+"." {
		t.Fatalf("%v %v", srvs, err)
	}
	if got := nets(dns.Queries()); !slices.Equal(got, []string{"udp", "tcp"}) {
		t.Errorf("transports %v, want udp then tcp", got)
	}
}

// TestDNSClientTCP: with TCP set, no query goes over UDP.
func TestDNSClientTCP(t *testing.T) {
	dns := dnstest.New(t)
	dns.SetSRV("_onion-mx._tcp.example.org.", dnstest.SRV{Port: 25, Target: newTarget()})
	c := &Client{Servers: []string{dns.Addr()}, TCP: true}
	for _, name := range []string{"_onion-mx._tcp.example.org.", "_onion-mx._tcp.nx.example."} {
		lookupSRV(t, c, name)
	}
	if got := nets(dns.Queries()); !slices.Equal(got, []string{"tcp", "tcp"}) {
		t.Errorf("transports %v, want tcp only", got)
	}
}

// TestDNSClientFailover: a server that fails (SERVFAIL, silence) sends the
// query on to the next; NXDOMAIN is an answer, and ends the lookup.
func TestDNSClientFailover(t *testing.T) {
	bad, silent, good := dnstest.New(t), dnstest.New(t), dnstest.New(t)
	bad.SetDefault(dnstest.ServFail)
	silent.SetDefault(dnstest.Timeout)
	o := newTarget()
	good.SetSRV("_onion-mx._tcp.example.org.", dnstest.SRV{Port: 25, Target: o})
	c := &Client{Servers: []string{bad.Addr(), silent.Addr(), good.Addr()}, Timeout: 200 * time.Millisecond, Attempts: 2}
	if srvs, err := lookupSRV(t, c, "_onion-mx._tcp.example.org."); err != nil || len(srvs) != 1 {
		t.Fatalf("%v %v", srvs, err)
	}
	if n1, n2, n3 := len(bad.Queries()), len(silent.Queries()), len(good.Queries()); n1 != 1 || n2 != 1 || n3 != 1 {
		t.Errorf("queries %d %d %d, want one each", n1, n2, n3)
	}

	// NXDOMAIN from the first server: nobody else is asked.
	nx := dnstest.New(t)
	c.Servers = []string{nx.Addr(), good.Addr()}
	good.Reset()
	_, err := lookupSRV(t, c, "_onion-mx._tcp.example.org.")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsNotFound || len(good.Queries()) != 0 {
		t.Errorf("%v, %d queries to the second server; want NXDOMAIN from the first and none", err, len(good.Queries()))
	}

	// Every server failing, every attempt: a temporary error, each server
	// asked Attempts times.
	bad.Reset()
	c.Servers = []string{bad.Addr(), bad.Addr()}
	_, err = lookupSRV(t, c, "_onion-mx._tcp.example.org.")
	if !errors.As(err, &de) || de.IsNotFound || !de.IsTemporary || len(bad.Queries()) != 4 {
		t.Errorf("%v after %d queries; want a temporary error after 4", err, len(bad.Queries()))
	}
}

// TestDNSClientDNSSEC: with DNSSEC required, the query has the DO bit and
// the records count only with the AD bit; without, the AD bit is ignored.
func TestDNSClientDNSSEC(t *testing.T) {
	dns := dnstest.New(t)
	o := newTarget()
	dns.Set("_onion-mx._tcp.signed.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: o}}, AD: true})
	dns.Set("_onion-mx._tcp.unsigned.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: o}}})
	dns.Set("_onion-mx._tcp.nodata.example.", dnstest.NoData)
	c := &Client{Servers: []string{dns.Addr()}, DNSSEC: DNSSECRequire}

	if srvs, err := lookupSRV(t, c, "_onion-mx._tcp.signed.example."); err != nil || len(srvs) != 1 {
		t.Errorf("signed: %v %v", srvs, err)
	}
	srvs, err := lookupSRV(t, c, "_onion-mx._tcp.unsigned.example.")
	if !errors.Is(err, ErrNotAuthenticated) || len(srvs) != 0 || !strings.Contains(err.Error(), "not authenticated") {
		t.Errorf("unsigned: %v %v, want ErrNotAuthenticated and no records", srvs, err)
	}
	// No records and no name are what they are, authenticated or not.
	if srvs, err := lookupSRV(t, c, "_onion-mx._tcp.nodata.example."); err != nil || len(srvs) != 0 {
		t.Errorf("nodata: %v %v", srvs, err)
	}
	var de *net.DNSError
	if _, err := lookupSRV(t, c, "_onion-mx._tcp.nx.example."); !errors.As(err, &de) || !de.IsNotFound {
		t.Errorf("nxdomain: %v", err)
	}
	for _, q := range dns.Queries() {
		if !q.DO {
			t.Errorf("query %v without the DO bit", q)
		}
	}

	dns.Reset()
	c.DNSSEC = DNSSECOff
	if srvs, err := lookupSRV(t, c, "_onion-mx._tcp.unsigned.example."); err != nil || len(srvs) != 1 {
		t.Errorf("unsigned, DNSSEC off: %v %v", srvs, err)
	}
	if q := dns.Queries(); len(q) != 1 || q[0].DO {
		t.Errorf("queries %v, want one without DO", q)
	}

}

// TestReadResolvConf: the nameserver lines and options that count, with
// glibc's limits.
func TestReadResolvConf(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		text string
		want ResolvConf
	}{
		{"", ResolvConf{Servers: []string{"127.0.0.1:53", "[::1]:53"}, Timeout: 5 * time.Second, Attempts: 2}},
		{"# comment\nsearch example.org\nnameserver 192.0.2.1\nnameserver 2001:db8::1 # v6\nnameserver fe80::1%eth0\nnameserver 192.0.2.4\n",
			ResolvConf{Servers: []string{"192.0.2.1:53", "[2001:db8::1]:53", "[fe80::1%eth0]:53"}, Timeout: 5 * time.Second, Attempts: 2}},
		{"nameserver not-an-ip\nnameserver\nnameserver 10.0.0.1\noptions ndots:2 timeout:1 attempts:3 rotate\noptions use-vc trust-ad",
			ResolvConf{Servers: []string{"10.0.0.1:53"}, Timeout: time.Second, Attempts: 3, UseVC: true, TrustAD: true}},
		{"nameserver 10.0.0.1\noptions timeout:0 attempts:0", ResolvConf{Servers: []string{"10.0.0.1:53"}, Timeout: time.Second, Attempts: 1}},
		{"nameserver 10.0.0.1\noptions timeout:100 attempts:100 ; comment", ResolvConf{Servers: []string{"10.0.0.1:53"}, Timeout: 30 * time.Second, Attempts: 5}},
	} {
		path := filepath.Join(dir, "resolv.conf")
		os.WriteFile(path, []byte(tc.text), 0o644)
		rc, err := ReadResolvConf(path)
		if err != nil || !slices.Equal(rc.Servers, tc.want.Servers) || rc.Timeout != tc.want.Timeout ||
			rc.Attempts != tc.want.Attempts || rc.UseVC != tc.want.UseVC || rc.TrustAD != tc.want.TrustAD {
			t.Errorf("%q: %+v, %v; want %+v", tc.text, rc, err, tc.want)
		}
	}
	if rc, err := ReadResolvConf(filepath.Join(dir, "missing")); err != nil || len(rc.Servers) != 2 {
		t.Errorf("missing file: %+v %v, want the local server", rc, err)
	}
	if _, err := ReadResolvConf(dir); err == nil {
		t.Error("a directory read as resolv.conf")
	}
}

// TestDNSClientSystem: without Servers the client asks resolv.conf's
// servers, with its options; a system resolver's AD bit is believed when it
// runs on this machine or resolv.conf says "options trust-ad", as glibc
// does. Dial maps resolv.conf's port 53 to the test server.
func TestDNSClientSystem(t *testing.T) {
	dns := dnstest.New(t)
	o := newTarget()
	dns.Set("_onion-mx._tcp.signed.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: o}}, AD: true})
	var mu sync.Mutex
	var dialled []string
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialled = append(dialled, network+" "+addr)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, dns.Addr())
	}
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	c := &Client{ResolvConf: conf, Dial: dial, DNSSEC: DNSSECRequire}
	for _, tc := range []struct {
		text    string
		ok      bool
		dialled string
	}{
		{"nameserver 127.0.0.1\n", true, "udp 127.0.0.1:53"},
		{"nameserver ::1\n", true, "udp [::1]:53"},
		{"nameserver 192.0.2.1\n", false, "udp 192.0.2.1:53"},
		{"nameserver 192.0.2.1\noptions trust-ad\n", true, "udp 192.0.2.1:53"},
		{"nameserver 192.0.2.1\noptions trust-ad use-vc\n", true, "tcp 192.0.2.1:53"},
	} {
		os.WriteFile(conf, []byte(tc.text), 0o644)
		dialled = nil
		srvs, err := lookupSRV(t, c, "_onion-mx._tcp.signed.example.")
		switch {
		case tc.ok && (err != nil || len(srvs) != 1):
			t.Errorf("%q: %v %v, want the record", tc.text, srvs, err)
		case !tc.ok && (!errors.Is(err, ErrNotAuthenticated) || !strings.Contains(err.Error(), `no "options trust-ad"`)):
			t.Errorf("%q: %v %v, want not authenticated for want of trust-ad", tc.text, srvs, err)
		}
		if len(dialled) != 1 || dialled[0] != tc.dialled {
			t.Errorf("%q: dialled %v, want %s", tc.text, dialled, tc.dialled)
		}
	}
}

// TestDNSClientViaSOCKS: DNS over TCP through a SOCKS proxy, as
// --dns-via-tor configures it: the proxy sees a CONNECT to the resolver and
// nothing else, the resolver sees TCP queries only, and with the proxy down
// the lookup fails temporarily, never trying resolv.conf's servers or UDP.
func TestDNSClientViaSOCKS(t *testing.T) {
	resolver := dnstest.New(t)
	o := newTarget()
	resolver.Set("_onion-mx._tcp.example.org.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: o}}, AD: true})
	resolver.Set("_onion-mx._tcp.big.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: o}}, Truncate: true, AD: true})
	socks := sockstest.New(t, func(r sockstest.Request) sockstest.Response {
		if r.Addr() == "resolver.example:53" {
			return sockstest.Response{Dial: resolver.Addr()}
		}
		return sockstest.Response{Reply: 4}
	})
	var mu sync.Mutex
	var dialled []string
	viaSOCKS := func(socksAddr string) func(ctx context.Context, network, addr string) (net.Conn, error) {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialled = append(dialled, network+" "+addr)
			mu.Unlock()
			p, err := proxy.SOCKS5("tcp", socksAddr, nil, proxy.Direct)
			if err != nil {
				return nil, err
			}
			return p.(proxy.ContextDialer).DialContext(ctx, network, addr)
		}
	}
	// A resolv.conf naming another server, to show it is never read.
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("nameserver 127.0.0.1\n"), 0o644)
	c := &Client{Servers: []string{"resolver.example:53"}, TCP: true, Dial: viaSOCKS(socks.Addr),
		ResolvConf: conf, DNSSEC: DNSSECRequire, Timeout: time.Second}

	for _, name := range []string{"_onion-mx._tcp.example.org.", "_onion-mx._tcp.big.example."} {
		if srvs, err := lookupSRV(t, c, name); err != nil || len(srvs) != 1 {
			t.Errorf("%s: %v %v", name, srvs, err)
		}
	}
	for _, q := range resolver.Queries() {
		if q.Net != "tcp" {
			t.Errorf("query %v, want TCP only", q)
		}
	}
	for _, r := range socks.Requests() {
		if r.Addr() != "resolver.example:53" || r.ATYP != 3 {
			t.Errorf("CONNECT to %s (ATYP %d), want only the resolver, by name", r.Addr(), r.ATYP)
		}
	}
	if n := len(socks.Requests()); n != 2 {
		t.Errorf("%d CONNECTs, want 2", n)
	}

	// The proxy down: a temporary failure, after asking nobody else.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	down := l.Addr().String()
	l.Close()
	c.Dial = viaSOCKS(down)
	dialled = nil
	_, err := lookupSRV(t, c, "_onion-mx._tcp.example.org.")
	var de *net.DNSError
	if !errors.As(err, &de) || de.IsNotFound || !de.IsTemporary {
		t.Errorf("proxy down: %v, want a temporary error", err)
	}
	if want := []string{"tcp resolver.example:53", "tcp resolver.example:53"}; !slices.Equal(dialled, want) {
		t.Errorf("dialled %v, want %v", dialled, want)
	}
}

// TestDNSClientIgnoresForgeries: over UDP, responses with another ID or
// another question, or that are not DNS, are ignored, and the real answer
// that follows them counts.
func TestDNSClientIgnoresForgeries(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	good, evil := newTarget(), newTarget()
	go func() {
		buf := make([]byte, 2048)
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, _ := p.Start(buf[:n])
		q, _ := p.Question()
		other := q
		other.Name = dnsmessage.MustNewName("_onion-mx._tcp.other.example.")
		for _, m := range [][]byte{
			buildResponse(t, h.ID+1, q, false, evil),       // another ID
			buildResponse(t, h.ID, other, false, evil),     // another question
			[]byte("garbage"),                              // not DNS
			buildResponse(t, h.ID, q, false, good),         // the answer
			buildResponse(t, h.ID, q, false, "late."+evil), // too late
		} {
			pc.WriteTo(m, from)
		}
	}()
	c := &Client{Servers: []string{pc.LocalAddr().String()}, Attempts: 1}
	srvs, err := lookupSRV(t, c, "_onion-mx._tcp.example.org.")
	if err != nil || len(srvs) != 1 || srvs[0].Target != good+"." {
		t.Fatalf("%v %v, want %s", srvs, err, good)
	}
}

// buildResponse builds an answer with the AD bit as given and one SRV record
// for each target.
func buildResponse(t testing.TB, id uint16, q dnsmessage.Question, ad bool, targets ...string) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, Response: true, RecursionDesired: true, RecursionAvailable: true, AuthenticData: ad})
	b.StartQuestions()
	b.Question(q)
	b.StartAnswers()
	for _, target := range targets {
		b.SRVResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
			dnsmessage.SRVResource{Port: 25, Weight: 5, Target: dnsmessage.MustNewName(target + ".")})
	}
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// srvQuestion is the question the parser tests and the fuzz test ask.
var srvQuestion = dnsmessage.Question{Name: dnsmessage.MustNewName("_onion-mx._tcp.example.org."), Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET}

// message builds a response to srvQuestion with ID 1 from the header and the
// answer and additional records given.
func message(t testing.TB, h dnsmessage.Header, answers []dnsmessage.Resource, additionals []dnsmessage.Resource) []byte {
	h.ID, h.Response = 1, true
	m := dnsmessage.Message{Header: h, Questions: []dnsmessage.Question{srvQuestion}, Answers: answers, Additionals: additionals}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func srvRR(owner, target string, port uint16) dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(owner), Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET},
		Body:   &dnsmessage.SRVResource{Port: port, Target: dnsmessage.MustNewName(target)},
	}
}

func cnameRR(owner, target string) dnsmessage.Resource {
	return dnsmessage.Resource{
		Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName(owner), Type: dnsmessage.TypeCNAME, Class: dnsmessage.ClassINET},
		Body:   &dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName(target)},
	}
}

// TestParseResponse: which records of an answer count.
func TestParseResponse(t *testing.T) {
	o := newTarget()
	ra := dnsmessage.Header{RecursionAvailable: true}
	var badvers dnsmessage.ResourceHeader
	badvers.SetEDNS0(1232, dnsmessage.RCode(16), false) // BADVERS, RFC 6891
	opt := dnsmessage.Resource{Header: badvers, Body: &dnsmessage.OPTResource{}}
	for _, tc := range []struct {
		name    string
		msg     []byte
		targets []string
		rcode   dnsmessage.RCode
		lame    bool
	}{
		{"plain", message(t, ra, []dnsmessage.Resource{srvRR("_onion-mx._tcp.example.org.", o+".", 25)}, nil), []string{o + "."}, 0, false},
		{"owner case", message(t, ra, []dnsmessage.Resource{srvRR("_ONION-MX._tcp.Example.org.", o+".", 25)}, nil), []string{o + "."}, 0, false},
		{"other owner", message(t, ra, []dnsmessage.Resource{srvRR("_onion-mx._tcp.evil.example.", o+".", 25)}, nil), nil, 0, false},
		{"cname chain", message(t, ra, []dnsmessage.Resource{
			cnameRR("_onion-mx._tcp.example.org.", "a.example."),
			srvRR("b.example.", "x"+o+".", 25),
			cnameRR("a.example.", "b.example."),
			srvRR("_onion-mx._tcp.example.org.", "y"+o+".", 25),
		}, nil), []string{"x" + o + "."}, 0, false},
		{"cname loop", message(t, ra, []dnsmessage.Resource{
			cnameRR("_onion-mx._tcp.example.org.", "a.example."), cnameRR("a.example.", "_onion-mx._tcp.example.org."),
		}, nil), nil, 0, false},
		{"junk target", message(t, ra, []dnsmessage.Resource{
			srvRR("_onion-mx._tcp.example.org.", "a b."+o+".", 25),
			srvRR("_onion-mx._tcp.example.org.", "a\n."+o+".", 25),
			srvRR("_onion-mx._tcp.example.org.", ".", 0),
		}, nil), []string{"."}, 0, false},
		{"extended rcode", message(t, ra, nil, []dnsmessage.Resource{opt}), nil, 16, false},
		{"lame", message(t, dnsmessage.Header{}, nil, nil), nil, 0, true},
	} {
		resp, err := parseResponse(tc.msg, 1, srvQuestion, "udp")
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var targets []string
		for _, s := range resp.srvs {
			targets = append(targets, s.Target)
		}
		if !slices.Equal(targets, tc.targets) || resp.rcode != tc.rcode || resp.lame != tc.lame {
			t.Errorf("%s: targets %q rcode %v lame %v; want %q %v %v", tc.name, targets, resp.rcode, resp.lame, tc.targets, tc.rcode, tc.lame)
		}
	}

	plain := message(t, ra, []dnsmessage.Resource{srvRR("_onion-mx._tcp.example.org.", o+".", 25)}, nil)
	query := slices.Clone(plain)
	query[2] &^= 0x80 // QR clear: a query, not a response
	otherType := srvQuestion
	otherType.Type = dnsmessage.TypeA
	for _, tc := range []struct {
		name string
		msg  []byte
		id   uint16
		q    dnsmessage.Question
	}{
		{"other id", plain, 2, srvQuestion},
		{"other question", plain, 1, otherType},
		{"a query", query, 1, srvQuestion},
		{"short", plain[:5], 1, srvQuestion},
	} {
		if _, err := parseResponse(tc.msg, tc.id, tc.q, "udp"); !errors.Is(err, errMismatch) {
			t.Errorf("%s: %v, want a mismatch", tc.name, err)
		}
	}
	if _, err := parseResponse(plain[:len(plain)-3], 1, srvQuestion, "udp"); err == nil || errors.Is(err, errMismatch) {
		t.Errorf("cut short in the answers: %v, want a parse error", err)
	}

	// TC: over UDP, ask again; over TCP, ignored.
	tc := message(t, dnsmessage.Header{RecursionAvailable: true, Truncated: true}, []dnsmessage.Resource{srvRR("_onion-mx._tcp.example.org.", o+".", 25)}, nil)
	if resp, err := parseResponse(tc, 1, srvQuestion, "udp"); err != nil || !resp.truncated || len(resp.srvs) != 0 {
		t.Errorf("TC over UDP: %+v %v", resp, err)
	}
	if resp, err := parseResponse(tc, 1, srvQuestion, "tcp"); err != nil || resp.truncated || len(resp.srvs) != 1 {
		t.Errorf("TC over TCP: %+v %v", resp, err)
	}
}

func TestParseDNSSEC(t *testing.T) {
	for in, want := range map[string]DNSSEC{"": DNSSECOff, "off": DNSSECOff, "require": DNSSECRequire} {
		if got, err := ParseDNSSEC(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := ParseDNSSEC("on"); err == nil || err.Error() != "want off or require" {
		t.Errorf("on: %v", err)
	}
}
