package check

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

// fakeTor is a SocksPort that answers each onion as routes says; others
// get F0 (descriptor not found).
func fakeTor(t *testing.T, routes map[string]sockstest.Response) *sockstest.Server {
	return sockstest.New(t, func(r sockstest.Request) sockstest.Response {
		if resp, ok := routes[r.Host]; ok {
			return resp
		}
		return sockstest.Response{Reply: 0xF0}
	})
}

// noMail makes a sink fail the test if a message body is ever read.
func noMail(t *testing.T, h smtptest.Hooks) smtptest.Hooks {
	h.Body = func(*smtp.Conn, io.Reader) error {
		t.Error("the check sent DATA and a body")
		return &smtp.SMTPError{Code: 554, Message: "no"}
	}
	return h
}

func checker(socks *sockstest.Server) *Checker {
	return &Checker{
		SOCKS:    &tor.SOCKSDialer{Network: "tcp", Addr: socks.Addr},
		Resolver: &lookup.Resolver{},
		Helo:     "checker.test",
		Timeout:  5 * time.Second,
		Warn:     2 * time.Second,
		Crit:     4 * time.Second,
	}
}

func run(t *testing.T, c *Checker, targets ...string) (*Report, string) {
	t.Helper()
	r, err := c.Run(context.Background(), targets)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	r.Write(&b)
	t.Logf("status %d, output:\n%s", r.Status, b.String())
	return r, b.String()
}

// perfRE is one performance data entry as the plugin guidelines define
// it, with our unit and thresholds.
var perfRE = regexp.MustCompile(`^'[^'=]+'=(U|[0-9]+\.[0-9]{3}s);[0-9.]+;[0-9.]+;0;[0-9.]+$`)

// checkFormat asserts the shape of the plugin output: the status line with
// one well-formed performance data entry per target, then one line per
// target, and no "|" elsewhere.
func checkFormat(t *testing.T, out string, status Status, targets int) (summary string, perf []string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	first, data, ok := strings.Cut(lines[0], " | ")
	if !ok {
		t.Fatalf("no performance data in %q", lines[0])
	}
	prefix := "ONIONMX " + status.String() + " - "
	if !strings.HasPrefix(first, prefix) {
		t.Fatalf("status line %q, want it to start with %q", first, prefix)
	}
	perf = strings.Split(data, " ")
	if len(perf) != targets {
		t.Errorf("%d performance data entries, want %d: %q", len(perf), targets, data)
	}
	for _, p := range perf {
		if !perfRE.MatchString(p) {
			t.Errorf("malformed performance data %q", p)
		}
	}
	if len(lines) != 1+targets {
		t.Errorf("%d lines, want %d", len(lines), 1+targets)
	}
	for _, l := range lines[1:] {
		if strings.Contains(l, "|") {
			t.Errorf("long text line contains |: %q", l)
		}
	}
	return strings.TrimPrefix(first, prefix), perf
}

func TestAllAnswer(t *testing.T) {
	o1, o2 := oniontest.New(), oniontest.New()
	s1, s2 := smtptest.New(t), smtptest.New(t)
	s1.SetHooks(noMail(t, smtptest.Hooks{}))
	s2.SetHooks(noMail(t, smtptest.Hooks{}))
	socks := fakeTor(t, map[string]sockstest.Response{o1: {Dial: s1.Addr}, o2: {Dial: s2.Addr}})

	r, out := run(t, checker(socks), "["+o1+"]:25", o2, "["+o1+"]:25")
	if r.Status != OK {
		t.Fatalf("status %v, want OK", r.Status)
	}
	summary, perf := checkFormat(t, out, OK, 2)
	if !strings.HasPrefix(summary, "2 of 2 targets answered EHLO (slowest ") {
		t.Errorf("summary %q", summary)
	}
	if !strings.HasPrefix(perf[0], "'["+o1+"]:25'=") || !strings.HasPrefix(perf[1], "'"+o2+"'=") ||
		!strings.HasSuffix(perf[0], "s;2;4;0;5") {
		t.Errorf("performance data %q", perf)
	}
	if !strings.Contains(out, "["+o1+"]:25: OK - EHLO answered in ") || !strings.Contains(out, "greeting: 220 sink.test ESMTP") {
		t.Errorf("long text:\n%s", out)
	}
	// One session each (the repeated target is checked once), no mail,
	// and only the onion names went to Tor: the probe made no CONNECT.
	if s1.Connections() != 1 || s2.Connections() != 1 || len(s1.Messages())+len(s2.Messages()) != 0 {
		t.Errorf("sessions %d and %d, messages %d", s1.Connections(), s2.Connections(), len(s1.Messages())+len(s2.Messages()))
	}
	reqs := socks.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%d CONNECTs, want 2: %v", len(reqs), reqs)
	}
	for _, q := range reqs {
		if q.ATYP != 3 || q.Port != 25 || (q.Host != o1 && q.Host != o2) || q.Password != q.Addr() {
			t.Errorf("CONNECT %+v", q)
		}
	}
}

func TestSomeFail(t *testing.T) {
	good, gone := oniontest.New(), oniontest.New()
	sink := smtptest.New(t)
	socks := fakeTor(t, map[string]sockstest.Response{good: {Dial: sink.Addr}, gone: {Reply: 0xF2}})

	r, out := run(t, checker(socks), good, gone)
	if r.Status != Warning {
		t.Fatalf("status %v, want WARNING", r.Status)
	}
	summary, perf := checkFormat(t, out, Warning, 2)
	if summary != "1 of 2 targets answered EHLO (slowest "+seconds(r.Results[0].Elapsed)+"); failed: "+gone {
		t.Errorf("summary %q", summary)
	}
	if !strings.HasPrefix(perf[1], "'"+gone+"'=U;") {
		t.Errorf("performance data of the failed target: %q", perf[1])
	}
	if !strings.Contains(out, gone+": FAILED - connect to "+gone+":25 via Tor: onion service introduction failed (SOCKS reply F2)\n") {
		t.Errorf("long text:\n%s", out)
	}
}

// No target answers through Tor: the local Tor is the common factor.
func TestNoneAnswer(t *testing.T) {
	o1, o2, o3 := oniontest.New(), oniontest.New(), oniontest.New()
	socks := fakeTor(t, map[string]sockstest.Response{o1: {Reply: 0xF0}, o2: {Hang: true}, o3: {Reply: 0x01}})
	c := checker(socks)
	c.Timeout = 500 * time.Millisecond
	start := time.Now()
	r, out := run(t, c, o1, o2, o3)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("the check took %s with --timeout 500ms", d)
	}
	if r.Status != Critical {
		t.Fatalf("status %v, want CRITICAL", r.Status)
	}
	summary, _ := checkFormat(t, out, Critical, 3)
	if !strings.HasPrefix(summary, "0 of 3 targets answered EHLO; failed: ") ||
		!strings.HasSuffix(summary, "; none answered through Tor: the local Tor is the common factor") {
		t.Errorf("summary %q", summary)
	}
	if !strings.Contains(out, o2+": FAILED - connect to "+o2+":25 via Tor: timed out (after ") {
		t.Errorf("long text:\n%s", out)
	}
}

// Every target fails, but an SMTP server answered: Tor works, and
// restarting it would not help.
func TestRefusedIsNotTor(t *testing.T) {
	o1, o2, o3 := oniontest.New(), oniontest.New(), oniontest.New()
	rejecting := smtptest.New(t)
	rejecting.SetHooks(smtptest.Hooks{Hello: func(*smtp.Conn) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "go away"}
	}})
	socks := fakeTor(t, map[string]sockstest.Response{
		o1: {Dial: rejecting.Addr},
		o2: {Handle: func(c net.Conn) {
			defer c.Close()
			io.WriteString(c, "554 5.3.2 not today | really\r\n")
			io.Copy(io.Discard, c)
		}},
		o3: {Handle: func(c net.Conn) {
			defer c.Close()
			io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n")
			io.Copy(io.Discard, c)
		}},
	})
	r, out := run(t, checker(socks), o1, o2, o3)
	if r.Status != Warning {
		t.Fatalf("status %v, want WARNING", r.Status)
	}
	summary, _ := checkFormat(t, out, Warning, 3)
	if !strings.HasSuffix(summary, "; Tor works: the far end answered, with an error") {
		t.Errorf("summary %q", summary)
	}
	for _, want := range []string{
		o1 + ": FAILED - EHLO rejected: 550 5.7.1 go away; greeting: 220 sink.test ESMTP",
		o2 + ": FAILED - the server refused to talk: 554 5.3.2 not today / really; greeting: 554 5.3.2 not today / really",
		o3 + ": FAILED - not SMTP: the server sent \"SSH-2.0-OpenSSH_9.2\"; greeting: SSH-2.0-OpenSSH_9.2\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// Tor's replies that come from the far end (a refused port, a bad address,
// client authorization) do not blame the local Tor: WARNING, not CRITICAL.
func TestRemoteSOCKSRepliesAreNotTor(t *testing.T) {
	for _, code := range []byte{0x05, 0xF4, 0xF5, 0xF6} {
		o := oniontest.New()
		socks := fakeTor(t, map[string]sockstest.Response{o: {Reply: code}})
		r, _ := run(t, checker(socks), o)
		if r.Status != Warning {
			t.Errorf("SOCKS reply %02X: status %v, want WARNING", code, r.Status)
		}
	}
	for _, code := range []byte{0x01, 0x04, 0x06, 0xF0, 0xF2, 0xF3, 0xF7} {
		o := oniontest.New()
		socks := fakeTor(t, map[string]sockstest.Response{o: {Reply: code}})
		r, _ := run(t, checker(socks), o)
		if r.Status != Critical {
			t.Errorf("SOCKS reply %02X: status %v, want CRITICAL", code, r.Status)
		}
	}
}

// Timeouts at the greeting and at EHLO are failures on the way (the
// remote may be fine), bounded by the check's deadline.
func TestHangs(t *testing.T) {
	o1, o2 := oniontest.New(), oniontest.New()
	done := make(chan struct{})
	defer close(done)
	hanging := smtptest.New(t)
	hanging.SetHooks(smtptest.Hooks{Hello: func(*smtp.Conn) error { return hanging.Hang() }})
	socks := fakeTor(t, map[string]sockstest.Response{
		o1: {Handle: func(c net.Conn) { defer c.Close(); <-done }},
		o2: {Dial: hanging.Addr},
	})
	c := checker(socks)
	c.Timeout = 300 * time.Millisecond
	r, out := run(t, c, o1, o2)
	if r.Status != Critical {
		t.Fatalf("status %v, want CRITICAL", r.Status)
	}
	for _, want := range []string{
		o1 + `: FAILED - timed out after 0\.\d{3}s \(--timeout\) waiting for the greeting\n`,
		o2 + `: FAILED - timed out after 0\.\d{3}s \(--timeout\) waiting for the reply to EHLO; greeting: 220 sink.test ESMTP Service Ready\n`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

// slowSink answers EHLO after delay.
func slowSink(t *testing.T, delay time.Duration) *smtptest.Sink {
	s := smtptest.New(t)
	s.SetHooks(noMail(t, smtptest.Hooks{Hello: func(*smtp.Conn) error { time.Sleep(delay); return nil }}))
	return s
}

func TestThresholds(t *testing.T) {
	fast, slow, slower := oniontest.New(), oniontest.New(), oniontest.New()
	socks := fakeTor(t, map[string]sockstest.Response{
		fast:   {Dial: smtptest.New(t).Addr},
		slow:   {Dial: slowSink(t, 800*time.Millisecond).Addr},
		slower: {Dial: slowSink(t, 2200*time.Millisecond).Addr},
	})
	// Wide margins: on a loaded machine, under the race detector, even the
	// fast target's CONNECT has taken 300 ms.
	c := checker(socks)
	c.Warn, c.Crit, c.Timeout = 500*time.Millisecond, 1500*time.Millisecond, 4*time.Second

	// Slower than --warn: WARNING, with the time in the performance data.
	r, out := run(t, c, fast, slow)
	if r.Status != Warning {
		t.Fatalf("status %v, want WARNING", r.Status)
	}
	summary, perf := checkFormat(t, out, Warning, 2)
	if !regexp.MustCompile(`^2 of 2 targets answered EHLO \(slowest (0\.[89]|1\.[0-4])\d\ds\); slow: ` + slow + ` \((0\.[89]|1\.[0-4])\d\ds > --warn 0\.500s\)$`).MatchString(summary) {
		t.Errorf("summary %q", summary)
	}
	if !regexp.MustCompile(`^'` + slow + `'=(0\.[89]|1\.[0-4])\d\ds;0\.5;1\.5;0;4$`).MatchString(perf[1]) {
		t.Errorf("performance data %q", perf[1])
	}
	if !strings.Contains(out, slow+": SLOW - EHLO answered in ") {
		t.Errorf("long text:\n%s", out)
	}

	// Slower than --crit counts as failed: with another target that
	// answers, WARNING; alone, CRITICAL (it did not answer in time).
	r, out = run(t, c, fast, slower)
	if r.Status != Warning {
		t.Fatalf("status %v, want WARNING", r.Status)
	}
	summary, perf = checkFormat(t, out, Warning, 2)
	if !regexp.MustCompile(`; failed: ` + slower + ` \((2\.[2-9]|3\.\d)\d\ds > --crit 1\.500s\)$`).MatchString(summary) {
		t.Errorf("summary %q", summary)
	}
	if !regexp.MustCompile(`^'`+slower+`'=(2\.[2-9]|3\.\d)\d\ds;`).MatchString(perf[1]) || !strings.Contains(out, slower+": FAILED - EHLO answered in ") {
		t.Errorf("output:\n%s", out)
	}
	r, out = run(t, c, slower)
	if r.Status != Critical {
		t.Fatalf("status %v, want CRITICAL", r.Status)
	}
	checkFormat(t, out, Critical, 1)
}

// Latency through a slow Tor path, with sockstest's Delay.
func TestDelay(t *testing.T) {
	o := oniontest.New()
	socks := fakeTor(t, map[string]sockstest.Response{o: {Dial: smtptest.New(t).Addr}})
	socks.Delay = 50 * time.Millisecond
	c := checker(socks)
	c.Warn = 100 * time.Millisecond
	r, _ := run(t, c, o)
	// CONNECT reply 2 delays, greeting 1, EHLO and its reply 2.
	if r.Status != Warning || r.Results[0].Elapsed < 250*time.Millisecond || r.Results[0].Connect < 100*time.Millisecond {
		t.Errorf("status %v, elapsed %s, connect %s", r.Status, r.Results[0].Elapsed, r.Results[0].Connect)
	}
}

// scripted is an SMTP server that records the commands it gets and
// answers RCPT TO and MAIL FROM as told.
type scripted struct {
	mail, rcpt string
	mu         sync.Mutex
	cmds       []string
}

func (s *scripted) handle(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	reply := func(l string) { io.WriteString(c, l+"\r\n") }
	reply("220 scripted.test ESMTP")
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.cmds = append(s.cmds, line)
		s.mu.Unlock()
		verb, _, _ := strings.Cut(strings.ToUpper(line), " ")
		switch verb {
		case "EHLO":
			reply("250-scripted.test\r\n250 8BITMIME")
		case "MAIL":
			reply(s.mail)
		case "RCPT":
			reply(s.rcpt)
		case "RSET":
			reply("250 2.0.0 Ok")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			reply("502 5.5.2 no")
		}
	}
}

func (s *scripted) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

func TestRelayTest(t *testing.T) {
	ok := "250 2.1.0 Ok"
	cases := []struct {
		name       string
		mail, rcpt string
		status     Status
		relay      Relay
		line       string
		cmds       int // commands sent: EHLO MAIL RCPT RSET QUIT
	}{
		{"open", ok, "250 2.1.5 Ok", Critical, RelayOpen, "]:25: OPEN RELAY - EHLO answered in ", 5},
		{"open 251", ok, "251 2.1.5 User not local; will forward", Critical, RelayOpen, "; relay test failed: RCPT TO:<probe@onionmx-relay-test.invalid> accepted: 251 2.1.5 User not local; will forward\n", 5},
		{"closed", ok, "554 5.7.1 <probe@onionmx-relay-test.invalid>: Relay access denied", OK, RelayRejected,
			"; relay test passed: RCPT TO:<probe@onionmx-relay-test.invalid> rejected: 554 5.7.1 <probe@onionmx-relay-test.invalid>: Relay access denied", 5},
		{"deferred", ok, "454 4.7.1 <probe@onionmx-relay-test.invalid>: Relay access denied", Warning, RelayInconclusive,
			"; relay test inconclusive: RCPT TO:<probe@onionmx-relay-test.invalid> deferred, not rejected: 454 4.7.1", 5},
		{"greylisted", ok, "450 4.2.0 Greylisted", Warning, RelayInconclusive, "deferred, not rejected: 450 4.2.0 Greylisted", 5},
		{"sender rejected", "553 5.1.8 Sender address rejected: Domain not found", "250 2.1.5 Ok", Warning, RelayInconclusive,
			"; relay test inconclusive: MAIL FROM:<probe@onionmx-relay-test.invalid> not accepted (553 5.1.8 Sender address rejected: Domain not found), so RCPT TO was not tried", 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := oniontest.New()
			srv := &scripted{mail: tc.mail, rcpt: tc.rcpt}
			socks := fakeTor(t, map[string]sockstest.Response{o: {Handle: srv.handle}})
			c := checker(socks)
			c.RelayTest = true
			r, out := run(t, c, "["+o+"]:25")
			if r.Status != tc.status || r.Results[0].Relay != tc.relay {
				t.Fatalf("status %v, relay %v; want %v, %v", r.Status, r.Results[0].Relay, tc.status, tc.relay)
			}
			summary, _ := checkFormat(t, out, tc.status, 1)
			if !strings.Contains(out, tc.line) {
				t.Errorf("no %q in:\n%s", tc.line, out)
			}
			switch tc.relay {
			case RelayOpen:
				if !strings.HasPrefix(summary, "OPEN RELAY: ["+o+"]:25 accepted RCPT TO:<probe@onionmx-relay-test.invalid>, a foreign domain") {
					t.Errorf("summary %q", summary)
				}
			case RelayRejected:
				if !strings.HasSuffix(summary, "; none relays to a foreign domain") {
					t.Errorf("summary %q", summary)
				}
			case RelayInconclusive:
				if !strings.HasSuffix(summary, "; relay test inconclusive: ["+o+"]:25") {
					t.Errorf("summary %q", summary)
				}
			}
			want := []string{"EHLO checker.test", "MAIL FROM:<probe@onionmx-relay-test.invalid> BODY=8BITMIME",
				"RCPT TO:<probe@onionmx-relay-test.invalid>", "RSET", "QUIT"}
			if tc.cmds == 4 {
				want = append(want[:2], want[3:]...)
			}
			if got := srv.commands(); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("commands %q, want %q", got, want)
			}
		})
	}
}

// Against go-smtp's server: one target relays, one does not; no DATA, no
// message, either way.
func TestRelayTestSinks(t *testing.T) {
	open, closed := oniontest.New(), oniontest.New()
	openSink, closedSink := smtptest.New(t), smtptest.New(t)
	openSink.SetHooks(noMail(t, smtptest.Hooks{}))
	closedSink.SetHooks(noMail(t, smtptest.Hooks{Rcpt: func(_ *smtp.Conn, to string) error {
		if !strings.HasSuffix(to, "@recv.test") {
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + to + ">: Relay access denied"}
		}
		return nil
	}}))
	socks := fakeTor(t, map[string]sockstest.Response{open: {Dial: openSink.Addr}, closed: {Dial: closedSink.Addr}})
	c := checker(socks)
	c.RelayTest = true
	r, out := run(t, c, closed, open)
	if r.Status != Critical {
		t.Fatalf("status %v, want CRITICAL", r.Status)
	}
	summary, _ := checkFormat(t, out, Critical, 2)
	if !strings.HasPrefix(summary, "OPEN RELAY: "+open+" accepted ") || strings.Contains(summary, closed) {
		t.Errorf("summary %q", summary)
	}
	if n := len(openSink.Messages()) + len(closedSink.Messages()); n != 0 {
		t.Errorf("%d messages accepted", n)
	}
}

func TestSOCKSDown(t *testing.T) {
	o := oniontest.New()
	sink := smtptest.New(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	cases := []struct {
		name, network, addr, summary string
	}{
		{"refused", "tcp", closedAddr, "Tor SocksPort " + closedAddr + " is unreachable: connect: connection refused; no target tried"},
		{"no socket", "unix", filepath.Join(t.TempDir(), "socks"), " is unreachable: connect: no such file or directory; no target tried"},
		{"not SOCKS", "tcp", sink.Addr, "Tor SocksPort " + sink.Addr + ` is not a SOCKS5 server (it answered "220 sink.test ESMTP Service Read"); no target tried`},
		{"silent", "tcp", silent.Addr().String(), "Tor SocksPort " + silent.Addr().String() + " does not answer (no SOCKS5 reply within 0.200s); no target tried"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &Checker{SOCKS: &tor.SOCKSDialer{Network: tc.network, Addr: tc.addr}, Resolver: &lookup.Resolver{},
				Helo: "checker.test", ProbeTimeout: 200 * time.Millisecond}
			r, out := run(t, c, o, "example.org")
			if r.Status != Critical {
				t.Fatalf("status %v, want CRITICAL", r.Status)
			}
			summary, perf := checkFormat(t, out, Critical, 2)
			if !strings.HasSuffix(summary, tc.summary) {
				t.Errorf("summary %q, want it to end with %q", summary, tc.summary)
			}
			if perf[1] != "'example.org'=U;20;40;0;50" {
				t.Errorf("performance data %q", perf)
			}
			if !strings.Contains(out, "\nexample.org: NOT CHECKED - the SocksPort does not work\n") {
				t.Errorf("long text:\n%s", out)
			}
		})
	}
	if sink.Connections() != 0 {
		t.Error("the probe said EHLO")
	}
}

func TestRoutes(t *testing.T) {
	o1, o2 := oniontest.New(), oniontest.New()
	sink := smtptest.New(t)
	socks := fakeTor(t, map[string]sockstest.Response{o1: {Dial: sink.Addr}, o2: {Dial: sink.Addr}})
	m, err := lookup.ParseTransportMap("map.txt", strings.NewReader("pinned.example onionmx:["+o1+"]:2525\n"))
	if err != nil {
		t.Fatal(err)
	}
	dns := fakeSRV{"_onion-mx._tcp.two.example.": {{Target: o1 + ".", Port: 25, Priority: 0}, {Target: o2 + ".", Port: 25, Priority: 10}}}
	c := checker(socks)
	c.Resolver = &lookup.Resolver{Maps: []*lookup.Map{m}, DNS: dns}

	r, out := run(t, c, "pinned.example", "two.example", "none.example")
	if r.Status != Warning {
		t.Fatalf("status %v, want WARNING", r.Status)
	}
	summary, perf := checkFormat(t, out, Warning, 4)
	if summary != "3 of 4 targets answered EHLO (slowest "+seconds(max(r.Results[0].Elapsed, r.Results[1].Elapsed, r.Results[2].Elapsed))+"); failed: none.example (no route)" {
		t.Errorf("summary %q", summary)
	}
	wantLabels := []string{"'pinned.example'=", "'two.example/[" + o1 + "]:25'=", "'two.example/[" + o2 + "]:25'=", "'none.example'=U;"}
	for i, l := range wantLabels {
		if !strings.HasPrefix(perf[i], l) {
			t.Errorf("performance data %q, want %q...", perf[i], l)
		}
	}
	for _, want := range []string{
		"pinned.example: OK - EHLO answered in ",
		"; target [" + o1 + "]:2525 from static map map.txt:1\n",
		"; target [" + o2 + "]:25 from DNS SRV _onion-mx._tcp.two.example.\n",
		"none.example: NO ROUTE - no onion route for none.example: DNS SRV _onion-mx._tcp.none.example.: no such record\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if reqs := socks.Requests(); len(reqs) != 3 || reqs[0].Port+reqs[1].Port+reqs[2].Port != 2525+25+25 {
		t.Errorf("CONNECTs %v", reqs)
	}

	// Nothing but targets without a route: nothing was checked.
	r, out = run(t, c, "none.example")
	if r.Status != Unknown || !strings.HasPrefix(out, "ONIONMX UNKNOWN - no target could be checked: none.example: no onion route for none.example: ") {
		t.Errorf("status %v, output %q", r.Status, out)
	}
}

type fakeSRV map[string][]*net.SRV

func (f fakeSRV) LookupSRV(_ context.Context, _, _, name string) (string, []*net.SRV, error) {
	if s, ok := f[name]; ok {
		return name, s, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func TestParseTargets(t *testing.T) {
	o := oniontest.New()
	good := [][]string{
		{o, "[" + o + "]:2525", o + ":25", "example.org", "Example.ORG.", "[" + o + "]"},
	}
	for _, args := range good {
		got, err := ParseTargets(args)
		if err != nil {
			t.Fatal(err)
		}
		// o and o:25 differ as nexthops, and so do [o] and [o]:25 ...
		// but "example.org" and "Example.ORG." are one domain.
		if len(got) != 5 {
			t.Errorf("ParseTargets(%q) = %q", args, got)
		}
	}
	for _, tc := range []struct{ arg, err string }{
		{"", "target \"\": empty nexthop"},
		{"--warn", "\"--warn\": flags go before the targets"},
		{"example.org:25", "a port goes with an onion"},
		{"[example.org", "missing ]"},
		{"expyuzz4wqqyqhjn.onion", "v2 onion address"},
		{"[" + strings.Replace(o, o[:1], map[bool]string{true: "b", false: "a"}[o[0] == 'a'], 1) + "]", "checksum"},
	} {
		_, err := ParseTargets([]string{tc.arg})
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("ParseTargets(%q): %v, want %q", tc.arg, err, tc.err)
		}
	}
	if _, err := ParseTargets(nil); err == nil || err.Error() != "no target given" {
		t.Errorf("ParseTargets(nil): %v", err)
	}
}

// The verdict rules, on results made up for each case.
func TestVerdict(t *testing.T) {
	ok := func(l string, d time.Duration) Result { return Result{Label: l, Outcome: Answered, Elapsed: d} }
	fail := func(l string, o Outcome) Result { return Result{Label: l, Outcome: o, Detail: "x"} }
	withRelay := func(r Result, rel Relay) Result { r.Relay = rel; return r }
	s := time.Second
	cases := []struct {
		name    string
		probe   error
		results []Result
		status  Status
		summary string
	}{
		{"all fine", nil, []Result{ok("a", s), ok("b", 2*s)}, OK, "2 of 2 targets answered EHLO (slowest 2.000s)"},
		{"slow", nil, []Result{ok("a", 25*s)}, Warning, "1 of 1 targets answered EHLO (slowest 25.000s); slow: a (25.000s > --warn 20.000s)"},
		{"too slow", nil, []Result{ok("a", 45*s)}, Critical, "0 of 1 targets answered EHLO; failed: a (45.000s > --crit 40.000s); none answered through Tor: the local Tor is the common factor"},
		{"too slow and fine", nil, []Result{ok("a", 45*s), ok("b", s)}, Warning, "1 of 2 targets answered EHLO (slowest 1.000s); failed: a (45.000s > --crit 40.000s)"},
		{"one fails", nil, []Result{ok("a", s), fail("b", Transit)}, Warning, "1 of 2 targets answered EHLO (slowest 1.000s); failed: b"},
		{"all fail", nil, []Result{fail("a", Transit), fail("b", Transit)}, Critical, "0 of 2 targets answered EHLO; failed: a, b; none answered through Tor: the local Tor is the common factor"},
		{"all fail, one refused", nil, []Result{fail("a", Transit), fail("b", Refused)}, Warning, "0 of 2 targets answered EHLO; failed: a, b; Tor works: the far end answered, with an error"},
		{"no route and transit", nil, []Result{fail("a", NoRoute), fail("b", Transit)}, Critical, "0 of 2 targets answered EHLO; failed: a (no route), b; none answered through Tor: the local Tor is the common factor"},
		{"no route and fine", nil, []Result{fail("a", NoRoute), ok("b", s)}, Warning, "1 of 2 targets answered EHLO (slowest 1.000s); failed: a (no route)"},
		{"no route only", nil, []Result{fail("a", NoRoute)}, Unknown, "no target could be checked: a: x"},
		{"internal", nil, []Result{fail("a", Internal), fail("b", Transit)}, Unknown, "a: x"},
		{"open relay", nil, []Result{withRelay(ok("a", s), RelayOpen), fail("b", Transit)}, Critical, "OPEN RELAY: a accepted RCPT TO:<probe@onionmx-relay-test.invalid>, a foreign domain, from anyone on the Tor network; 1 of 2 targets answered EHLO (slowest 1.000s); failed: b"},
		{"relay inconclusive", nil, []Result{withRelay(ok("a", s), RelayInconclusive)}, Warning, "1 of 1 targets answered EHLO (slowest 1.000s); relay test inconclusive: a"},
		{"probe", &tor.ProbeError{SOCKS: "127.0.0.1:9050", Problem: "is unreachable", Err: errors.New("connect: connection refused")}, []Result{{Label: "a", Outcome: NotTried}}, Critical,
			"Tor SocksPort 127.0.0.1:9050 is unreachable: connect: connection refused; no target tried"},
		{"permission", &tor.ProbeError{SOCKS: "unix:/run/tor/socks", Problem: "is unreachable", Err: fmt.Errorf("connect: %w", fs.ErrPermission)}, nil, Unknown,
			"Tor SocksPort unix:/run/tor/socks is unreachable: connect: permission denied (a configuration problem: run as a user that may open it)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &Report{Probe: tc.probe, Results: tc.results, Warn: DefaultWarn, Crit: DefaultCrit, Timeout: DefaultTimeout}
			status, summary := verdict(r)
			if status != tc.status || summary != tc.summary {
				t.Errorf("verdict: %v %q\nwant:    %v %q", status, summary, tc.status, tc.summary)
			}
		})
	}
}

func TestPerfdata(t *testing.T) {
	r := &Report{Warn: 1500 * time.Millisecond, Crit: 3 * time.Second, Timeout: time.Minute}
	for _, tc := range []struct {
		res  Result
		want string
	}{
		{Result{Label: "[x.onion]:25", Outcome: Answered, Elapsed: 1234567 * time.Microsecond}, "'[x.onion]:25'=1.235s;1.5;3;0;60"},
		{Result{Label: "a b'c=d|e", Outcome: Transit}, "'a_b_c_d_e'=U;1.5;3;0;60"},
		{Result{Label: "bücher.example", Outcome: NoRoute}, "'bücher.example'=U;1.5;3;0;60"},
	} {
		if got := r.perfdata(tc.res); got != tc.want {
			t.Errorf("perfdata = %q, want %q", got, tc.want)
		}
	}
}

func TestClean(t *testing.T) {
	if got := clean("a|b\r\nc\x00"); got != "a/b  c " {
		t.Errorf("clean = %q", got)
	}
	long := strings.Repeat("é", 200)
	if got := clean(long); len(got) > maxText+3 || !strings.HasSuffix(got, "é...") {
		t.Errorf("clean(long) = %q", got)
	}
}
