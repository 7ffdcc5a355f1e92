//go:build !linux

package parent

import (
	"os"
	"time"
)

// ppidWatcher watches the parent by its number: it exited when we were
// given another parent.
type ppidWatcher struct{ pid int }

func watchParent(pid int) watcher { return &ppidWatcher{pid: pid} }

func (w *ppidWatcher) exited(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if os.Getppid() != w.pid {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
}

func (w *ppidWatcher) close() {}

func procState(int) state { return stateUnknown }
