package parent

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The tests run this test binary three times over: the test itself starts a
// "parent", which starts a "child" that reads its standard input through
// Guard and writes what it found to a file. The parent then ends the way
// the test asks.
const roleEnv = "PARENT_TEST_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "parent":
		beParent()
	case "child":
		beChild()
	default:
		os.Exit(m.Run())
	}
}

// beChild reads all of stdin through Guard and writes the outcome.
func beChild() {
	n, err := io.Copy(io.Discard, Guard(os.Stdin))
	out := fmt.Sprintf("ok %d", n)
	if err != nil {
		out = fmt.Sprintf("error %d: %v", n, err)
	}
	os.WriteFile(os.Getenv("PARENT_TEST_OUT")+".tmp", []byte(out), 0o644)
	os.Rename(os.Getenv("PARENT_TEST_OUT")+".tmp", os.Getenv("PARENT_TEST_OUT"))
	os.Exit(0)
}

// beParent starts the child, writes part of a message, and ends as
// PARENT_TEST_END says.
func beParent() {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), roleEnv+"=child")
	w, err := cmd.StdinPipe()
	if err != nil {
		panic(err)
	}
	// As pipe(8) does: the command in its own session, and as another
	// user if asked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if uid := os.Getenv("PARENT_TEST_CHILD_UID"); uid != "" {
		var id uint32
		fmt.Sscan(uid, &id)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: id, Gid: id}
	}
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	chunk := strings.Repeat("x", 1000) + "\n"
	for range 66 {
		if _, err := io.WriteString(w, chunk); err != nil {
			panic(err)
		}
	}
	switch os.Getenv("PARENT_TEST_END") {
	case "finish":
		w.Close()
		cmd.Wait()
		os.Exit(0)
	case "sigterm":
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
	case "sigkill":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
	case "exit":
		os.Exit(3)
	}
	time.Sleep(time.Minute)
	panic("still alive")
}

func TestGuard(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, tc := range []struct {
		end  string
		want string
	}{
		{"finish", "ok 66066"},
		{"sigterm", "error 66066: standard input ended early"},
		{"sigkill", "error 66066: standard input ended early"},
		{"exit", "error 66066: standard input ended early"},
	} {
		t.Run(tc.end, func(t *testing.T) {
			t.Parallel()
			out := filepath.Join(t.TempDir(), "out")
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), roleEnv+"=parent", "PARENT_TEST_END="+tc.end, "PARENT_TEST_OUT="+out)
			cmd.Run() // it may die of its own signal
			childSays(t, out, tc.want)
		})
	}
}

// fakeWatcher exits after a while.
type fakeWatcher struct{ exitAt time.Time }

func (w *fakeWatcher) exited(d time.Duration) bool {
	if until := time.Until(w.exitAt); until > 0 && until <= d {
		time.Sleep(until)
	}
	return !time.Now().Before(w.exitAt)
}

// TestCheck: the verdict at the end of input, step by step, for a parent
// that lives on, one in the kernel's exit path, one already gone, and one
// that closed the pipe itself and dies a little later (the settle).
func TestCheck(t *testing.T) {
	ppid := os.Getppid()
	for _, tc := range []struct {
		name   string
		state  state
		exitIn time.Duration // when the parent exits; 0: never
		err    string
	}{
		{"alive", stateAlive, 0, ""},
		{"unknown to /proc", stateUnknown, 0, ""},
		{"exiting", stateExiting, 0, "is exiting"},
		{"hidden (hidepid=2)", stateUnknown, 0, ""},
		{"hidden, exits during the settle", stateUnknown, Settle / 2, "exited right after the end of input"},
		{"exited", stateAlive, -time.Second, "exited"},
		{"exits during the settle", stateAlive, Settle / 2, "exited right after the end of input"},
		{"exits after the settle", stateAlive, 3 * Settle, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &fakeWatcher{exitAt: time.Now().Add(time.Hour)}
			if tc.exitIn != 0 {
				w.exitAt = time.Now().Add(tc.exitIn)
			}
			g := &guard{r: strings.NewReader("message"), ppid: ppid, watch: w, state: func(int) state { return tc.state }}
			_, err := io.Copy(io.Discard, g)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("got %v, want %q", err, tc.err)
			}
		})
	}
}

// TestGuardHiddenProc: with /proc mounted hidepid=2 (systemd's
// ProtectProc=invisible), a child that runs as another user, as onionmx
// runs as nobody under pipe(8), cannot see its parent in /proc. A parent
// that finishes must still be believed, and one that dies still caught.
// It needs root, to mount a proc of its own in a mount namespace of its
// own (never the host's /proc) and to run the child as nobody.
func TestGuardHiddenProc(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("no unshare(1)")
	}
	// A copy of this test binary that nobody may run, in a folder that
	// nobody may write to.
	dir, err := os.MkdirTemp("", "parent-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o777)
	bin := filepath.Join(dir, "parent.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ end, want string }{
		{"finish", "ok 66066"},
		{"sigkill", "error 66066: standard input ended early"},
		{"sigterm", "error 66066: standard input ended early"},
	} {
		t.Run(tc.end, func(t *testing.T) {
			out := filepath.Join(dir, "out-"+tc.end)
			cmd := exec.Command(unshare, "-m", "--propagation", "private", "sh", "-c",
				`mount -t proc -o hidepid=2 proc /proc && exec "$0"`, bin)
			cmd.Env = append(os.Environ(), roleEnv+"=parent", "PARENT_TEST_END="+tc.end,
				"PARENT_TEST_OUT="+out, "PARENT_TEST_CHILD_UID=65534")
			if b, err := cmd.CombinedOutput(); err != nil && tc.end == "finish" {
				t.Fatalf("%v: %s", err, b)
			}
			childSays(t, out, tc.want)
		})
	}
}

// childSays waits for the child's verdict in file out, and checks that it
// starts with want.
func childSays(t *testing.T, out, want string) {
	t.Helper()
	var got []byte
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(out); err == nil {
			got = b
			break
		}
	}
	if !strings.HasPrefix(string(got), want) {
		t.Fatalf("child says %q, want %q", got, want)
	}
}
