package table

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionmx/onionmx/internal/proctest"
)

// blockingPipe returns a pipe in blocking mode, as a shell or Postfix
// hands one over (os.Pipe makes non-blocking ones), and its raw
// descriptors, for checking their flags without os.File's help.
func blockingPipe(t testing.TB) (r, w *os.File, rfd, wfd int) {
	t.Helper()
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(p[0]), "|0"), os.NewFile(uintptr(p[1]), "|1")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w, p[0], p[1]
}

// shrinkPipe makes the pipe's buffer one page, so that a slow reader
// blocks the writer after a few replies.
func shrinkPipe(t testing.TB, fd int) {
	t.Helper()
	const fSetPipeSz = 1031 // F_SETPIPE_SZ, Linux
	if _, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), fSetPipeSz, 4096); errno != 0 {
		t.Logf("F_SETPIPE_SZ: %v (the pipe keeps its size)", errno)
	}
}

// nonblocking reports whether O_NONBLOCK is set on fd's file description.
func nonblocking(t testing.TB, fd int) bool {
	t.Helper()
	fl, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFL, 0)
	if errno != 0 {
		t.Fatalf("F_GETFL on %d: %v", fd, errno)
	}
	return fl&syscall.O_NONBLOCK != 0
}

// pipeRequests returns n requests for proto and the replies they must get,
// alternating a mapped domain and the wildcard.
func pipeRequests(f *fixture, proto Protocol, n int) (reqs []string, want string) {
	var b strings.Builder
	for i := range n {
		key, found := "bob@pinned.example", true
		if i%2 == 1 {
			key, found = "*", false
		}
		switch {
		case proto == Socketmap:
			reqs = append(reqs, netstring("onionmx "+key))
			if found {
				b.WriteString(netstring("OK onionmx:[" + f.o3 + "]:2525"))
			} else {
				b.WriteString(netstring("NOTFOUND "))
			}
		default:
			reqs = append(reqs, "get "+key+"\n")
			if found {
				b.WriteString("200 onionmx:[" + f.o3 + "]:2525\n")
			} else {
				b.WriteString("500 the%20wildcard%20key:%20onionmx%20routes%20by%20domain\n")
			}
		}
	}
	return reqs, b.String()
}

// slowWrite writes the requests one at a time with pauses, then closes w:
// the server must wait for each one in a blocking read.
func slowWrite(w *os.File, reqs []string, pause time.Duration) error {
	defer w.Close()
	for i, r := range reqs {
		if i < 5 || i%50 == 0 {
			time.Sleep(pause)
		}
		if _, err := io.WriteString(w, r); err != nil {
			return err
		}
	}
	return nil
}

// slowRead waits before reading, so that the server's replies fill the
// pipe and its writes block, then reads everything.
func slowRead(r *os.File, pause time.Duration) (string, error) {
	time.Sleep(pause)
	var b strings.Builder
	br := bufio.NewReaderSize(r, 64)
	buf := make([]byte, 100)
	for {
		n, err := br.Read(buf)
		b.Write(buf[:n])
		if err == io.EOF {
			return b.String(), nil
		}
		if err != nil {
			return b.String(), err
		}
		if b.Len()%1000 < 100 {
			time.Sleep(time.Millisecond)
		}
	}
}

// TestStdioConnPipe: on pipes (a shell, a terminal, a test), stdin and
// stdout are plain blocking files. net.FileConn on them used to set
// O_NONBLOCK on the shared file description: the second read failed with
// EAGAIN, the server ended, and the descriptors stayed non-blocking.
func TestStdioConnPipe(t *testing.T) {
	f := newFixture(t)
	for _, proto := range []Protocol{Socketmap, TCPTable} {
		t.Run(proto.String(), func(t *testing.T) {
			inR, inW, inRfd, _ := blockingPipe(t)
			outR, outW, outRfd, outWfd := blockingPipe(t)
			shrinkPipe(t, outWfd)
			reqs, want := pipeRequests(f, proto, 400)

			conn := StdioConn(inR, outW)
			if err := conn.SetReadDeadline(time.Now().Add(time.Second)); err == nil {
				t.Errorf("a read deadline on a pipe: the pipe is treated as a socket")
			}
			done := slowTraffic(inW, outR, reqs)
			if err := (&Server{Answerer: f.a, Protocol: proto}).ServeConn(context.Background(), conn); err != nil {
				t.Errorf("ServeConn: %v", err)
			}
			conn.Close()
			done(t, outW, []int{inRfd, outRfd, outWfd}, want)
		})
	}
}

// slowTraffic writes reqs slowly to inW and reads the replies slowly from
// outR, in the background. Once the server has ended, done checks that it
// left none of the descriptors it shared, fds, non-blocking (the writer has
// closed its own end; this process still holds the others), closes outW,
// and checks that the replies were want.
func slowTraffic(inW, outR *os.File, reqs []string) (done func(t *testing.T, outW *os.File, fds []int, want string)) {
	werr := make(chan error, 1)
	go func() { werr <- slowWrite(inW, reqs, 20*time.Millisecond) }()
	type result struct {
		s   string
		err error
	}
	read := make(chan result, 1)
	go func() {
		s, err := slowRead(outR, 300*time.Millisecond)
		read <- result{s, err}
	}()
	return func(t *testing.T, outW *os.File, fds []int, want string) {
		t.Helper()
		for _, fd := range fds {
			if nonblocking(t, fd) {
				t.Errorf("O_NONBLOCK left on descriptor %d", fd)
			}
		}
		outW.Close()
		got := <-read
		if got.err != nil {
			t.Errorf("reading replies: %v", got.err)
		}
		if err := <-werr; err != nil {
			t.Errorf("writing requests: %v", err)
		}
		if got.s != want {
			t.Errorf("got %d bytes of replies, want %d; first difference at %d", len(got.s), len(want), firstDiff(got.s, want))
		}
	}
}

func firstDiff(a, b string) int {
	for i := 0; i < min(len(a), len(b)); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func onionmxBinary(t testing.TB) string { return proctest.Binary(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	proctest.Cleanup()
	os.Exit(code)
}

// TestServersOnPipes runs the built socketmap and tcptable servers on
// pipes, as a shell or a test does, with a slow writer and a slow reader:
// every request is answered, the server exits 0 without a word, and no
// descriptor is left non-blocking.
func TestServersOnPipes(t *testing.T) {
	bin := onionmxBinary(t)
	f := newFixture(t)
	mapFile := filepath.Join(t.TempDir(), "map")
	if err := os.WriteFile(mapFile, []byte("pinned.example onionmx:["+f.o3+"]:2525\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []Protocol{Socketmap, TCPTable} {
		t.Run(proto.String(), func(t *testing.T) {
			inR, inW, inRfd, _ := blockingPipe(t)
			outR, outW, outRfd, outWfd := blockingPipe(t)
			shrinkPipe(t, outWfd)
			reqs, want := pipeRequests(f, proto, 400)
			var stderr strings.Builder
			cmd := exec.Command(bin, proto.String(), "--map", mapFile, "--dns", "127.0.0.1:1")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := slowTraffic(inW, outR, reqs)
			err := cmd.Wait()
			if err != nil || stderr.Len() != 0 {
				t.Errorf("exit: %v; stderr %q", err, stderr.String())
			}
			done(t, outW, []int{inRfd, outRfd, outWfd}, want)
		})
	}
}

// TestServersUnderSpawn runs the built servers as spawn(8) does: stdin,
// stdout and stderr are all the client's socket. Nothing but the protocol
// may come out: no map problem, no error line, even for a broken
// configuration or junk.
func TestServersUnderSpawn(t *testing.T) {
	bin := onionmxBinary(t)
	f := newFixture(t)
	mapFile := filepath.Join(t.TempDir(), "map")
	if err := os.WriteFile(mapFile, []byte("pinned.example onionmx:["+f.o3+"]:2525\ntypo.example onionmx:["+flipped(f.o1)+"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		in     string
		want   string // a prefix of the whole output
		status int
	}{
		{"problem", []string{"socketmap", "--map", mapFile}, netstring("onionmx x@typo.example") + netstring("onionmx x@pinned.example"),
			netstring("TEMP "+mapFile+":2: typo.example: nexthop ["+flipped(f.o1)+"]: onion address checksum mismatch (typo?)") + netstring("OK onionmx:["+f.o3+"]:2525"), 0},
		{"tcp-problem", []string{"tcptable", "--map", mapFile}, "get x@typo.example\n",
			"400 " + encodeTCP(mapFile+":2: typo.example: nexthop ["+flipped(f.o1)+"]: onion address checksum mismatch (typo?)", 4000) + "\n", 0},
		{"config", []string{"socketmap", "--map", mapFile + ".missing"}, netstring("onionmx x@pinned.example"),
			netstring("TEMP configuration error: " + mapFile + ".missing: cannot read: no such file or directory"), 78},
		{"junk", []string{"socketmap", "--map", mapFile}, netstring("onionmx x@pinned.example") + "junk",
			netstring("OK onionmx:["+f.o3+"]:2525") + netstring("PERM netstring length: unexpected 'j'"), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			child := os.NewFile(uintptr(fds[1]), "spawn-socket")
			ours := os.NewFile(uintptr(fds[0]), "client-socket")
			nc, err := net.FileConn(ours)
			ours.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			cmd := exec.Command(bin, tc.args...)
			cmd.Stdin, cmd.Stdout, cmd.Stderr = child, child, child
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			child.Close()
			nc.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.WriteString(nc, tc.in); err != nil {
				t.Fatal(err)
			}
			nc.(*net.UnixConn).CloseWrite()
			out, err := io.ReadAll(nc)
			if err != nil {
				t.Errorf("reading: %v", err)
			}
			status := 0
			if err := cmd.Wait(); err != nil {
				var ee *exec.ExitError
				if !errors.As(err, &ee) {
					t.Fatal(err)
				}
				status = ee.ExitCode()
			}
			if string(out) != tc.want || status != tc.status {
				t.Errorf("exit %d, output\n%q\nwant exit %d, output\n%q", status, out, tc.status, tc.want)
			}
		})
	}
}
