package table

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onionmx/onionmx/dns"
	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/lookup"
)

// v2Onion is a retired v2 address (Tor's own old one).
const v2Onion = "expyuzz4wqqyqhjn.onion"

// fixture is an answerer over a static map and a DNS test server:
//
//	single.example   SRV → o1:25
//	multi.example    SRV → o2:25 (prio 0), o1:2525 (prio 10)
//	mixed.example    SRV → a v2 onion (prio 0), o1:25 (prio 1), a clear-net host (prio 2)
//	clear.example    SRV → a clear-net host only
//	dot.example      SRV → "." (no service)
//	nodata.example   no SRV data;  servfail.example SERVFAIL;  slow.example no answer
//	pinned.example   static map → [o3]:2525 (and an SRV record that must not be asked)
//	*.sub.example    static map ".sub.example" → [o2]
//	self.example, *.ours.example   --self (with SRV records that must not be asked)
//	anything else    NXDOMAIN
type fixture struct {
	dns        *dnstest.Server
	a          *Answerer
	o1, o2, o3 string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{dns: dnstest.New(t), o1: oniontest.New(), o2: oniontest.New(), o3: oniontest.New()}
	mapFile := filepath.Join(t.TempDir(), "onionmx_transport")
	text := fmt.Sprintf("# pinned routes\npinned.example\tonionmx:[%s]:2525\n.sub.example\t[%s]\n", f.o3, f.o2)
	if err := os.WriteFile(mapFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := lookup.LoadMap(mapFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := func(prio, weight, port uint16, target string) dnstest.SRV {
		return dnstest.SRV{Priority: prio, Weight: weight, Port: port, Target: target}
	}
	d := f.dns
	d.SetSRV("_onion-mx._tcp.single.example.", srv(0, 5, 25, f.o1))
	d.SetSRV("_onion-mx._tcp.multi.example.", srv(10, 0, 2525, f.o1), srv(0, 5, 25, f.o2))
	d.SetSRV("_onion-mx._tcp.mixed.example.", srv(0, 1, 25, v2Onion), srv(1, 2, 25, f.o1), srv(2, 3, 25, "mx.mixed.example"))
	d.SetSRV("_onion-mx._tcp.clear.example.", srv(0, 0, 25, "mx.clear.example"))
	d.SetSRV("_onion-mx._tcp.dot.example.", srv(0, 0, 0, "."))
	d.Set("_onion-mx._tcp.nodata.example.", dnstest.NoData)
	d.Set("_onion-mx._tcp.servfail.example.", dnstest.ServFail)
	d.Set("_onion-mx._tcp.slow.example.", dnstest.Timeout)
	d.SetSRV("_onion-mx._tcp.pinned.example.", srv(0, 0, 25, f.o1))
	d.SetSRV("_onion-mx._tcp.self.example.", srv(0, 0, 25, f.o1))
	d.SetSRV("_onion-mx._tcp.a.ours.example.", srv(0, 0, 25, f.o1))
	f.a = &Answerer{
		Resolver:  &lookup.Resolver{Maps: []*lookup.Map{m}, DNS: &dns.Client{Servers: []string{d.Addr()}}},
		Transport: "onionmx",
		Self:      []string{"self.example", ".ours.example"},
		Timeout:   time.Second,
	}
	return f
}

// queried returns the distinct names queried since the last call, sorted,
// and forgets them.
func (f *fixture) queried() []string {
	seen := map[string]bool{}
	for _, n := range f.dns.Names() {
		seen[n] = true
	}
	f.dns.Reset()
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// serve runs a Server for proto on a loopback listener until the test ends,
// and returns its address and what it logged.
func serve(t testing.TB, srv *Server) (addr string, logged func() string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log strings.Builder
	srv.Log = func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(&log, format+"\n", args...)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after its context was canceled")
		}
	})
	return l.Addr().String(), func() string {
		mu.Lock()
		defer mu.Unlock()
		return log.String()
	}
}

// client is a connection to a server under test, with a deadline on every
// read so that a hang fails the test instead of stalling it.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// netstring reads one reply netstring.
func (c *client) netstring() string {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	p, err := readNetstring(c.br, MaxNetstring)
	if err != nil {
		c.t.Fatalf("reading a netstring reply: %v", err)
	}
	return string(p)
}

// line reads one reply line, newline included.
func (c *client) line() string {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("reading a reply line: %v (got %q)", err, l)
	}
	return l
}

// closed checks that the server closed the connection, sending nothing
// more.
func (c *client) closed() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.br.ReadByte()
	if err == nil {
		rest, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("connection still open; read %q", string(b)+string(rest))
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.t.Fatalf("connection still open after 5 s")
	}
}

// memConn is an in-memory Conn: reads come from r, writes go to w, and
// deadlines are not supported (as with a pipe on stdin).
type memConn struct {
	r *strings.Reader
	w strings.Builder
}

func (c *memConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return os.ErrNoDeadline }
func (c *memConn) SetWriteDeadline(time.Time) error { return os.ErrNoDeadline }
