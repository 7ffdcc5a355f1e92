package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/proctest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// Issue 9, case 2, for onionmx check: whatever a remote sends, the built
// binary's peak memory stays under 32 MiB, it blames the remote for what
// breaks the protocol or the limits (WARNING: the far end answered), and it
// neither dies of a signal nor exits 2, which is both what the Go runtime
// exits with when it runs out of memory and CRITICAL, "restart Tor".

// hostileSent counts what a hostile server wrote before the client hung up.
type hostileSent struct{ n atomic.Int64 }

// stream writes prefix, then chunk again and again up to n bytes in all,
// until a write fails: the client closed the connection.
func (s *hostileSent) stream(w io.Writer, prefix string, chunk byte, n int64) {
	m, err := io.WriteString(w, prefix)
	s.n.Add(int64(m))
	buf := []byte(strings.Repeat(string(chunk), 64<<10))
	for sent := int64(m); err == nil && sent < n; {
		m, err = w.Write(buf[:min(int64(len(buf)), n-sent)])
		sent += int64(m)
		s.n.Add(int64(m))
	}
}

// counted is a writer that counts into s.
func (s *hostileSent) counted(w io.Writer) io.Writer { return countingWriter{s, w} }

type countingWriter struct {
	s *hostileSent
	w io.Writer
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.s.n.Add(int64(n))
	return n, err
}

// write writes what it is given, until a write fails.
func (s *hostileSent) write(w io.Writer, text string) error {
	m, err := io.WriteString(w, text)
	s.n.Add(int64(m))
	return err
}

// command reads the client's next command and returns its verb.
func command(r *bufio.Reader) (string, bool) {
	l, err := r.ReadString('\n')
	if err != nil {
		return "", false
	}
	verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(l)), " ")
	return verb, true
}

// converse greets, then answers each command with answer(verb), until the
// client or answer ("" to hang up) ends it.
func (s *hostileSent) converse(c net.Conn, greeting string, answer func(verb string) string) {
	if s.write(c, greeting) != nil {
		return
	}
	r := bufio.NewReader(c)
	for {
		verb, ok := command(r)
		if !ok {
			return
		}
		a := answer(verb)
		if a == "" || s.write(c, a) != nil {
			return
		}
	}
}

func TestCheckHostileRemoteMemory(t *testing.T) {
	bin := onionmxBinary(t)
	const probe = "probe@onionmx-relay-test.invalid"
	cases := []struct {
		name   string
		serve  func(s *hostileSent, c net.Conn)
		relay  bool
		exit   int
		status string // regular expressions for the status line,
		line   string // and for the target's line, after its label
	}{
		{
			name: "a greeting line of 1 GB without a newline",
			serve: func(s *hostileSent, c net.Conn) {
				s.stream(c, "220 ", 'x', 1<<30)
			},
			exit:   1,
			status: `^ONIONMX WARNING - 1 of 2 targets answered EHLO \(slowest [0-9.]+s\); failed: \S+ \| `,
			line:   `: FAILED - not SMTP: the server sent a reply line longer than 2000 bytes as its greeting; connection closed$`,
		},
		{
			name: "an EHLO reply of 300,000 lines",
			serve: func(s *hostileSent, c net.Conn) {
				if s.write(c, "220 hostile.test ESMTP\r\n") != nil {
					return
				}
				if verb, _ := command(bufio.NewReader(c)); verb != "EHLO" {
					return
				}
				w := bufio.NewWriter(s.counted(c))
				w.WriteString("250-hostile.test\r\n")
				for i := range 300000 {
					if _, err := w.WriteString("250-X-EXTENSION-" + strings.Repeat("A", i%40) + "\r\n"); err != nil {
						return
					}
				}
				w.WriteString("250 8BITMIME\r\n")
				w.Flush()
			},
			exit:   1,
			status: `^ONIONMX WARNING - 1 of 2 targets answered EHLO \(slowest [0-9.]+s\); failed: \S+ \| `,
			line:   `: FAILED - not SMTP: the server sent a reply longer than 65536 bytes in reply to EHLO; connection closed; greeting: 220 hostile.test ESMTP$`,
		},
		{
			name: "an EHLO reply whose continuation lines change code, without end",
			serve: func(s *hostileSent, c net.Conn) {
				s.converse(c, "220 hostile.test ESMTP\r\n", func(verb string) string {
					if verb != "EHLO" {
						return ""
					}
					if s.write(c, "250-hostile.test\r\n") != nil {
						return ""
					}
					for s.write(c, strings.Repeat("251 x\r\n", 1000)) == nil {
					}
					return ""
				})
			},
			exit:   1,
			status: `^ONIONMX WARNING - 1 of 2 targets answered EHLO \(slowest [0-9.]+s\); failed: \S+ \| `,
			line:   `: FAILED - not SMTP: the server sent a reply whose lines have different codes \(250 and 251\) in reply to EHLO; connection closed; greeting: 220 hostile.test ESMTP$`,
		},
		{
			name: "a reply line of 10 MB after MAIL FROM in the relay test",
			serve: func(s *hostileSent, c net.Conn) {
				s.converse(c, "220 hostile.test ESMTP\r\n", func(verb string) string {
					switch verb {
					case "EHLO":
						return "250-hostile.test\r\n250 8BITMIME\r\n"
					case "MAIL":
						s.stream(c, "250 ", 'x', 10<<20)
					}
					return ""
				})
			},
			relay:  true,
			exit:   1,
			status: `^ONIONMX WARNING - 2 of 2 targets answered EHLO \(slowest [0-9.]+s\); relay test inconclusive: \S+ \| `,
			line:   `: OK - EHLO answered in [0-9.]+s \(connect [0-9.]+s\); greeting: 220 hostile.test ESMTP; relay test inconclusive: not SMTP: the server sent a reply line longer than 2000 bytes in reply to MAIL FROM; connection closed$`,
		},
		{
			name: "bare codes: 220, 250, 221",
			serve: func(s *hostileSent, c net.Conn) {
				s.converse(c, "220\r\n", func(verb string) string {
					switch verb {
					case "EHLO", "MAIL", "RSET":
						return "250\r\n"
					case "RCPT":
						return "554 5.7.1 <" + probe + ">: Relay access denied\r\n"
					case "QUIT":
						return "221\r\n"
					}
					return "502 5.5.2 what?\r\n"
				})
			},
			relay:  true,
			exit:   0,
			status: `^ONIONMX OK - 2 of 2 targets answered EHLO \(slowest [0-9.]+s\); none relays to a foreign domain \| `,
			line:   `: OK - EHLO answered in [0-9.]+s \(connect [0-9.]+s\); greeting: 220; relay test passed: RCPT TO:<` + probe + `> rejected: 554 5\.7\.1 <` + probe + `>: Relay access denied$`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var sent hostileSent
			// The peak is sampled while the process runs, and a check that
			// ends a hostile exchange at once takes a few milliseconds: a
			// second, well-behaved target that answers EHLO only after the
			// hostile server hung up keeps the process alive to be
			// sampled after the exchange.
			over := make(chan struct{})
			var once sync.Once
			srv := smtptest.NewRaw(t, func(c net.Conn) {
				defer once.Do(func() { close(over) })
				tc.serve(&sent, c)
			})
			companion := smtptest.New(t)
			companion.SetHooks(smtptest.Hooks{
				Hello: func(*smtp.Conn) error {
					select {
					case <-over:
					case <-time.After(20 * time.Second):
					}
					time.Sleep(200 * time.Millisecond)
					return nil
				},
				Rcpt: func(*smtp.Conn, string) error {
					return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + probe + ">: Relay access denied"}
				},
			})
			hostile, good := oniontest.New(), oniontest.New()
			routes := map[string]string{hostile: srv.Addr, good: companion.Addr}
			socks := sockstest.New(t, func(r sockstest.Request) sockstest.Response { return sockstest.Response{Dial: routes[r.Host]} })
			target := "[" + hostile + "]:25"
			args := []string{"check", "--socks", socks.Addr, "--helo", "checker.test", "--timeout", "30s", "--warn", "20s", "--crit", "25s"}
			if tc.relay {
				args = append(args, "--relay-test")
			}
			args = append(args, target, good)

			// A virtual memory limit keeps a regression from taking the
			// machine's memory: it dies of it, and the test says so.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", `ulimit -v 2097152 && exec "$0" "$@"`, bin}, args...)...)
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			start := time.Now()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			peak := proctest.PeakRSS(cmd.Process.Pid, 5*time.Millisecond)
			cmd.Wait()
			maxRSS := <-peak
			t.Logf("peak RSS %.1f MiB in %s; the server wrote %d bytes; exit %d\n%s%s", float64(maxRSS)/(1<<20),
				time.Since(start).Round(time.Millisecond), sent.n.Load(), cmd.ProcessState.ExitCode(), stdout.String(), stderr.String())

			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Fatalf("killed by %v", ws.Signal())
			}
			if code := cmd.ProcessState.ExitCode(); code != tc.exit {
				t.Errorf("exit %d, want %d", code, tc.exit)
			}
			switch {
			case maxRSS > 32<<20:
				t.Errorf("peak RSS %.1f MiB, want less than 32 MiB", float64(maxRSS)/(1<<20))
			case maxRSS < 2<<20:
				t.Errorf("peak RSS %.1f MiB: onionmx was not sampled", float64(maxRSS)/(1<<20))
			}
			if stderr.Len() > 0 {
				t.Errorf("stderr: %q", stderr.String())
			}
			lines := strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("%d lines of output, want 3", len(lines))
			}
			if !regexp.MustCompile(tc.status).MatchString(lines[0]) {
				t.Errorf("status line %q, want %q", lines[0], tc.status)
			}
			if want := "^" + regexp.QuoteMeta(target) + tc.line; !regexp.MustCompile(want).MatchString(lines[1]) {
				t.Errorf("target line %q, want %q", lines[1], want)
			}
			if want := "^" + good + `: OK - EHLO answered in `; !regexp.MustCompile(want).MatchString(lines[2]) {
				t.Errorf("companion's line %q, want %q", lines[2], want)
			}
		})
	}
}
