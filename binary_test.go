package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// The tests that run onionmx from the outside, as pipe(8) does (its memory,
// its signals, its parent), share one build of the binary.
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// onionmxBinary returns the path of onionmx built from this tree, building
// it on first use; cleanupM removes it when the tests end. With
// ONIONMX_TEST_BIN set, that binary is used instead: a way to run these
// tests against an older build, to see them fail.
func onionmxBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if bin := os.Getenv("ONIONMX_TEST_BIN"); bin != "" {
		return bin
	}
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "onionmx-test-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "onionmx")
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = &buildError{err, out}
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

type buildError struct {
	err error
	out []byte
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + string(e.out) }

// cleanupM removes the shared binary after the tests ran.
type cleanupM struct{ m *testing.M }

func (c cleanupM) Run() int {
	code := c.m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	return code
}
