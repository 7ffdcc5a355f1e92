package main

import "testing"

// The services must not run a binary that "go run" built: it is deleted
// when go run exits, and pipe(8) bounces mail it cannot run.
func TestTemporaryBuild(t *testing.T) {
	for exe, want := range map[string]bool{
		"/tmp/go-build3021298405/b001/exe/onionmx":    true,
		"/root/.cache/tmp/go-build1/b001/exe/onionmx": true,
		"/usr/bin/onionmx":                            false,
		"/usr/local/bin/onionmx":                      false,
		"/home/go-builder/onionmx":                    false,
		"/srv/go-build/onionmx":                       false,
	} {
		if got := temporaryBuild(exe); got != want {
			t.Errorf("temporaryBuild(%q) = %v, want %v", exe, got, want)
		}
	}
}
