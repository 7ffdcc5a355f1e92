package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"

	"github.com/onionmx/onionmx/internal/proctest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// The tests in this file run the built binary, as pipe(8) runs it, against
// remotes that misbehave, and check what it says, how it exits and what
// arrives. ONIONMX_TEST_BIN runs them against another build.

// result is how a run of the binary ended.
type result struct {
	out      string // stdout and stderr
	code     int    // exit status; -1 when killed by a signal
	signal   syscall.Signal
	peakRSS  int64
	overRSS  bool // killed for going over rssKill
	duration time.Duration
}

// rssKill ends a run whose memory grows past it: the test fails, and does
// not take the machine down with it.
const rssKill = 256 << 20

// runBin runs "onionmx deliver" with args after "deliver", stdin as
// its input, and waits for it, sampling its peak RSS.
func runBin(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	start := time.Now()
	cmd, out := startDeliver(t, stdin, args...)
	var r result
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if rss := proctest.RSS(cmd.Process.Pid); rss > rssKill {
				r.overRSS = true
				cmd.Process.Kill()
				return
			}
		}
	}()
	peak := proctest.PeakRSS(cmd.Process.Pid, 5*time.Millisecond)
	err := cmd.Wait()
	r.duration = time.Since(start)
	r.peakRSS = <-peak
	select {
	case <-done:
	default:
		done <- struct{}{}
	}
	r.out = out.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.signal = ws.Signal()
		}
	default:
		t.Fatal(err)
	}
	return r
}

// deferred checks that a run deferred the message: exit 75 and one line
// that starts with status.
func (r result) deferred(t *testing.T, status string) {
	t.Helper()
	if r.code != 75 || !strings.HasPrefix(r.out, status+" ") || strings.Count(r.out, "\n") != 1 {
		t.Fatalf("exit %d (signal %v), output %.300q; want exit 75 and one line starting with %s", r.code, r.signal, r.out, status)
	}
}

// torTo is a fake Tor SocksPort that routes every onion to addr.
func torTo(t *testing.T, addr string) string {
	return sockstest.New(t, func(sockstest.Request) sockstest.Response { return sockstest.Response{Dial: addr} }).Addr
}

// scriptServer is a hand-written SMTP server: it greets, answers each
// command by its verb from answer (a reply, "\r\n" between the lines of a
// multi-line one; "" closes the connection, and so does "!close" after a
// reply), and keeps each DATA content it receives, exactly as it came,
// final dot excluded.
type scriptServer struct {
	*smtptest.Raw
	mu       sync.Mutex
	contents [][]byte
}

func newScriptServer(t *testing.T, greeting string, answer func(verb string) string) *scriptServer {
	s := &scriptServer{}
	s.Raw = smtptest.NewRaw(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := io.WriteString(c, greeting+"\r\n"); err != nil {
			return
		}
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			verb, _, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
			verb, _, _ = strings.Cut(strings.ToUpper(verb), ":")
			r := answer(verb)
			if r == "" {
				return
			}
			r, closing := strings.CutSuffix(r, "!close")
			if _, err := io.WriteString(c, r+"\r\n"); err != nil || closing {
				return
			}
			if verb != "DATA" || !strings.HasPrefix(r, "354") {
				continue
			}
			var content []byte
			for {
				l, err := br.ReadBytes('\n')
				if err != nil {
					return
				}
				if string(l) == ".\r\n" {
					break
				}
				content = append(content, l...)
			}
			s.mu.Lock()
			s.contents = append(s.contents, content)
			s.mu.Unlock()
			if r := answer("."); r == "" {
				return
			} else if _, err := io.WriteString(c, r+"\r\n"); err != nil {
				return
			}
		}
	})
	return s
}

func (s *scriptServer) received() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.contents...)
}

// esmtp answers like a plain server that accepts everything.
func esmtp(verb string) string {
	switch verb {
	case "EHLO":
		return "250-mx.test\r\n250 8BITMIME"
	case "HELO", "MAIL", "RCPT", "RSET", ".":
		return "250 2.0.0 Ok"
	case "DATA":
		return "354 go ahead"
	case "QUIT":
		return "221 bye"
	}
	return "502 5.5.2 what"
}

// deliverArgs are the arguments of a delivery to onion through socks.
func deliverArgs(socks, onion string, extra ...string) []string {
	return append([]string{"-f", "a@sender.test", "--socks", socks, "--helo", "sender.test",
		"--nexthop", "[" + onion + "]", "--connect-timeout", "10s", "--timeout", "30s"}, append(extra, "--", "user@recv.test")...)
}

// TestBareReplyCodes: RFC 5321's grammar allows a reply code with no text
// ("250" CRLF). Every reply a delivery reads may come so, and the message
// must be delivered, once.
func TestBareReplyCodes(t *testing.T) {
	s := newScriptServer(t, "220", func(verb string) string {
		switch verb {
		case "EHLO":
			return "250"
		case "DATA":
			return "354"
		case "QUIT":
			return "221"
		}
		return "250"
	})
	r := runBin(t, strings.NewReader("Subject: x\n\nbody\n"), deliverArgs(torTo(t, s.Addr), oniontest.New())...)
	if r.code != 0 || !strings.Contains(r.out, ": 250") {
		t.Fatalf("exit %d, output %q; want delivered", r.code, r.out)
	}
	if got := s.received(); len(got) != 1 || string(got[0]) != "Subject: x\r\n\r\nbody\r\n" {
		t.Fatalf("received %q", got)
	}
}

// TestLongLinesFolded: a receiver that enforces RFC 5321's 1000-octet line
// limit must get the message, with long lines folded as Postfix's smtp(8)
// folds them (smtp_line_length_limit = 998: CRLF and a space inserted), and
// a CR at the very end of the input kept.
func TestLongLinesFolded(t *testing.T) {
	strict := func(verb string) string {
		if verb == "." {
			return "250 2.0.0 Ok: queued as STRICT"
		}
		return esmtp(verb)
	}
	s := newScriptServer(t, "220 strict.test", strict)
	long := strings.Repeat("x", 2500)
	in := "Subject: " + strings.Repeat("s", 1200) + "\n\n" + long + "\n." + long + "\n" + strings.Repeat("y", 998) + "\nabc\r"
	r := runBin(t, strings.NewReader(in), deliverArgs(torTo(t, s.Addr), oniontest.New())...)
	if r.code != 0 {
		t.Fatalf("exit %d, output %q; want delivered", r.code, r.out)
	}
	got := s.received()
	if len(got) != 1 {
		t.Fatalf("received %d messages", len(got))
	}
	for i, l := range strings.SplitAfter(string(got[0]), "\r\n") {
		if len(l) > 1000+1 { // a dot-stuffed line may carry one octet more, as with smtp(8)
			t.Errorf("line %d has %d octets with its CRLF", i+1, len(l))
		}
	}
	want := "Subject: " + strings.Repeat("s", 998-9) + "\r\n " + strings.Repeat("s", 1200-(998-9)) + "\r\n" +
		"\r\n" +
		long[:998] + "\r\n " + long[998:998+997] + "\r\n " + long[998+997:] + "\r\n" +
		".." + long[:997] + "\r\n " + long[997:997+997] + "\r\n " + long[997+997:] + "\r\n" +
		strings.Repeat("y", 998) + "\r\n" +
		"abc\r\r\n"
	if string(got[0]) != want {
		t.Fatalf("received\n%.400q...\nwant\n%.400q...", got[0], want)
	}
}

// TestTLSMayNeverWorseThanNone: "--tls may" is opportunistic, like
// Postfix's smtp_tls_security_level = may. Whatever --tls none delivers,
// --tls may delivers too.
func TestTLSMayNeverWorseThanNone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(verb string) string
		conns  int // connections --tls may needs
	}{
		{"helo-only server", func(verb string) string {
			if verb == "EHLO" {
				return "500 5.5.1 command unrecognized"
			}
			return esmtp(verb)
		}, 1},
		{"starttls refused 502", withSTARTTLS("502 5.5.1 not implemented"), 1},
		{"starttls refused 454", withSTARTTLS("454 4.7.0 TLS not available due to local problem"), 1},
		{"handshake fails", withSTARTTLS("220 2.0.0 go ahead!close"), 2},
		{"data after the 220 to STARTTLS", withSTARTTLS("220 2.0.0 go ahead\r\n250 injected"), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []string{"none", "may"} {
				s := newScriptServer(t, "220 mx.test ESMTP", tc.answer)
				r := runBin(t, strings.NewReader("Subject: x\n\nbody\n"),
					deliverArgs(torTo(t, s.Addr), oniontest.New(), "--tls", mode)...)
				if r.code != 0 || len(s.received()) != 1 {
					t.Fatalf("--tls %s: exit %d, output %q, %d messages received; want delivered once", mode, r.code, r.out, len(s.received()))
				}
				if mode == "may" && s.Connections() != tc.conns {
					t.Errorf("--tls may took %d connections, want %d", s.Connections(), tc.conns)
				}
			}
		})
	}
}

// withSTARTTLS answers like esmtp, offering STARTTLS and answering it
// with starttls.
func withSTARTTLS(starttls string) func(verb string) string {
	return func(verb string) string {
		switch verb {
		case "EHLO":
			return "250-mx.test\r\n250 STARTTLS"
		case "STARTTLS":
			return starttls
		}
		return esmtp(verb)
	}
}

// stream writes n octets of c to w in chunks, until w fails.
func stream(w io.Writer, c byte, n int64) {
	chunk := bytes.Repeat([]byte{c}, 64<<10)
	for n > 0 {
		k := min(n, int64(len(chunk)))
		if _, err := w.Write(chunk[:k]); err != nil {
			return
		}
		n -= k
	}
}

// TestHostileRepliesMemory: whatever a remote sends, onionmx's memory stays
// under 32 MiB, and a reply past the limits defers with 4.5.0 (it never
// dies of it: under a memory limit that would be exit 2, a bounce).
func TestHostileRepliesMemory(t *testing.T) {
	for _, tc := range []struct {
		name  string
		serve func(c net.Conn, br *bufio.Reader)
	}{
		{"1 GB greeting line", func(c net.Conn, _ *bufio.Reader) {
			io.WriteString(c, "220 ")
			stream(c, 'x', 1<<30)
		}},
		{"300,000-line EHLO reply", func(c net.Conn, br *bufio.Reader) {
			io.WriteString(c, "220 mx.test\r\n")
			br.ReadString('\n')
			w := bufio.NewWriter(c)
			for i := range 300_000 {
				fmt.Fprintf(w, "250-EXTENSION%d\r\n", i)
			}
			io.WriteString(w, "250 END\r\n")
			w.Flush()
		}},
		{"1 GB reply to MAIL", func(c net.Conn, br *bufio.Reader) {
			io.WriteString(c, "220 mx.test\r\n")
			br.ReadString('\n')
			io.WriteString(c, "250 mx.test\r\n")
			br.ReadString('\n')
			io.WriteString(c, "250-")
			stream(c, 'x', 1<<30)
		}},
		{"endless continuation lines after the final dot", func(c net.Conn, br *bufio.Reader) {
			io.WriteString(c, "220 mx.test\r\n")
			inData := false
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				switch {
				case inData && l != ".\r\n":
				case strings.HasPrefix(l, "EHLO"):
					io.WriteString(c, "250 mx.test\r\n")
				case strings.HasPrefix(l, "DATA"):
					inData = true
					io.WriteString(c, "354 go\r\n")
				case l == ".\r\n":
					line := []byte("250-queued\r\n")
					w := bufio.NewWriterSize(c, 64<<10)
					for {
						if _, err := w.Write(line); err != nil {
							return
						}
					}
				default:
					io.WriteString(c, "250 ok\r\n")
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := smtptest.NewRaw(t, func(c net.Conn) { tc.serve(c, bufio.NewReader(c)) })
			r := runBin(t, strings.NewReader("Subject: x\n\nbody\n"), deliverArgs(torTo(t, raw.Addr), oniontest.New())...)
			t.Logf("peak RSS %.1f MiB, %v", float64(r.peakRSS)/(1<<20), r.duration.Round(time.Millisecond))
			if r.overRSS || r.peakRSS > 32<<20 {
				t.Fatalf("peak RSS %d MiB (killed at %d MiB: %v), want under 32 MiB; output %.200q", r.peakRSS>>20, rssKill>>20, r.overRSS, r.out)
			}
			r.deferred(t, "4.5.0")
		})
	}
}

// TestSignals: a signal (postfix stop, a person's ^C) never kills a
// delivery in a way that bounces or truncates: before the final dot the
// connection is closed without it, one 4.x.y line, exit 75; after it, the
// reply is awaited and the outcome reported.
func TestSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT} {
		t.Run("before the dot/"+sig.String(), func(t *testing.T) {
			started := make(chan struct{}, 1)
			var dots int
			var mu sync.Mutex
			raw := smtptest.NewRaw(t, func(c net.Conn) {
				io.WriteString(c, "220 mx.test\r\n")
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(l, "DATA") {
						io.WriteString(c, "354 go\r\n")
						// Read the body slowly: it is still on its way when
						// the signal comes.
						for {
							l, err := br.ReadString('\n')
							if err != nil {
								return
							}
							select {
							case started <- struct{}{}:
							default:
							}
							if l == ".\r\n" {
								mu.Lock()
								dots++
								mu.Unlock()
								io.WriteString(c, "250 queued\r\n")
								break
							}
							time.Sleep(time.Millisecond)
						}
						continue
					}
					io.WriteString(c, "250 ok\r\n")
				}
			})
			cmd, out := startDeliver(t, &bigMessage{n: 4 << 20}, deliverArgs(torTo(t, raw.Addr), oniontest.New())...)
			select {
			case <-started:
			case <-time.After(20 * time.Second):
				t.Fatal("the body never started")
			}
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 75 || !strings.HasPrefix(out.String(), "4.3.0 ") || strings.Count(out.String(), "\n") != 1 {
				t.Fatalf("%v: %v, output %q; want exit 75 and one 4.3.0 line", sig, err, out.String())
			}
			time.Sleep(100 * time.Millisecond)
			mu.Lock()
			defer mu.Unlock()
			if dots != 0 {
				t.Fatalf("the final dot was sent after %v", sig)
			}
		})
	}
	t.Run("after the dot", func(t *testing.T) {
		dot := make(chan struct{}, 1)
		raw := newScriptServer(t, "220 mx.test", func(verb string) string {
			if verb != "." {
				return esmtp(verb)
			}
			dot <- struct{}{}
			// A slow queue manager: the reply takes a while.
			time.Sleep(time.Second)
			return "250 2.0.0 Ok: queued as SLOW"
		})
		cmd := exec.Command(onionmxBinary(t), append([]string{"deliver"}, deliverArgs(torTo(t, raw.Addr), oniontest.New())...)...)
		cmd.Stdin = strings.NewReader("Subject: x\n\nbody\n")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-dot:
		case <-time.After(20 * time.Second):
			t.Fatal("no final dot")
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil || !strings.Contains(out.String(), "queued as SLOW") {
			t.Fatalf("%v, output %q; want the delivery reported", err, out.String())
		}
	})
}

// TestSuccessLineFitsPostfixLog: pipe(8) logs the first 100 characters of
// a successful command's output. They must name the onion and end with
// the remote's queue id.
func TestSuccessLineFitsPostfixLog(t *testing.T) {
	for _, reply := range []string{
		"250 2.0.0 Ok: queued as 4DFED9862A1",                // Postfix
		"250 2.0.0 Ok: queued as 4Xk9sT2bqLz9xYw",            // Postfix, long queue ids
		"250 2.0.0 Ok: 57396523 bytes queued as C869C986D34", // Postfix, to BDAT
		"250 OK id=1tXyZa-000abc-Ab",                         // Exim
		"250 2.0.0 Ok: queued as 4DFED9862A1 (rest)",         // anything longer is cut at the end
	} {
		s := newScriptServer(t, "220 mx.test", func(verb string) string {
			if verb == "." {
				return reply
			}
			return esmtp(verb)
		})
		onion := oniontest.New()
		r := runBin(t, strings.NewReader("Subject: x\n\nbody\n"), deliverArgs(torTo(t, s.Addr), onion)...)
		line := strings.TrimSuffix(r.out, "\n")
		if r.code != 0 {
			t.Fatalf("exit %d: %q", r.code, r.out)
		}
		logged := line[:min(len(line), 100)]
		_, text, _ := strings.Cut(reply, " ")
		if ec, rest, ok := strings.Cut(text, " "); ok && strings.HasPrefix(ec, "2.") {
			text = rest
		}
		id := text[strings.LastIndexAny(text, " =")+1:]
		if id == "(rest)" {
			id = "4DFED9862A1"
		}
		if !strings.Contains(logged, onion) || !strings.Contains(logged, id) {
			t.Errorf("Postfix would log %q: want %s and %s in it", logged, onion, id)
		}
	}
}

// TestEHLORefusedFallsBackToHELO: as Postfix's smtp(8), any refusal of
// EHLO but 421 falls back to HELO, and any 2xx is a success. (go-smtp's
// client falls back only after 500 and 502, and wants 250.)
func TestEHLORefusedFallsBackToHELO(t *testing.T) {
	for _, ehlo := range []string{"500 5.5.1 what", "501 5.5.4 syntax", "504 5.5.2 no", "550 5.7.1 not you", "554 5.7.1 no ESMTP", "451 4.3.0 later", "252 fine, I guess"} {
		s := newScriptServer(t, "220 mx.test ESMTP", func(verb string) string {
			if verb == "EHLO" {
				return ehlo
			}
			return esmtp(verb)
		})
		r := runBin(t, strings.NewReader("Subject: x\n\nbody\n"), deliverArgs(torTo(t, s.Addr), oniontest.New())...)
		if r.code != 0 || len(s.received()) != 1 {
			t.Errorf("EHLO answered %q: exit %d, %q; want delivered", ehlo, r.code, r.out)
		}
	}
	s := newScriptServer(t, "220 mx.test ESMTP", func(verb string) string {
		if verb == "EHLO" {
			return "421 4.3.2 closing"
		}
		return esmtp(verb)
	})
	r := runBin(t, strings.NewReader("Subject: x\n\nbody\n"), deliverArgs(torTo(t, s.Addr), oniontest.New())...)
	r.deferred(t, "4.3.2")
}

// TestGreetingWithOurName: a greeting that names us is no loop (smtp(8)
// only warns about it); the name in the reply to EHLO decides.
func TestGreetingWithOurName(t *testing.T) {
	s := newScriptServer(t, "220 sender.test ESMTP", esmtp)
	r := runBin(t, strings.NewReader("Subject: x\n\nbody\n"), deliverArgs(torTo(t, s.Addr), oniontest.New())...)
	if r.code != 0 {
		t.Fatalf("exit %d, %q; want delivered", r.code, r.out)
	}
	s = newScriptServer(t, "220 mx.test ESMTP", func(verb string) string {
		if verb == "EHLO" {
			return "250-sender.test\r\n250 8BITMIME"
		}
		return esmtp(verb)
	})
	r = runBin(t, strings.NewReader("Subject: x\n\nbody\n"), deliverArgs(torTo(t, s.Addr), oniontest.New())...)
	if r.code != 69 || !strings.HasPrefix(r.out, "5.4.6 ") {
		t.Fatalf("EHLO names us: exit %d, %q; want 5.4.6", r.code, r.out)
	}
}

// TestNextTargetAfterSoftFailure: until DATA the message is untouched, so
// a temporary failure at MAIL, RCPT or DATA, or a connection lost after
// EHLO, tries the next SRV target, as smtp(8) keeps the recipients for the
// next server.
func TestNextTargetAfterSoftFailure(t *testing.T) {
	for _, fail := range []struct{ verb, reply string }{
		{"MAIL", "451 4.3.0 queue file write error"},
		{"RCPT", "452 4.2.2 mailbox full"},
		{"DATA", "451 4.3.0 not now"},
		{"MAIL", ""}, // the connection closes
	} {
		primary := newScriptServer(t, "220 primary.test ESMTP", func(verb string) string {
			if verb == fail.verb {
				return fail.reply
			}
			return esmtp(verb)
		})
		backup := newScriptServer(t, "220 backup.test ESMTP", esmtp)
		socks, dns := twoTargets(t, primary.Addr, backup.Addr)
		r := runBin(t, strings.NewReader("Subject: x\n\nbody\n"), "-f", "a@sender.test", "--socks", socks.Addr,
			"--helo", "sender.test", "--dns", dns.Addr(), "--timeout", "30s", "--", "user@recv.test")
		if r.code != 0 || len(backup.received()) != 1 || len(primary.received()) != 0 {
			t.Errorf("primary answers %s with %q: exit %d, %q, backup got %d; want delivered by the backup", fail.verb, fail.reply, r.code, r.out, len(backup.received()))
		}
	}
}

// TestTLSMayBrokenAfterHandshake: with --tls may, TLS that breaks after a
// successful handshake, before the message is touched, is tried again in
// plaintext on a new connection: --tls none would deliver.
func TestTLSMayBrokenAfterHandshake(t *testing.T) {
	cfg := smtptest.SelfSignedTLS(t)
	for _, after := range []string{"close", "garbage"} {
		var mu sync.Mutex
		delivered := 0
		raw := smtptest.NewRaw(t, func(c net.Conn) {
			c.SetDeadline(time.Now().Add(30 * time.Second))
			io.WriteString(c, "220 mx.test ESMTP\r\n")
			br := bufio.NewReader(c)
			inData := false
			for {
				l, err := br.ReadString('\n')
				if err != nil {
					return
				}
				switch {
				case inData && l == ".\r\n":
					inData = false
					mu.Lock()
					delivered++
					mu.Unlock()
					io.WriteString(c, "250 2.0.0 Ok: queued\r\n")
				case inData:
				case strings.HasPrefix(l, "EHLO"):
					io.WriteString(c, "250-mx.test\r\n250 STARTTLS\r\n")
				case strings.HasPrefix(l, "STARTTLS"):
					io.WriteString(c, "220 2.0.0 Ready to start TLS\r\n")
					tc := tls.Server(c, cfg)
					if err := tc.Handshake(); err != nil {
						return
					}
					if after == "garbage" {
						c.Write([]byte("\x00\x01 this is not a TLS record\r\n"))
					}
					return
				case strings.HasPrefix(l, "DATA"):
					inData = true
					io.WriteString(c, "354 go\r\n")
				default:
					io.WriteString(c, "250 ok\r\n")
				}
			}
		})
		r := runBin(t, strings.NewReader("Subject: x\n\nbody\n"), deliverArgs(torTo(t, raw.Addr), oniontest.New(), "--tls", "may")...)
		mu.Lock()
		n := delivered
		mu.Unlock()
		if r.code != 0 || n != 1 || raw.Connections() != 2 {
			t.Errorf("TLS %s after the handshake: exit %d, %q, %d delivered over %d connections; want delivered on the second, in plaintext", after, r.code, r.out, n, raw.Connections())
		}
	}
}

// TestStalledInput: a writer that stays alive and silent, or a person who
// never types ^D, does not hold onionmx beyond --timeout, and a signal
// ends the wait at once: one 4.3.0 line, exit 75, nothing delivered.
func TestStalledInput(t *testing.T) {
	for _, tc := range []struct {
		name    string
		written string
		sig     syscall.Signal
		timeout string
		want    string
	}{
		{"deadline in the body", "Subject: x\n\n" + strings.Repeat("line\n", 1000), 0, "2s", "the delivery deadline passed"},
		{"deadline before any input", "", 0, "2s", "the delivery deadline passed"},
		{"SIGTERM in the body", "Subject: x\n\n" + strings.Repeat("line\n", 1000), syscall.SIGTERM, "60s", "interrupted (SIGTERM)"},
		{"SIGINT before any input", "", syscall.SIGINT, "60s", "interrupted (SIGINT)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScriptServer(t, "220 mx.test ESMTP", esmtp)
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer pw.Close()
			cmd, out := startDeliver(t, pr, withTimeout(deliverArgs(torTo(t, s.Addr), oniontest.New()), tc.timeout)...)
			pr.Close()
			pw.Write([]byte(tc.written))
			if tc.sig != 0 {
				// Once onionmx waits: connected, or waiting for the
				// first octet of the message.
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
					if s.Connections() > 0 || tc.written == "" && watching(cmd.Process.Pid) {
						break
					}
				}
				cmd.Process.Signal(tc.sig)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 75 || !strings.HasPrefix(out.String(), "4.3.0 ") || !strings.Contains(out.String(), tc.want) {
					t.Fatalf("%v, %q; want exit 75 and a 4.3.0 line with %q", err, out.String(), tc.want)
				}
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still running 20 s later (output %q)", out.String())
			}
			if n := len(s.received()); n != 0 {
				t.Fatalf("%d messages delivered", n)
			}
		})
	}
}

// TestSignalsAtStartup: a signal while deliver loads its maps (before it
// has a delivery to interrupt) is caught too: no exit 2 (SIGQUIT's
// default), no death by the signal, one 4.3.0 line and exit 75.
func TestSignalsAtStartup(t *testing.T) {
	var b strings.Builder
	for i := range 400_000 {
		fmt.Fprintf(&b, "d%d.example onionmx:[%s]\n", i, oniontest.New())
	}
	mapFile := filepath.Join(t.TempDir(), "transport")
	if err := os.WriteFile(mapFile, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGQUIT, syscall.SIGTERM} {
		s := newScriptServer(t, "220 mx.test ESMTP", esmtp)
		cmd := exec.Command(onionmxBinary(t), append([]string{"deliver", "--map", mapFile}, deliverArgs(torTo(t, s.Addr), oniontest.New())...)...)
		cmd.Stdin = strings.NewReader("Subject: x\n\nbody\n")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Once it reads the map: main has run, the maps are loading.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !holds(cmd.Process.Pid, mapFile); {
			time.Sleep(time.Millisecond)
		}
		cmd.Process.Signal(sig)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 75 || !strings.HasPrefix(out.String(), "4.3.0 delivery interrupted ("+unix.SignalName(sig)+")") {
			t.Errorf("%v while loading the map: %v, %q; want exit 75 and 4.3.0", sig, err, out.String())
		}
		if n := len(s.received()); n != 0 {
			t.Errorf("%d messages delivered", n)
		}
	}
}

// holds reports whether process pid has file open.
func holds(pid int, file string) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	for _, fd := range fds {
		if l, _ := os.Readlink(dir + "/" + fd.Name()); l == file {
			return true
		}
	}
	return false
}

// twoTargets publishes two onions for recv.test by SRV, the first to
// primary's address and the second, the backup, to backup's, and returns
// the fake Tor and the DNS server that say so.
func twoTargets(t *testing.T, primary, backup string) (*sockstest.Server, *dnstest.Server) {
	o1, o2 := oniontest.New(), oniontest.New()
	socks := sockstest.New(t, func(r sockstest.Request) sockstest.Response {
		if r.Host == o1 {
			return sockstest.Response{Dial: primary}
		}
		return sockstest.Response{Dial: backup}
	})
	dns := dnstest.New(t)
	dns.SetSRV("_onion-mx._tcp.recv.test.", dnstest.SRV{Priority: 0, Weight: 1, Port: 25, Target: o1 + "."},
		dnstest.SRV{Priority: 10, Weight: 1, Port: 25, Target: o2 + "."})
	return socks, dns
}

// startDeliver starts onionmx deliver with args, the message read from
// stdin, its output in out.
func startDeliver(t *testing.T, stdin io.Reader, args ...string) (cmd *exec.Cmd, out *bytes.Buffer) {
	t.Helper()
	cmd = exec.Command(onionmxBinary(t), append([]string{"deliver"}, args...)...)
	cmd.Stdin = stdin
	out = new(bytes.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, out
}

// withTimeout is args with --timeout d.
func withTimeout(args []string, d string) []string {
	for i, a := range args {
		if a == "--timeout" {
			args[i+1] = d
		}
	}
	return args
}
