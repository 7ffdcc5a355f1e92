package main

import (
	"crypto/sha256"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/proctest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// bigMessage is a message of n bytes: headers, then 76-character lines.
type bigMessage struct {
	n, off int64
}

func (m *bigMessage) Read(p []byte) (int, error) {
	if m.off >= m.n {
		return 0, io.EOF
	}
	const head = "From: a@sender.test\nSubject: big\n\n"
	i := 0
	for ; i < len(p) && m.off < m.n; i, m.off = i+1, m.off+1 {
		switch {
		case m.off < int64(len(head)):
			p[i] = head[m.off]
		case m.off%77 == 76 || m.off == m.n-1:
			p[i] = '\n'
		case m.off%77 == 0:
			p[i] = '.' // every line starts with a dot: dot-stuffing at scale
		default:
			p[i] = 'a' + byte(m.off%26)
		}
	}
	return i, nil
}

// TestLargeMessageMemory delivers a 200 MiB message with the real binary
// and checks that its peak memory stays far below the message's size: the
// body is streamed, never held.
func TestLargeMessageMemory(t *testing.T) {
	const size = 200 << 20
	bin := onionmxBinary(t)

	onion := oniontest.New()
	sink := smtptest.New(t, func(s *smtp.Server) { s.MaxMessageBytes = 1 << 30 })
	socks := sockstest.New(t, func(sockstest.Request) sockstest.Response { return sockstest.Response{Dial: sink.Addr} })

	cmd := exec.Command(bin, "deliver", "-f", "a@sender.test", "--socks", socks.Addr, "--helo", "sender.test",
		"--nexthop", "["+onion+"]", "--", "user@recv.test")
	cmd.Stdin = &bigMessage{n: size}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	peak := proctest.PeakRSS(cmd.Process.Pid, 10*time.Millisecond)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	maxRSS := <-peak
	if !strings.Contains(out.String(), ".onion: 250 ") {
		t.Fatalf("output %q", out.String())
	}
	msgs := sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink has %d messages", len(msgs))
	}
	// The sink sees CRLF line ends: one more byte per line.
	h := sha256.New()
	io.Copy(crlf{h}, &bigMessage{n: size})
	if got := msgs[0]; [32]byte(h.Sum(nil)) != got.SHA256 {
		t.Fatalf("the sink got %d bytes that differ from the %d sent", got.Size, size)
	}
	t.Logf("a %d MiB message: peak RSS of onionmx %.1f MiB", size>>20, float64(maxRSS)/(1<<20))
	if maxRSS > 32<<20 {
		t.Errorf("peak RSS %d MiB for a %d MiB message: the body is not streamed", maxRSS>>20, size>>20)
	}
}

// crlf writes LF line ends as CRLF.
type crlf struct{ w io.Writer }

func (c crlf) Write(p []byte) (int, error) {
	_, err := c.w.Write([]byte(strings.ReplaceAll(string(p), "\n", "\r\n")))
	return len(p), err
}
