package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/sockstest"
	"golang.org/x/sys/unix"
)

// pipe(8) dying in the middle of a message: TestParentDies plays both
// sides with helper processes, this test binary run again in a role:
//
//	test -> "reaper" -> "pipe" -> onionmx deliver
//
// "pipe" starts onionmx as pipe(8) does (its own session, the message on
// a pipe), writes a part of a 200 KB message and then ends as the test
// says. "reaper" is a child subreaper: when "pipe" dies, onionmx becomes
// its child, so that it can wait for onionmx and report its exit status,
// which nobody else could learn.
const roleEnv = "ONIONMX_TEST_ROLE"

// reaperReport is what the reaper tells the test.
type reaperReport struct {
	PipeStatus string // how "pipe" ended
	Status     int    // onionmx's exit status, -1 if killed
	Signal     string
	Output     string
	Error      string
}

func playRole(role string) {
	switch role {
	case "reaper":
		beReaper()
	case "pipe":
		bePipe()
	}
	fmt.Fprintf(os.Stderr, "unknown role %q\n", role)
	os.Exit(2)
}

func beReaper() {
	var rep reaperReport
	defer func() {
		json.NewEncoder(os.Stdout).Encode(rep)
		os.Exit(0)
	}()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		rep.Error = err.Error()
		return
	}
	out, err := os.CreateTemp("", "onionmx-output-")
	if err != nil {
		rep.Error = err.Error()
		return
	}
	defer os.Remove(out.Name())
	pipe := exec.Command(os.Args[0])
	pipe.Env = append(os.Environ(), roleEnv+"=pipe", "ONIONMX_TEST_OUTPUT="+out.Name())
	pidOut, _ := pipe.StdoutPipe()
	if err := pipe.Start(); err != nil {
		rep.Error = err.Error()
		return
	}
	var pid int
	fmt.Fscan(pidOut, &pid)
	rep.PipeStatus = fmt.Sprint(pipe.Wait())
	b, _ := os.ReadFile(out.Name())
	rep.Output = string(b)
	// onionmx is ours now, or already gone and waiting to be reaped;
	// unless "pipe" lived to reap it, and exited with its status.
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, 0, nil); err == unix.ECHILD {
		rep.Status = pipe.ProcessState.ExitCode()
		return
	} else if err != nil {
		rep.Error = "wait4: " + err.Error()
		return
	}
	rep.Status = ws.ExitStatus()
	if ws.Signaled() {
		rep.Status, rep.Signal = -1, ws.Signal().String()
	}
	b, _ = os.ReadFile(out.Name())
	rep.Output = string(b)
}

// bePipe starts onionmx with ONIONMX_TEST_ARGS, tells its pid, writes
// ONIONMX_TEST_WRITE bytes of a 200 KB message and ends as ONIONMX_TEST_END
// says.
func bePipe() {
	out, err := os.OpenFile(os.Getenv("ONIONMX_TEST_OUTPUT"), os.O_WRONLY, 0)
	if err != nil {
		panic(err)
	}
	cmd := exec.Command(os.Getenv("ONIONMX_TEST_BIN_PATH"), strings.Split(os.Getenv("ONIONMX_TEST_ARGS"), "\x1f")...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if os.Getenv("ONIONMX_TEST_END") == "file, exit" {
		// A shell that runs "onionmx deliver < message.eml &" and exits
		// once onionmx is connecting.
		f, err := os.CreateTemp("", "onionmx-message-")
		if err != nil {
			panic(err)
		}
		defer os.Remove(f.Name())
		io.Copy(f, &bigMessage{n: 200_000})
		f.Seek(0, io.SeekStart)
		cmd.Stdin = f
		if err := cmd.Start(); err != nil {
			panic(err)
		}
		fmt.Println(cmd.Process.Pid)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !hasSocket(cmd.Process.Pid); {
			time.Sleep(time.Millisecond)
		}
		os.Exit(0)
	}
	w, err := cmd.StdinPipe()
	if err != nil {
		panic(err)
	}
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	fmt.Println(cmd.Process.Pid)
	var n int
	fmt.Sscan(os.Getenv("ONIONMX_TEST_WRITE"), &n)
	if os.Getenv("ONIONMX_TEST_WAIT") != "" {
		// Until onionmx watches us: a pidfd among its descriptors (or,
		// for a build without one, a while).
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !watching(cmd.Process.Pid); {
			time.Sleep(time.Millisecond)
		}
	}
	io.Copy(w, io.LimitReader(&bigMessage{n: 200_000}, int64(n)))
	switch os.Getenv("ONIONMX_TEST_END") {
	case "SIGTERM":
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
	case "SIGKILL":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "close, SIGKILL":
		// All written: then postfix stop takes pipe(8) away.
		w.Close()
		time.Sleep(200 * time.Millisecond)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "finish":
		w.Close()
		cmd.Wait()
		os.Exit(cmd.ProcessState.ExitCode())
	}
	time.Sleep(time.Minute)
	os.Exit(3)
}

// watching reports whether process pid holds a pidfd.
func watching(pid int) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	for _, fd := range fds {
		if l, _ := os.Readlink(dir + "/" + fd.Name()); l == "anon_inode:[pidfd]" {
			return true
		}
	}
	return false
}

// hasSocket reports whether process pid holds a socket.
func hasSocket(pid int) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, _ := os.ReadDir(dir)
	for _, fd := range fds {
		if l, _ := os.Readlink(dir + "/" + fd.Name()); strings.HasPrefix(l, "socket:") {
			return true
		}
	}
	return false
}

// TestParentDies: pipe(8) dies after writing a third of a 200 KB message.
// onionmx must not send the final dot: it defers, and the server stores
// nothing. When the writer finishes, the message is delivered whole.
//
// A writer that dies before onionmx even started leaves it to its
// adoptive parent: init, which onionmx recognises, or, as here, a child
// subreaper, which it cannot tell from a real parent. That case is not
// tested, but for the empty message it usually leaves (deferred).
func TestParentDies(t *testing.T) {
	bin := onionmxBinary(t)
	for _, tc := range []struct {
		end   string
		write int
		wait  bool // until onionmx watches its parent, before writing
		msgs  int
	}{
		{"SIGTERM", 66_000, false, 0},
		{"SIGKILL", 66_000, false, 0},
		{"SIGTERM", 1000, true, 0},
		{"SIGKILL", 1000, true, 0},
		{"SIGTERM", 0, false, 0},
		{"finish", 200_000, false, 1},
	} {
		t.Run(fmt.Sprintf("%s after %d bytes", tc.end, tc.write), func(t *testing.T) {
			socks, onion, sink := fakeTor(t)
			args := append([]string{"deliver"}, deliverArgs(socks, onion)...)
			rep := reap(t, bin, args, tc.end, tc.write, tc.wait)
			t.Logf("pipe: %s; onionmx: exit %d %s: %q", rep.PipeStatus, rep.Status, rep.Signal, rep.Output)
			time.Sleep(100 * time.Millisecond) // the sink records after its reply
			if n := len(sink.Messages()); n != tc.msgs {
				t.Fatalf("the server stored %d messages, want %d: %+v", n, tc.msgs, sink.Messages())
			}
			if tc.msgs == 0 && (rep.Status != 75 || !strings.HasPrefix(rep.Output, "4.3.0 ")) {
				t.Fatalf("onionmx exited %d with %q; want 75 and 4.3.0", rep.Status, rep.Output)
			}
			if tc.msgs == 1 && rep.Status != 0 {
				t.Fatalf("onionmx exited %d with %q; want delivered", rep.Status, rep.Output)
			}
		})
	}
}

// TestParentDiesWhileConnecting: pipe(8) wrote the whole message and
// then died (postfix stop) while onionmx waits for Tor's connection.
// Nobody can learn the outcome any more, and Postfix will deliver the
// message again: onionmx gives up at once (4.3.0, interrupted), and does
// not go on to make a second copy when the connection comes.
func TestParentDiesWhileConnecting(t *testing.T) {
	bin := onionmxBinary(t)
	// Without the watch on the parent, onionmx would wait for the
	// connect timeout (20 s) and say so.
	args := append([]string{"deliver"}, deliverArgs(silentSOCKS(t), oniontest.New(), "--connect-timeout", "20s", "--timeout", "40s")...)
	rep := reap(t, bin, args, "close, SIGKILL", 5_000, true)
	t.Logf("pipe: %s; onionmx: exit %d %s: %q", rep.PipeStatus, rep.Status, rep.Signal, rep.Output)
	if rep.Status != 75 || !strings.HasPrefix(rep.Output, "4.3.0 ") || !strings.Contains(rep.Output, "pipe(8), exited") {
		t.Fatalf("onionmx exited %d with %q; want 75, 4.3.0 and the parent's exit", rep.Status, rep.Output)
	}
}

// silentSOCKS is a SOCKS port that never answers the CONNECT, as Tor
// does while it builds a rendezvous circuit.
func silentSOCKS(t *testing.T) string {
	return sockstest.New(t, func(sockstest.Request) sockstest.Response { return sockstest.Response{Hang: true} }).Addr
}

// reap runs onionmx (bin with args) under a stand-in for pipe(8), the
// reaper role: it writes write bytes of a message, then ends as end says
// ("SIGTERM", "SIGKILL", "finish"), waiting for onionmx first if wait.
func reap(t *testing.T, bin string, args []string, end string, write int, wait bool) reaperReport {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), roleEnv+"=reaper", "ONIONMX_TEST_BIN_PATH="+bin,
		"ONIONMX_TEST_ARGS="+strings.Join(args, "\x1f"), "ONIONMX_TEST_END="+end,
		fmt.Sprintf("ONIONMX_TEST_WRITE=%d", write), "ONIONMX_TEST_WAIT="+map[bool]string{true: "1"}[wait])
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("reaper: %v", err)
	}
	var rep reaperReport
	if err := json.Unmarshal(b, &rep); err != nil || rep.Error != "" {
		t.Fatalf("reaper said %q: %v", b, err)
	}
	return rep
}

// TestHandRunShellExits: run by hand, "onionmx deliver < message.eml &"
// from a shell that then exits. The message is a file: nothing was cut
// short, and the outcome goes where the shell sent it (a log). onionmx
// goes on with the delivery; only pipe(8)'s exit (the message on a pipe)
// makes it give up.
func TestHandRunShellExits(t *testing.T) {
	bin := onionmxBinary(t)
	// The delivery ends with the connect timeout, unless given up before.
	args := append([]string{"deliver"}, deliverArgs(silentSOCKS(t), oniontest.New(), "--connect-timeout", "2s", "--timeout", "40s")...)
	rep := reap(t, bin, args, "file, exit", 0, false)
	t.Logf("shell: %s; onionmx: exit %d %s: %q", rep.PipeStatus, rep.Status, rep.Signal, rep.Output)
	if rep.Status != 75 || strings.Contains(rep.Output, "exited") || !strings.Contains(rep.Output, "timed out") {
		t.Fatalf("onionmx exited %d with %q; want 75 and the connect timeout: the shell's exit is no reason to give up", rep.Status, rep.Output)
	}
}
