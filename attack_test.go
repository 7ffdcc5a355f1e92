package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// chunkServer offers PIPELINING and CHUNKING (or PIPELINING alone, when
// chunking is false) and reads the message slowly; it counts the
// connections, the message starts (body bytes seen), and the ends (a
// complete BDAT LAST, or the final dot).
type chunkServer struct {
	*smtptest.Raw
	started chan struct{}
	ends    atomic.Int32
	mail    string // the reply to MAIL
}

func newChunkServer(t *testing.T, chunking bool, mail string) *chunkServer {
	s := &chunkServer{started: make(chan struct{}, 1), mail: mail}
	ehlo := "250-mx.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
	if !chunking {
		ehlo = "250-mx.test\r\n250 PIPELINING\r\n"
	}
	s.Raw = smtptest.NewRaw(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(time.Minute))
		io.WriteString(c, "220 mx.test ESMTP\r\n")
		br := bufio.NewReader(c)
		started := func() {
			select {
			case s.started <- struct{}{}:
			default:
			}
		}
		var replies []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
			switch strings.ToUpper(verb) {
			case "EHLO":
				io.WriteString(c, ehlo)
			case "MAIL":
				replies = append(replies, s.mail)
			case "RCPT":
				replies = append(replies, "250 2.1.5 Ok")
			case "QUIT":
				io.WriteString(c, "221 bye\r\n")
				return
			case "DATA":
				replies = append(replies, "354 go")
				io.WriteString(c, strings.Join(replies, "\r\n")+"\r\n")
				replies = nil
				if !strings.HasPrefix(s.mail, "2") {
					continue
				}
				for i := 0; ; i++ {
					l, err := br.ReadString('\n')
					if err != nil {
						return
					}
					started()
					if l == ".\r\n" {
						s.ends.Add(1)
						io.WriteString(c, "250 2.0.0 queued\r\n")
						break
					}
					if i%50 == 0 {
						time.Sleep(time.Millisecond)
					}
				}
			case "BDAT":
				var n int64
				fmt.Sscanf(arg, "%d", &n)
				// Slowly: the chunk is on its way for a while.
				for n > 0 {
					k, err := io.CopyN(io.Discard, br, min(n, 4096))
					n -= k
					if err != nil {
						return
					}
					started()
					time.Sleep(time.Millisecond)
				}
				if strings.HasSuffix(arg, "LAST") {
					if strings.HasPrefix(s.mail, "2") {
						s.ends.Add(1)
					}
					replies = append(replies, "250 2.0.0 queued")
					io.WriteString(c, strings.Join(replies, "\r\n")+"\r\n")
					replies = nil
				} else {
					replies = append(replies, "250 2.0.0 chunk")
				}
			default:
				io.WriteString(c, "502 5.5.2 what\r\n")
			}
		}
	})
	return s
}

// TestAttackSignalDuringChunks: SIGTERM while BDAT chunks are on their
// way: exit 75, one 4.3.0 line, and no BDAT LAST (nor dot) completed.
func TestAttackSignalDuringChunks(t *testing.T) {
	for _, chunking := range []bool{true, false} {
		t.Run(fmt.Sprintf("chunking=%v", chunking), func(t *testing.T) {
			s := newChunkServer(t, chunking, "250 2.1.0 Ok")
			cmd, out := startDeliver(t, &bigMessage{n: 6 << 20}, deliverArgs(torTo(t, s.Addr), oniontest.New())...)
			select {
			case <-s.started:
			case <-time.After(20 * time.Second):
				t.Fatal("the body never started")
			}
			cmd.Process.Signal(syscall.SIGTERM)
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 75 || !strings.HasPrefix(out.String(), "4.3.0 ") || strings.Count(out.String(), "\n") != 1 {
				t.Fatalf("%v, output %q; want exit 75 and one 4.3.0 line", err, out.String())
			}
			time.Sleep(100 * time.Millisecond)
			if n := s.ends.Load(); n != 0 {
				t.Fatalf("the end of the message was sent %d times after SIGTERM", n)
			}
		})
	}
}

// TestAttackNextTargetAfterBody: with SRV targets, a primary that fails
// after the body was read (CHUNKING: the body goes before the replies)
// must not make the backup get a half-read body; it defers. One that fails
// before (PIPELINING alone: MAIL refused before the body) hands over.
func TestAttackNextTargetAfterBody(t *testing.T) {
	for _, tc := range []struct {
		chunking bool
		backup   int
	}{{true, 0}, {false, 1}} {
		t.Run(fmt.Sprintf("chunking=%v", tc.chunking), func(t *testing.T) {
			primary := newChunkServer(t, tc.chunking, "451 4.3.0 try later")
			backup := newChunkServer(t, tc.chunking, "250 2.1.0 Ok")
			socks, dns := twoTargets(t, primary.Addr, backup.Addr)
			r := runBin(t, &bigMessage{n: 3 << 20}, "-f", "a@sender.test", "--socks", socks.Addr,
				"--helo", "sender.test", "--dns", dns.Addr(), "--timeout", "30s", "--", "user@recv.test")
			if n := int(backup.ends.Load()); n != tc.backup || backup.Connections() != tc.backup {
				t.Fatalf("exit %d %q: the backup got %d messages over %d connections, want %d", r.code, r.out, n, backup.Connections(), tc.backup)
			}
			if tc.backup == 0 && (r.code != 75 || !strings.HasPrefix(r.out, "4.3.0 ")) {
				t.Fatalf("exit %d %q, want 75 and the primary's 4.3.0", r.code, r.out)
			}
		})
	}
}

// TestAttackParentDiesData: pipe(8) dies in the middle of the message on
// a server without CHUNKING (DATA): no final dot, 4.3.0, exit 75.
func TestAttackParentDiesData(t *testing.T) {
	bin := onionmxBinary(t)
	for _, end := range []string{"SIGTERM", "SIGKILL"} {
		t.Run(end, func(t *testing.T) {
			s := newChunkServer(t, false, "250 2.1.0 Ok")
			args := append([]string{"deliver"}, deliverArgs(torTo(t, s.Addr), oniontest.New())...)
			rep := reap(t, bin, args, end, 66000, false)
			time.Sleep(100 * time.Millisecond)
			if n := s.ends.Load(); n != 0 || rep.Status != 75 || !strings.HasPrefix(rep.Output, "4.3.0 ") {
				t.Fatalf("onionmx exited %d with %q, %d messages ended; want 75, 4.3.0 and none", rep.Status, rep.Output, n)
			}
		})
	}
}

// TestAttackNonblockDoesNotLeak: the input's file description may be
// shared with whoever started onionmx (a shell script whose stdin it is:
// `onionmx deliver ... || fallback`). O_NONBLOCK set on it outlives
// onionmx there: the next reader gets EAGAIN instead of waiting. Here
// onionmx fails before it reads (a bad nexthop), and the pipe it was given
// must be as it was.
func TestAttackNonblockDoesNotLeak(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	cmd := exec.Command(onionmxBinary(t), deliverArgs(sockstest.Closed(t), oniontest.New())...)
	cmd.Args = append([]string{cmd.Args[0], "deliver"}, cmd.Args[1:]...)
	cmd.Stdin = pr // the child's fd 0 is this very description
	pw.Write([]byte("Subject: x\n\n"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 75 {
		t.Fatalf("%v %q, want deferred", err, out.String())
	}
	rc, err := pr.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var flags int
	var ferr error
	rc.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) })
	if ferr != nil {
		t.Fatal(ferr)
	}
	if flags&unix.O_NONBLOCK != 0 {
		t.Fatalf("after onionmx, its input's file description is O_NONBLOCK (set by onionmx, shared with its parent)")
	}
}

// TestAttackSocketInput: stdin a socket, as a pipe(8) built on socketpair
// gives it: the message is delivered whole when the writer shuts down,
// and a writer that stalls, alive, is ended by --timeout.
func TestAttackSocketInput(t *testing.T) {
	for _, stall := range []bool{false, true} {
		t.Run(fmt.Sprintf("stall=%v", stall), func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				t.Fatal(err)
			}
			ours, theirs := os.NewFile(uintptr(fds[0]), "ours"), os.NewFile(uintptr(fds[1]), "theirs")
			defer ours.Close()
			s := newScriptServer(t, "220 mx.test ESMTP", esmtp)
			cmd, out := startDeliver(t, theirs, withTimeout(deliverArgs(torTo(t, s.Addr), oniontest.New()), "2s")...)
			theirs.Close()
			ours.Write([]byte("Subject: x\n\n" + strings.Repeat("line\n", 1000)))
			if !stall {
				unix.Shutdown(fds[0], unix.SHUT_WR)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				want, msgs := 0, 1
				if stall {
					want, msgs = 75, 0
				}
				code := 0
				var ee *exec.ExitError
				if errors.As(err, &ee) {
					code = ee.ExitCode()
				}
				if code != want || len(s.received()) != msgs {
					t.Fatalf("exit %d %q, %d delivered; want exit %d, %d delivered", code, out.String(), len(s.received()), want, msgs)
				}
				if msgs == 1 && !strings.HasSuffix(string(s.received()[0]), "line\r\n") {
					t.Fatalf("the message arrived cut")
				}
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("still running 20 s later (output %q)", out.String())
			}
		})
	}
}
