// Package proctest measures processes that tests and benchmarks start.
package proctest

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// PeakRSS samples the peak resident size (VmHWM, in bytes) of a running
// process every interval until it exits, and then sends the last value.
// The child's rusage cannot be used instead: Go starts children with vfork
// semantics, and Linux charges the parent's peak to the child's ru_maxrss
// at exec. VmHWM only grows, so the last sample is the peak up to then.
func PeakRSS(pid int, interval time.Duration) <-chan int64 {
	ch := make(chan int64, 1)
	go func() {
		var peak int64
		path := "/proc/" + strconv.Itoa(pid) + "/status"
		for {
			b, err := os.ReadFile(path)
			if err != nil || strings.Contains(string(b), "State:\tZ") {
				ch <- peak
				return
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
					peak = max(peak, kb<<10)
				}
			}
			time.Sleep(interval)
		}
	}()
	return ch
}

// RSS returns the resident size (VmRSS, in bytes) of a running process, or
// 0 when it cannot be read.
func RSS(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
