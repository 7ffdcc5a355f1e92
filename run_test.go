package main

import (
	"strings"
	"testing"

	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// fakeTor routes every onion to a sink.
func fakeTor(t *testing.T) (socks string, onion string, sink *smtptest.Sink) {
	sink = smtptest.New(t)
	s := sockstest.New(t, func(sockstest.Request) sockstest.Response { return sockstest.Response{Dial: sink.Addr} })
	return s.Addr, oniontest.New(), sink
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
