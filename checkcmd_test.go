package main

import (
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// onionmx check against fakes the scripts cannot set up: sinks that relay
// or not, slow sinks, SRV records. (testdata/script/check*.txtar cover the
// rest.)

// checkCmd runs onionmx check and returns its status and stdout; stderr
// must stay empty.
func checkCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr strings.Builder
	status := run(append([]string{"onionmx", "check", "--helo", "checker.test"}, args...), strings.NewReader(""), &stdout, &stderr)
	if stderr.Len() != 0 {
		t.Errorf("stderr: %q", stderr.String())
	}
	t.Logf("exit %d:\n%s", status, stdout.String())
	return status, stdout.String()
}

// checkTor routes each onion to its sink's address.
func checkTor(t *testing.T, routes map[string]string) string {
	return sockstest.New(t, func(r sockstest.Request) sockstest.Response {
		if addr, ok := routes[r.Host]; ok {
			return sockstest.Response{Dial: addr}
		}
		return sockstest.Response{Reply: 0xF0}
	}).Addr
}

// checkRefuseMail makes a sink fail the test if it ever reads a message.
func checkRefuseMail(t *testing.T, h smtptest.Hooks) smtptest.Hooks {
	h.Body = func(*smtp.Conn, io.Reader) error {
		t.Error("check sent DATA")
		return &smtp.SMTPError{Code: 554, Message: "no"}
	}
	return h
}

func TestCheckRelayTest(t *testing.T) {
	open, safe := oniontest.New(), oniontest.New()
	openSink, safeSink := smtptest.New(t), smtptest.New(t)
	openSink.SetHooks(checkRefuseMail(t, smtptest.Hooks{}))
	safeSink.SetHooks(checkRefuseMail(t, smtptest.Hooks{Rcpt: func(_ *smtp.Conn, to string) error {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + to + ">: Relay access denied"}
	}}))
	socks := checkTor(t, map[string]string{open: openSink.Addr, safe: safeSink.Addr})

	// The safe one alone: OK.
	status, out := checkCmd(t, "--socks", socks, "--relay-test", "["+safe+"]:25")
	if status != 0 || !regexp.MustCompile(`^ONIONMX OK - 1 of 1 targets answered EHLO \(slowest [0-9.]+s\); none relays to a foreign domain \| '\[`+safe+`\]:25'=[0-9.]+s;20;40;0;50\n`).MatchString(out) {
		t.Errorf("exit %d, want 0 and OK", status)
	}
	if !strings.Contains(out, "; relay test passed: RCPT TO:<probe@onionmx-relay-test.invalid> rejected: 554 5.7.1 <probe@onionmx-relay-test.invalid>: Relay access denied\n") {
		t.Error("no relay test result")
	}

	// With the open one: CRITICAL, naming it and only it.
	status, out = checkCmd(t, "--socks", socks, "--relay-test", safe, open)
	first, _, _ := strings.Cut(out, "\n")
	if status != 2 || !strings.HasPrefix(first, "ONIONMX CRITICAL - OPEN RELAY: "+open+" accepted RCPT TO:<probe@onionmx-relay-test.invalid>, a foreign domain") ||
		strings.Contains(first[:strings.Index(first, "|")], safe) {
		t.Errorf("exit %d, status line %q", status, first)
	}
	if n := len(openSink.Messages()) + len(safeSink.Messages()); n != 0 {
		t.Errorf("%d messages were accepted", n)
	}
	if openSink.Connections() != 1 || safeSink.Connections() != 2 {
		t.Errorf("sessions: %d and %d", openSink.Connections(), safeSink.Connections())
	}
}

func TestCheckThresholds(t *testing.T) {
	slow := oniontest.New()
	sink := smtptest.New(t)
	sink.SetHooks(checkRefuseMail(t, smtptest.Hooks{Hello: func(*smtp.Conn) error { time.Sleep(300 * time.Millisecond); return nil }}))
	socks := checkTor(t, map[string]string{slow: sink.Addr})

	status, out := checkCmd(t, "--socks", socks, "--warn", "100ms", "--crit", "2s", "--timeout", "5s", slow)
	if status != 1 || !regexp.MustCompile(`^ONIONMX WARNING - 1 of 1 targets answered EHLO \(slowest 0\.[3-9]\d\ds\); slow: `+slow+` \(0\.[3-9]\d\ds > --warn 0\.100s\) \| '`+slow+`'=0\.[3-9]\d\ds;0\.1;2;0;5\n`).MatchString(out) {
		t.Errorf("exit %d, want 1 and WARNING", status)
	}
	status, out = checkCmd(t, "--socks", socks, "--warn", "100ms", "--crit", "200ms", slow)
	if status != 2 || !strings.HasPrefix(out, "ONIONMX CRITICAL - 0 of 1 targets answered EHLO; failed: "+slow+" (0.") {
		t.Errorf("exit %d, want 2 and CRITICAL", status)
	}
	if !strings.Contains(out, "\n"+slow+": FAILED - EHLO answered in 0.") {
		t.Error("no FAILED line")
	}
}

// A domain with several SRV targets: each is checked, and labelled with
// the domain and the target.
func TestCheckSRV(t *testing.T) {
	o1, o2 := oniontest.New(), oniontest.New()
	sink := smtptest.New(t)
	socks := checkTor(t, map[string]string{o1: sink.Addr})
	dns := dnstest.New(t)
	dns.SetSRV("_onion-mx._tcp.two.example.",
		dnstest.SRV{Priority: 0, Weight: 1, Port: 25, Target: o1},
		dnstest.SRV{Priority: 10, Weight: 1, Port: 2525, Target: o2},
		dnstest.SRV{Priority: 20, Weight: 1, Port: 25, Target: "mx.two.example"})

	status, out := checkCmd(t, "--socks", socks, "--dns", dns.Addr(), "two.example")
	if status != 1 {
		t.Errorf("exit %d, want 1", status)
	}
	for _, want := range []string{
		"ONIONMX WARNING - 1 of 2 targets answered EHLO (",
		"; failed: two.example/[" + o2 + "]:2525 | 'two.example/[" + o1 + "]:25'=",
		" 'two.example/[" + o2 + "]:2525'=U;20;40;0;50\n",
		"\ntwo.example/[" + o1 + "]:25: OK - EHLO answered in ",
		"; target [" + o1 + "]:25 from DNS SRV _onion-mx._tcp.two.example.\n",
		"\ntwo.example/[" + o2 + "]:2525: FAILED - connect to " + o2 + ":2525 via Tor: onion service descriptor not found (SOCKS reply F0); target [" + o2 + "]:2525 from DNS SRV _onion-mx._tcp.two.example.\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the output", want)
		}
	}
	// The clear-net target was never dialled.
	if n := strings.Count(out, "\n"); n != 3 {
		t.Errorf("%d lines, want 3", n)
	}
}

// Issue 9, case 11: Postfix's smtpd_delay_reject answers the sender
// restrictions at RCPT TO. The probe's sender in .invalid fails
// reject_unknown_sender_domain there, which says nothing about relaying:
// WARNING, not OK. With --probe-sender a sender the receiver accepts, the
// relay restriction answers: OK.
func TestCheckRelayTestSenderRejected(t *testing.T) {
	o := oniontest.New()
	sink := smtptest.New(t)
	var mu sync.Mutex
	var from string
	sink.SetHooks(checkRefuseMail(t, smtptest.Hooks{
		Mail: func(_ *smtp.Conn, f string) error { mu.Lock(); from = f; mu.Unlock(); return nil },
		Rcpt: func(_ *smtp.Conn, to string) error {
			mu.Lock()
			defer mu.Unlock()
			if strings.HasSuffix(from, ".invalid") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 8}, Message: "<" + from + ">: Sender address rejected: Domain not found"}
			}
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + to + ">: Relay access denied"}
		},
	}))
	socks := checkTor(t, map[string]string{o: sink.Addr})

	status, out := checkCmd(t, "--socks", socks, "--relay-test", o)
	if status != 1 || !strings.HasPrefix(out, "ONIONMX WARNING - 1 of 1 targets answered EHLO (") || !strings.Contains(out, "; relay test inconclusive: "+o+" |") {
		t.Errorf("exit %d, want 1 and WARNING", status)
	}
	if want := "; relay test inconclusive: RCPT TO:<probe@onionmx-relay-test.invalid> refused, but not as relaying: 550 5.1.8 <probe@onionmx-relay-test.invalid>: Sender address rejected: Domain not found (the sender was refused: give one it accepts with --probe-sender)\n"; !strings.Contains(out, want) {
		t.Errorf("no %q", want)
	}

	for _, sender := range []string{"postmaster@example.org", "<>"} {
		status, out = checkCmd(t, "--socks", socks, "--relay-test", "--probe-sender", sender, o)
		if status != 0 || !strings.HasPrefix(out, "ONIONMX OK - 1 of 1 targets answered EHLO (") || !strings.Contains(out, "; relay test passed: RCPT TO:<probe@onionmx-relay-test.invalid> rejected: 554 5.7.1 ") {
			t.Errorf("--probe-sender %s: exit %d, want 0 and OK", sender, status)
		}
	}
	mu.Lock()
	if from != "" {
		t.Errorf("the last MAIL FROM was <%s>, want <>", from)
	}
	mu.Unlock()
	if n := len(sink.Messages()); n != 0 {
		t.Errorf("%d messages were accepted", n)
	}
}
