package table

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/dns"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/lookup"
)

// onionDialer stands in for Tor: it connects onion addresses to local SMTP
// servers, and refuses those in refuse.
type onionDialer struct {
	routes map[string]string // "x.onion:25" → "127.0.0.1:port"
	refuse map[string]bool

	mu     sync.Mutex
	dialed []string
}

func (d *onionDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dialed = append(d.dialed, addr)
	d.mu.Unlock()
	if d.refuse[addr] {
		return nil, &net.OpError{Op: "socks connect", Net: network, Err: errors.New("onion service unreachable (test)")}
	}
	real, ok := d.routes[addr]
	if !ok {
		return nil, &net.OpError{Op: "socks connect", Net: network, Err: fmt.Errorf("no onion service %s (test)", addr)}
	}
	var nd net.Dialer
	return nd.DialContext(ctx, "tcp", real)
}

// TestAnswersDeliver feeds each server's answer to deliver, as Postfix does
// through ${nexthop}, and checks that the message reaches the right onion.
// deliver gets the same DNS but no static map: a mapped route must come
// through the answer alone.
func TestAnswersDeliver(t *testing.T) {
	f := newFixture(t)
	sinks := map[string]*smtptest.Sink{}
	d := &onionDialer{routes: map[string]string{}}
	for _, addr := range []string{f.o1 + ":25", f.o1 + ":2525", f.o2 + ":25", f.o3 + ":2525"} {
		snk := smtptest.New(t, func(s *smtp.Server) { s.Domain = "smtp-" + addr[:8] + ".test" })
		sinks[addr], d.routes[addr] = snk, snk.Addr
	}
	client := &deliver.Client{
		Dialer:         d,
		Resolver:       &lookup.Resolver{DNS: &dns.Client{Servers: []string{f.dns.Addr()}}},
		Helo:           "sender.test",
		ConnectTimeout: 5 * time.Second,
		CommandTimeout: 5 * time.Second,
		DataTimeout:    5 * time.Second,
		BlockTimeout:   5 * time.Second,
	}

	cases := []struct {
		rcpt   string
		refuse []string
		dialed []string // in order; the last one gets the message
	}{
		{rcpt: "bob@single.example", dialed: []string{f.o1 + ":25"}},
		{rcpt: "dave@pinned.example", dialed: []string{f.o3 + ":2525"}},
		{rcpt: "x@deep.sub.example", dialed: []string{f.o2 + ":25"}},
		{rcpt: "hank@" + f.o2, dialed: []string{f.o2 + ":25"}},
		{rcpt: "x@mixed.example", dialed: []string{f.o1 + ":25"}},
		// Several targets: deliver resolves the domain itself and fails over
		// from the priority-0 target to the priority-10 one.
		{rcpt: "carol@multi.example", dialed: []string{f.o2 + ":25"}},
		{rcpt: "carol@multi.example", refuse: []string{f.o2 + ":25"}, dialed: []string{f.o2 + ":25", f.o1 + ":2525"}},
	}
	for _, proto := range []Protocol{Socketmap, TCPTable} {
		addr, _ := serve(t, &Server{Answerer: f.a, Protocol: proto})
		c := dial(t, addr)
		for _, tc := range cases {
			name := fmt.Sprintf("%v/%s", proto, tc.rcpt)
			if len(tc.refuse) > 0 {
				name += "/failover"
			}
			t.Run(name, func(t *testing.T) {
				// What Postfix's trivial-rewrite is told.
				var result string
				if proto == Socketmap {
					c.send(netstring("onionmx " + tc.rcpt))
					reply := c.netstring()
					r, ok := strings.CutPrefix(reply, "OK ")
					if !ok {
						t.Fatalf("socketmap reply %q", reply)
					}
					result = r
				} else {
					c.send("get " + encodeTCP(tc.rcpt, 1000) + "\n")
					line := c.line()
					r, ok := strings.CutPrefix(line, "200 ")
					if !ok {
						t.Fatalf("tcp table reply %q", line)
					}
					var err error
					if result, err = decodeTCP(strings.TrimSuffix(r, "\n")); err != nil {
						t.Fatal(err)
					}
				}
				transport, nexthop, _ := strings.Cut(result, ":")
				if transport != "onionmx" {
					t.Fatalf("transport %q", transport)
				}
				// Postfix's ${nexthop}: an empty nexthop is the recipient
				// domain (transport(5)).
				if nexthop == "" {
					nexthop = tc.rcpt[strings.LastIndexByte(tc.rcpt, '@')+1:]
				}

				before := map[string]int{}
				for a, s := range sinks {
					before[a] = len(s.Messages())
				}
				d.mu.Lock()
				d.dialed, d.refuse = nil, map[string]bool{}
				for _, a := range tc.refuse {
					d.refuse[a] = true
				}
				d.mu.Unlock()

				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				res, err := client.Deliver(ctx, nexthop, &deliver.Message{
					Sender:     "alice@sender.test",
					Recipients: []string{tc.rcpt},
					Body:       strings.NewReader("Subject: test\r\n\r\nhello " + tc.rcpt + "\r\n"),
				})
				if err != nil {
					t.Fatalf("deliver with nexthop %q: %v", nexthop, err)
				}
				d.mu.Lock()
				dialed := slices.Clone(d.dialed)
				d.mu.Unlock()
				if !slices.Equal(dialed, tc.dialed) {
					t.Errorf("nexthop %q: dialed %v, want %v", nexthop, dialed, tc.dialed)
				}
				want := tc.dialed[len(tc.dialed)-1]
				if got := res.Target.Addr(); got != want {
					t.Errorf("delivered to %s, want %s", got, want)
				}
				for a, s := range sinks {
					msgs := s.Messages()
					n := len(msgs) - before[a]
					switch {
					case a == want && n != 1:
						t.Errorf("%s got %d messages, want 1", a, n)
					case a == want:
						m := msgs[len(msgs)-1]
						if !slices.Equal(m.To, []string{tc.rcpt}) || !strings.Contains(string(m.Data), "hello "+tc.rcpt) {
							t.Errorf("%s got %+v", a, m)
						}
					case n != 0:
						t.Errorf("%s got %d messages, want none", a, n)
					}
				}
			})
		}
	}
	// A pinned route reaches its onion without a single DNS query, from
	// the lookup server or from deliver.
	f.queried()
	addr, _ := serve(t, &Server{Answerer: f.a, Protocol: Socketmap})
	c := dial(t, addr)
	c.send(netstring("onionmx dave@pinned.example"))
	nexthop := strings.TrimPrefix(c.netstring(), "OK onionmx:")
	d.refuse = nil
	if _, err := client.Deliver(context.Background(), nexthop, &deliver.Message{
		Sender: "alice@sender.test", Recipients: []string{"dave@pinned.example"}, Body: strings.NewReader("hi\r\n"),
	}); err != nil {
		t.Fatal(err)
	}
	if q := f.queried(); len(q) != 0 {
		t.Errorf("DNS queries for a pinned route: %v", q)
	}

	// An unusable .onion domain goes to onionmx, which bounces it: never
	// dialled, never asked of DNS.
	for _, rcpt := range []string{"x@" + v2Onion, "x@" + flipped(f.o1)} {
		c.send(netstring("onionmx " + rcpt))
		if got := c.netstring(); got != "OK onionmx:" {
			t.Fatalf("%s: %q", rcpt, got)
		}
		d.mu.Lock()
		d.dialed = nil
		d.mu.Unlock()
		_, err := client.Deliver(context.Background(), rcpt[2:], &deliver.Message{
			Sender: "alice@sender.test", Recipients: []string{rcpt}, Body: strings.NewReader("hi\r\n"),
		})
		if e := deliver.AsError(err); err == nil || !strings.HasPrefix(e.Status, "5.") {
			t.Errorf("%s: deliver: %v, want a bounce", rcpt, err)
		}
		d.mu.Lock()
		dialed := d.dialed
		d.mu.Unlock()
		if len(dialed) != 0 || len(f.queried()) != 0 {
			t.Errorf("%s: dialed %v", rcpt, dialed)
		}
	}
}
