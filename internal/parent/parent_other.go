//go:build !linux

package parent

func watchParent(pid int) watcher { return &ppidWatcher{pid: pid} }

func procState(int) state { return stateUnknown }

// Exited is nil: without pidfds the parent is not watched.
func Exited() <-chan struct{} { return nil }
