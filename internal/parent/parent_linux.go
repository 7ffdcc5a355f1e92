package parent

import (
	"bytes"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// pfExiting is PF_EXITING of the kernel's task flags
// (include/linux/sched.h): set at the start of do_exit, before the task's
// files are closed.
const pfExiting = 0x00000004

// pidfdWatcher watches a process through a pidfd (Linux 5.3 and later),
// which becomes readable when the process has exited.
type pidfdWatcher struct {
	fd  int
	pid int
}

func watchParent(pid int) watcher {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		// No pidfd (an old kernel, a seccomp filter): the parent's
		// number is watched instead.
		return &ppidWatcher{pid: pid}
	}
	return &pidfdWatcher{fd: fd, pid: pid}
}

func (w *pidfdWatcher) exited(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}
		wait := max(0, int(time.Until(deadline).Milliseconds())) // never -1: forever
		n, err := unix.Poll(fds, wait)
		switch {
		case err == unix.EINTR && time.Now().Before(deadline):
			continue
		case err != nil:
			// Cannot tell: doubt.
			return true
		}
		return n > 0
	}
}

func (w *pidfdWatcher) close() { unix.Close(w.fd) }

// procState reads the state and the flags of /proc/PID/stat.
func procState(pid int) state {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		// Gone, or hidden: /proc mounted with hidepid=2 (systemd's
		// ProtectProc=invisible) hides pipe(8), which runs as another
		// user. The pidfd and the parent's number tell which.
		return stateUnknown
	}
	// "PID (COMM) STATE PPID PGRP SESSION TTY_NR TPGID FLAGS ...": COMM
	// may contain spaces and parentheses; it ends at the last ")".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stateUnknown
	}
	fields := bytes.Fields(b[i+1:])
	if len(fields) < 7 {
		return stateUnknown
	}
	switch fields[0][0] {
	case 'Z', 'X':
		return stateExiting
	}
	flags, err := strconv.ParseUint(string(fields[6]), 10, 64)
	if err != nil {
		return stateUnknown
	}
	if flags&pfExiting != 0 {
		return stateExiting
	}
	return stateAlive
}
