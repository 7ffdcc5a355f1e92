package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/proxy"

	"github.com/onionmx/onionmx/deliver"
)

// trace records, from the client's side, when a delivery dialled and when
// each read and write on its connection returned: enough to tell every
// wait for the peer apart.
type trace struct {
	start time.Time

	mu        sync.Mutex
	dialStart time.Duration
	dialEnd   time.Duration
	end       time.Duration
	events    []event
}

type event struct {
	at    time.Duration // since start, when the call returned
	write bool
	n     int
	head  []byte // the first bytes
}

func newTrace() *trace { return &trace{start: time.Now()} }

func (t *trace) since() time.Duration { return time.Since(t.start) }

func (t *trace) add(write bool, p []byte) {
	at := t.since()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.events = append(t.events, event{at: at, write: write, n: len(p), head: bytes.Clone(p[:min(len(p), 512)])})
}

func (t *trace) finish() { t.mu.Lock(); t.end = t.since(); t.mu.Unlock() }

// traceDialer records the dial and every read and write of the connection
// it returns.
type traceDialer struct {
	d  deliver.Dialer
	tr *trace
}

func (d traceDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	start := d.tr.since()
	c, err := d.d.DialContext(ctx, network, addr)
	d.tr.mu.Lock()
	d.tr.dialStart, d.tr.dialEnd = start, d.tr.since()
	d.tr.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &traceConn{Conn: c, tr: d.tr}, nil
}

type traceConn struct {
	net.Conn
	tr *trace
}

func (c *traceConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.tr.add(false, p[:n])
	}
	return n, err
}

func (c *traceConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if n > 0 {
		c.tr.add(true, p[:n])
	}
	return n, err
}

// step is one wait of the client for its peer: what it sent, and the
// replies it waited for.
type step struct {
	sent    string        // the commands sent; "" for the greeting
	got     string        // the reply codes received
	d       time.Duration // from the end of the previous step to the last byte of the replies
	waitFor time.Duration // from the last byte sent to the first byte of the replies
}

// steps splits a trace into its waits. The route, the connection and the
// tail (QUIT, whose reply is not awaited) are steps of their own.
func (t *trace) steps() []step {
	t.mu.Lock()
	defer t.mu.Unlock()
	steps := []step{
		{sent: "route (literal nexthop: no DNS)", got: "-", d: t.dialStart},
		{sent: "SOCKS5 greeting, user/pass, CONNECT", got: "CONNECT reply", d: t.dialEnd - t.dialStart, waitFor: t.dialEnd - t.dialStart},
	}
	prevEnd, lastWrite := t.dialEnd, t.dialEnd
	var stepStart time.Duration
	var sent, got []byte
	body := 0          // bytes sent after a 354
	afterData := false // the last reply was 354: the body follows
	inReplies := false
	var cur step
	flush := func() {
		cur.got = replyCodes(got)
		steps = append(steps, cur)
		afterData = strings.HasSuffix(cur.got, "354")
		sent, got, body = nil, nil, 0
	}
	for _, e := range t.events {
		if e.write {
			if inReplies {
				flush()
				inReplies = false
			}
			if afterData {
				body += e.n
			} else {
				sent = append(sent, e.head...)
			}
			lastWrite = e.at
			continue
		}
		if !inReplies {
			cur = step{sent: commands(sent), waitFor: e.at - lastWrite}
			stepStart = prevEnd
			if afterData {
				cur.sent = fmt.Sprintf("message body + \".\" (%d bytes)", body)
			}
			inReplies = true
		}
		got = append(got, e.head...)
		cur.d = e.at - stepStart
		prevEnd = e.at
	}
	if inReplies {
		flush()
	}
	if len(sent) > 0 {
		steps = append(steps, step{sent: commands(sent), got: "(reply not awaited)", d: t.end - prevEnd})
	} else {
		steps = append(steps, step{sent: "(return)", got: "-", d: t.end - prevEnd})
	}
	return steps
}

// commands names the commands the client sent, by their verbs; a BDAT
// with the body that follows it.
func commands(sent []byte) string {
	var verbs []string
	for _, line := range strings.Split(string(sent), "\r\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		v := strings.ToUpper(f[0])
		switch v {
		case "EHLO", "HELO", "MAIL", "RCPT", "DATA", "QUIT", "RSET", "NOOP", "STARTTLS":
			verbs = append(verbs, v)
		case "BDAT":
			verbs = append(verbs, "BDAT LAST + body")
			return strings.Join(verbs, " + ")
		}
	}
	if len(verbs) == 0 {
		return "(nothing: server speaks first)"
	}
	return strings.Join(verbs, " + ")
}

// replyCodes lists the codes of the complete replies in b.
func replyCodes(b []byte) string {
	var codes []string
	for _, line := range strings.Split(string(b), "\r\n") {
		if len(line) >= 4 && line[3] == ' ' {
			codes = append(codes, line[:3])
		}
	}
	return strings.Join(codes, " ")
}

// turns counts the waits after sending something: a write followed by a
// read. The greeting, which the server sends unasked, is not one.
func (t *trace) turns() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	wrote := false
	for _, e := range t.events {
		switch {
		case e.write:
			wrote = true
		case wrote:
			n++
			wrote = false
		}
	}
	return n
}

// waits returns, for each wait after sending, the time from the last
// byte sent to the first byte of the reply.
func (t *trace) waits() []time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var w []time.Duration
	var lastWrite time.Duration
	wrote := false
	for _, e := range t.events {
		switch {
		case e.write:
			wrote, lastWrite = true, e.at
		case wrote:
			w = append(w, e.at-lastWrite)
			wrote = false
		}
	}
	return w
}

// socksExchanges dials addr through the SOCKS5 server as deliver's
// SOCKSDialer does (golang.org/x/net/proxy with user/pass) and returns the
// request/reply exchanges of the handshake with the proxy, how long each
// waited for its reply.
func socksExchanges(socksAddr, addr string) ([]time.Duration, error) {
	tr := newTrace()
	fwd := forward{tr: tr}
	d, err := proxy.SOCKS5("tcp", socksAddr, &proxy.Auth{User: "onionmx", Password: addr}, fwd)
	if err != nil {
		return nil, err
	}
	c, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	c.Close()
	return tr.waits(), nil
}

// forward is a proxy.Dialer whose connections are traced.
type forward struct{ tr *trace }

func (f forward) Dial(network, addr string) (net.Conn, error) {
	return f.DialContext(context.Background(), network, addr)
}

func (f forward) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &traceConn{Conn: c, tr: f.tr}, nil
}
