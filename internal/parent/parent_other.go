//go:build !linux

package parent

func watchParent(pid int) watcher { return &ppidWatcher{pid: pid} }

func procState(int) state { return stateUnknown }
