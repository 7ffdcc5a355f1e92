package main

import (
	"testing"

	"github.com/onionmx/onionmx/internal/proctest"
)

// onionmxBinary returns the binary the tests run from the outside (see
// proctest.Binary; ONIONMX_TEST_BIN runs them against another build).
func onionmxBinary(t testing.TB) string { return proctest.Binary(t) }

// cleanupM removes the shared binary after the tests ran.
type cleanupM struct{ m *testing.M }

func (c cleanupM) Run() int {
	defer proctest.Cleanup()
	return c.m.Run()
}
