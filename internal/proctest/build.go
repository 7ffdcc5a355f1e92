package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// The tests that run onionmx from the outside, as pipe(8) or spawn(8) run
// it, share one build of the binary per test process.
var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// Binary returns the path of onionmx built from this tree (the module's
// main package), building it on first use; Cleanup removes it, from the
// package's TestMain. With ONIONMX_TEST_BIN set, that binary is used
// instead: a way to run the tests against an older build, to see them
// fail. Under -short it skips the test.
func Binary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	if bin := os.Getenv("ONIONMX_TEST_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "onionmx-test-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "onionmx")
		// Static and without urfave/cli's docs, as the README says to
		// build it.
		build := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-trimpath", "-tags", "urfave_cli_no_docs", "-o", buildPath, "github.com/onionmx/onionmx")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := build.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Cleanup removes the binary Binary built, if any.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}
