package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "onionmx") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "lookup")

	l, err := listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode %v, %v; want 0666", fi.Mode(), err)
	}
	if _, err := listen("unix:" + path); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("second listen: %v", err)
	}
	l.Close()

	// A socket file left behind by a server that died is replaced.
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ul.SetUnlinkOnClose(false)
	ul.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("no stale socket to test with: %v", err)
	}
	l, err = listen("unix:" + path)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	l.Close()

	// Anything else at the path is left alone.
	os.WriteFile(path, []byte("not a socket"), 0o644)
	if _, err := listen("unix:" + path); err == nil {
		t.Error("listen replaced a regular file")
	}
}
