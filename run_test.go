package main

import (
	"crypto/rand"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
	"github.com/onionmx/onionmx/lookup"
)

// fakeTor routes every onion to a sink.
func fakeTor(t *testing.T) (socks string, onion string, sink *smtptest.Sink) {
	key := make([]byte, 32)
	rand.Read(key)
	sink = smtptest.New(t)
	s := sockstest.New(t, func(sockstest.Request) sockstest.Response { return sockstest.Response{Dial: sink.Addr} })
	return s.Addr, lookup.OnionFromKey(key), sink
}

type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("reading went wrong") }

// TestPanicDefers: a panic (exit status 2 from Go's runtime) would bounce
// the message; run recovers it into a temporary failure.
func TestPanicDefers(t *testing.T) {
	socks, onion, sink := fakeTor(t)
	var out strings.Builder
	status := run([]string{"onionmx", "deliver", "-f", "a@b.test", "--socks", socks, "--helo", "h.test",
		"--nexthop", "[" + onion + "]", "--", "u@c.test"}, panicReader{}, &out, &out)
	if status != 75 || !strings.HasPrefix(out.String(), "4.3.0 internal error: panic: reading went wrong") {
		t.Fatalf("status %d, output %q; want 75 and 4.3.0", status, out.String())
	}
	if n := len(sink.Messages()); n != 0 {
		t.Fatalf("sink accepted %d messages", n)
	}
}

// TestOutputOneShortLine: however long and multi-line the remote's reply,
// Postfix gets one line well under its 4096 bytes.
func TestOutputOneShortLine(t *testing.T) {
	socks, onion, sink := fakeTor(t)
	long := strings.Repeat("very long reason ", 100)
	sink.SetHooks(smtptest.Hooks{Rcpt: func(*smtp.Conn, string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: long + "\n" + long + "\n" + long}
	}})
	var stdout, stderr strings.Builder
	status := run([]string{"onionmx", "deliver", "-f", "a@b.test", "--socks", socks, "--helo", "h.test",
		"--nexthop", "[" + onion + "]", "--", "u@c.test"}, strings.NewReader("Subject: x\n\nbody\n"), &stdout, &stderr)
	out := stderr.String()
	if status != 69 || !strings.HasPrefix(out, "5.7.1 host ") || stdout.Len() != 0 {
		t.Fatalf("status %d, stdout %q, stderr %.300q...", status, stdout.String(), out)
	}
	if strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\n") || len(out) > maxOutput+1 {
		t.Fatalf("output is %d bytes on %d lines, want one line of at most %d", len(out), strings.Count(out, "\n"), maxOutput)
	}
}

var _ io.Reader = panicReader{}

// TestGuessedEHLONameNoted: without --helo on a host whose name has no
// domain, the EHLO name is formed as Postfix forms myhostname
// ("vm.localdomain"), and when the remote refuses the delivery the line
// Postfix logs says the name was a guess.
func TestGuessedEHLONameNoted(t *testing.T) {
	name, qualified := deliver.Hostname()
	if qualified {
		t.Skip("this host has a fully qualified name")
	}
	socks, onion, sink := fakeTor(t)
	sink.SetHooks(smtptest.Hooks{Rcpt: func(*smtp.Conn, string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no thanks"}
	}})
	var out strings.Builder
	status := run([]string{"onionmx", "deliver", "-f", "a@b.test", "--socks", socks,
		"--nexthop", "[" + onion + "]", "--", "u@c.test"}, strings.NewReader("Subject: x\n\nbody\n"), &out, &out)
	if status != 69 || !strings.Contains(out.String(), "(note: the EHLO name "+name+" is a guess") {
		t.Fatalf("status %d, output %q", status, out.String())
	}
	if got := sink.Connections(); got != 1 {
		t.Fatalf("%d sessions", got)
	}
}

// TestSocksHint: a --socks that names an SMTP server instead of Tor is a
// configuration error, and the command, not package tor, names the flag.
func TestSocksHint(t *testing.T) {
	_, onion, sink := fakeTor(t)
	var stdout, stderr strings.Builder
	status := run([]string{"onionmx", "deliver", "-f", "a@b.test", "--socks", sink.Addr, "--helo", "h.test",
		"--nexthop", "[" + onion + "]", "--", "u@c.test"}, strings.NewReader("Subject: x\n\nbody\n"), &stdout, &stderr)
	want := "4.3.5 Tor SocksPort " + sink.Addr + ` is not a SOCKS5 server: its answer began with "2", as an SMTP server's 220 greeting does (check --socks)` + "\n"
	if status != 78 || stderr.String() != want {
		t.Fatalf("status %d, output %q\nwant 78 and %q", status, stderr.String(), want)
	}
}
