package dnstest

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func lookup(t *testing.T, s *Server, name string, timeout time.Duration) ([]*net.SRV, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, srvs, err := s.Resolver().LookupSRV(ctx, "", "", name)
	return srvs, err
}

func TestAnswers(t *testing.T) {
	s := New(t)
	s.SetSRV("_onion-mx._tcp.Example.ORG", SRV{Priority: 10, Weight: 1, Port: 2525, Target: "b.onion"}, SRV{Port: 25, Target: "a.onion."})
	s.Set("_onion-mx._tcp.servfail.example.", ServFail)
	s.Set("_onion-mx._tcp.nodata.example.", NoData)
	s.Set("_onion-mx._tcp.refused.example.", Refused)
	s.Set("_onion-mx._tcp.dot.example.", Answer{SRV: []SRV{{Target: "."}}})

	srvs, err := lookup(t, s, "_onion-mx._tcp.example.org.", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(srvs) != 2 || srvs[0].Target != "a.onion." || srvs[0].Port != 25 || srvs[1].Target != "b.onion." || srvs[1].Priority != 10 {
		t.Errorf("SRV records %v", srvs)
	}

	var dnsErr *net.DNSError
	for _, tc := range []struct {
		name     string
		notFound bool
	}{
		{"_onion-mx._tcp.nxdomain.example.", true}, // the default answer
		{"_onion-mx._tcp.nodata.example.", true},
		{"_onion-mx._tcp.servfail.example.", false},
		{"_onion-mx._tcp.refused.example.", false},
	} {
		_, err := lookup(t, s, tc.name, 5*time.Second)
		if !errors.As(err, &dnsErr) || dnsErr.IsNotFound != tc.notFound {
			t.Errorf("%s: err %v, want IsNotFound %v", tc.name, err, tc.notFound)
		}
	}
	srvs, err = lookup(t, s, "_onion-mx._tcp.dot.example.", 5*time.Second)
	if err != nil || len(srvs) != 1 || srvs[0].Target != "." {
		t.Errorf("dot target: %v %v", srvs, err)
	}

	want := []string{"_onion-mx._tcp.example.org.", "_onion-mx._tcp.nxdomain.example.", "_onion-mx._tcp.nodata.example."}
	if got := s.Names(); len(got) < len(want) || !slices.Equal(got[:3], want) {
		t.Errorf("queries %v, want them to start with %v", got, want)
	}
	for _, q := range s.Queries() {
		if q.Type != dnsmessage.TypeSRV || q.Net != "udp" {
			t.Errorf("query %v", q)
		}
	}
	s.Reset()
	if q := s.Queries(); len(q) != 0 {
		t.Errorf("after Reset: %v", q)
	}
}

func TestTruncateFallsBackToTCP(t *testing.T) {
	s := New(t)
	s.Set("_onion-mx._tcp.big.example.", Answer{SRV: []SRV{{Port: 25, Target: "a.onion"}}, Truncate: true})
	srvs, err := lookup(t, s, "_onion-mx._tcp.big.example.", 5*time.Second)
	if err != nil || len(srvs) != 1 {
		t.Fatalf("%v %v", srvs, err)
	}
	var nets []string
	for _, q := range s.Queries() {
		nets = append(nets, q.Net)
	}
	if !slices.Equal(nets, []string{"udp", "tcp"}) {
		t.Errorf("transports %v, want udp then tcp", nets)
	}
}

func TestDelayAndDrop(t *testing.T) {
	s := New(t)
	s.Set("_onion-mx._tcp.slow.example.", Answer{SRV: []SRV{{Port: 25, Target: "a.onion"}}, Delay: 100 * time.Millisecond})
	s.Set("_onion-mx._tcp.dead.example.", Timeout)
	start := time.Now()
	if _, err := lookup(t, s, "_onion-mx._tcp.slow.example.", 5*time.Second); err != nil {
		t.Errorf("slow: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("slow answer came after %v", d)
	}
	_, err := lookup(t, s, "_onion-mx._tcp.dead.example.", 300*time.Millisecond)
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || dnsErr.IsNotFound || !dnsErr.IsTimeout {
		t.Errorf("dropped: %v, want a timeout", err)
	}
	// A delayed answer does not hold Close up.
	s.Set("_onion-mx._tcp.slow.example.", Answer{Delay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Resolver().LookupSRV(ctx, "", "", "_onion-mx._tcp.slow.example.")
	time.Sleep(50 * time.Millisecond)
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs on a delayed answer")
	}
}

// exchange sends one SRV query over UDP, with an OPT record carrying the DO
// bit as given, or none, and returns the parsed response.
func exchange(t *testing.T, s *Server, name string, edns, do bool) (dnsmessage.Header, []dnsmessage.Resource, []dnsmessage.Resource) {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET})
	if edns {
		b.StartAdditionals()
		var opt dnsmessage.ResourceHeader
		opt.SetEDNS0(1232, dnsmessage.RCodeSuccess, do)
		b.OPTResource(opt, dnsmessage.OPTResource{})
	}
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("udp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(q)
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return m.Header, m.Answers, m.Additionals
}

// TestDNSSECBits: an answer's AD bit as set, the query's DO bit recorded,
// and an OPT record back for an EDNS query, with DO copied.
func TestDNSSECBits(t *testing.T) {
	s := New(t)
	s.Set("_onion-mx._tcp.signed.example.", Answer{SRV: []SRV{{Port: 25, Target: "a.onion"}}, AD: true})
	s.SetSRV("_onion-mx._tcp.unsigned.example.", SRV{Port: 25, Target: "a.onion"})

	h, answers, extra := exchange(t, s, "_onion-mx._tcp.signed.example.", true, true)
	if !h.AuthenticData || len(answers) != 1 || len(extra) != 1 || extra[0].Header.Type != dnsmessage.TypeOPT || !extra[0].Header.DNSSECAllowed() {
		t.Errorf("signed: header %+v, %d answers, additionals %+v", h, len(answers), extra)
	}
	h, _, extra = exchange(t, s, "_onion-mx._tcp.unsigned.example.", true, false)
	if h.AuthenticData || len(extra) != 1 || extra[0].Header.DNSSECAllowed() {
		t.Errorf("unsigned: header %+v, additionals %+v", h, extra)
	}
	if _, _, extra = exchange(t, s, "_onion-mx._tcp.unsigned.example.", false, false); len(extra) != 0 {
		t.Errorf("no EDNS: additionals %+v", extra)
	}
	want := []Query{
		{Name: "_onion-mx._tcp.signed.example.", Type: dnsmessage.TypeSRV, Net: "udp", EDNS: true, DO: true},
		{Name: "_onion-mx._tcp.unsigned.example.", Type: dnsmessage.TypeSRV, Net: "udp", EDNS: true},
		{Name: "_onion-mx._tcp.unsigned.example.", Type: dnsmessage.TypeSRV, Net: "udp"},
	}
	if got := s.Queries(); !slices.Equal(got, want) {
		t.Errorf("queries %v, want %v", got, want)
	}
}
