// Package parent tells whether the standard input ended because the process
// that started us finished writing it, or because that process died.
//
// Postfix's pipe(8) runs a command in its own session and copies the
// message to its standard input. When pipe(8) itself dies in the middle of
// the copy (postfix stop, a shutdown, the OOM killer), the command is not
// told: its input just ends, as if the message had. A transport that then
// sends the final dot delivers a truncated message, and Postfix, which
// never saw an outcome, later delivers it again in full.
//
// A writer that ends normally closes the pipe and stays alive: pipe(8)
// then waits for the command's exit status. A dying writer closes it as
// the kernel tears it down: do_exit marks the task PF_EXITING before it
// closes its files, and only later reparents its children, becomes a
// zombie and is reaped. So at the end of input, which comes after the
// close, Guard checks in this order:
//
//  1. the parent in /proc/PID/stat: exiting (PF_EXITING in its flags, set
//     before the close) or a zombie means it died;
//  2. then, that the parent process id is still the one we started with,
//     and that the pidfd opened at the start says the parent has not
//     exited. This also proves that step 1 looked at our parent and not
//     at a new process that got its number: the number is free for reuse
//     only after the parent was reaped, and by then it has exited and
//     we have another parent;
//  3. after a short settle, that it still has not exited: a writer that
//     closes its files itself on its way out (a signal handler, an
//     interpreter's teardown) is gone by then.
//
// Only when all three pass is the end of input the end of the message.
// A kernel without pidfds (before 5.3) or a /proc that does not show the
// parent (gone, or hidden by hidepid=2 because pipe(8) runs as another
// user) leaves the other checks: a parent killed by a signal has then
// exited within the settle as a rule, but that is no longer certain.
package parent

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Settle is how long Guard watches the parent after the end of input
// before it believes the end. A process that is going away takes
// microseconds to a few milliseconds from closing its files to exiting; a
// healthy pipe(8) waits for us for as long as we run.
const Settle = 50 * time.Millisecond

// Error is an end of input that is not the end of the message.
type Error struct {
	PID    int
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("standard input ended early: its writer, the parent process %d, %s; the message may be incomplete", e.PID, e.Reason)
}

// initialPPID is our parent when the program started, read as early as a
// Go program can: a parent that dies before Guard runs is caught too.
var initialPPID = os.Getppid()

// Guard returns a reader of r, the standard input that the parent process
// writes, whose io.EOF can be trusted: when the parent died instead of
// finishing, the end of input is an *Error. Call it before anything is
// read.
//
// A program whose parent is process 1 (init) cannot tell: under pipe(8)
// that means pipe(8) was gone before the program started, and every end
// of input is an *Error. A program that is process 1 itself has no parent
// to lose, and its end of input is trusted.
func Guard(r io.Reader) io.Reader {
	g := &guard{r: r, ppid: initialPPID, state: procState}
	switch {
	case g.ppid == 0:
	case g.ppid == 1:
		g.err = &Error{PID: 1, Reason: "is init: the process that started onionmx was gone before it could be watched"}
	default:
		g.watch = parentWatch()
		if os.Getppid() != g.ppid {
			g.err = &Error{PID: g.ppid, Reason: "was gone at the start"}
		}
	}
	return g
}

type guard struct {
	r     io.Reader
	ppid  int
	watch watcher
	state func(pid int) state // procState; tests give another
	err   error               // the verdict at the end of input, once made
	done  bool
}

// watcher is what the platform offers to watch a process.
type watcher interface {
	// exited reports whether the process has exited, waiting at most d.
	exited(d time.Duration) bool
}

// parentWatch is the one watcher of the parent the program started with,
// made at the first call, for Guard and Exited both: one pidfd serves
// them, open for the life of the process.
var parentWatch = sync.OnceValue(func() watcher { return watchParent(initialPPID) })

func (g *guard) Read(p []byte) (int, error) {
	if g.done {
		if g.err != nil {
			return 0, g.err
		}
		return 0, io.EOF
	}
	n, err := g.r.Read(p)
	if err == io.EOF {
		g.done = true
		if g.err == nil {
			g.err = g.check()
		}
		if g.err != nil {
			return n, g.err
		}
	}
	return n, err
}

// SetReadDeadline sets the deadline of the input's reads, when it takes
// one (an *os.File that Go's poller watches).
func (g *guard) SetReadDeadline(t time.Time) error {
	if d, ok := g.r.(interface{ SetReadDeadline(time.Time) error }); ok {
		return d.SetReadDeadline(t)
	}
	return os.ErrNoDeadline
}

// check makes the verdict at the end of input; see the package doc for
// why in this order.
func (g *guard) check() error {
	if g.ppid == 0 {
		return nil
	}
	if g.state(g.ppid) == stateExiting {
		return &Error{PID: g.ppid, Reason: "is exiting"}
	}
	switch {
	case os.Getppid() != g.ppid:
		return &Error{PID: g.ppid, Reason: "is gone"}
	case g.watch.exited(0):
		return &Error{PID: g.ppid, Reason: "exited"}
	case g.watch.exited(Settle) || os.Getppid() != g.ppid:
		return &Error{PID: g.ppid, Reason: "exited right after the end of input"}
	}
	return nil
}

// What /proc says of a process.
type state int

const (
	stateUnknown state = iota // no /proc, the process is gone, or hidden
	stateAlive
	stateExiting // in the kernel's exit path, or a zombie
)

// ppidWatcher watches the parent by its number: it exited when we were
// given another parent. It serves where pidfds do not.
type ppidWatcher struct{ pid int }

func (w *ppidWatcher) exited(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if os.Getppid() != w.pid {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(min(time.Millisecond, time.Until(deadline)))
	}
}
