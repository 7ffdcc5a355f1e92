package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"
)

// onionmx lookup against a DNS server: the lines it prints for SRV routes
// and its exit status. (The testscript scripts cover what needs no DNS.)
func TestLookupCommandDNS(t *testing.T) {
	dns := dnstest.New(t)
	o1, o2 := oniontest.New(), oniontest.New()
	dns.SetSRV("_onion-mx._tcp.one.example.", dnstest.SRV{Priority: 0, Weight: 5, Port: 25, Target: o1})
	dns.SetSRV("_onion-mx._tcp.two.example.",
		dnstest.SRV{Priority: 10, Weight: 0, Port: 2525, Target: o2},
		dnstest.SRV{Priority: 0, Weight: 1, Port: 25, Target: o1},
		dnstest.SRV{Priority: 20, Weight: 0, Port: 25, Target: "mx.two.example"})
	dns.Set("_onion-mx._tcp.broken.example.", dnstest.ServFail)

	lookupCmd := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		args = append([]string{"onionmx", "lookup", "--dns", dns.Addr()}, args...)
		status := run(args, strings.NewReader(""), &stdout, &stderr)
		return status, stdout.String(), stderr.String()
	}

	status, out, errOut := lookupCmd("one.example", "bob@two.example")
	if status != 0 || errOut != "" {
		t.Errorf("exit %d, stderr %q", status, errOut)
	}
	want := "one.example\tonionmx:[" + o1 + "]:25\t# DNS SRV _onion-mx._tcp.one.example. prio 0 weight 5\n" +
		"# bob@two.example: Postfix asks for the address; the answer is that of its domain\n" +
		"two.example\tonionmx:\t# DNS SRV _onion-mx._tcp.two.example.: 2 targets; the empty nexthop makes deliver look them up again and try them in this order (equal priorities drawn by weight each time)\n" +
		"#two.example\tonionmx:[" + o1 + "]:25\t# 1: prio 0 weight 1\n" +
		"#two.example\tonionmx:[" + o2 + "]:2525\t# 2: prio 10 weight 0\n" +
		"#\tskipped mx.two.example:25 (prio 20 weight 0): not a .onion name (onionmx never dials the clear net)\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}

	if status, out, _ := lookupCmd("one.example", "none.example"); status != 1 ||
		!strings.Contains(out, "# none.example: NOTFOUND, Postfix uses its next table or its default transport: no onion route for none.example: DNS SRV _onion-mx._tcp.none.example.: no such record\n") {
		t.Errorf("exit %d, output %q; want 1 and NOTFOUND", status, out)
	}
	if status, out, _ := lookupCmd("none.example", "broken.example", "one.example"); status != 75 ||
		!strings.Contains(out, "# broken.example: TEMP, Postfix defers the mail: cannot find onion route for broken.example: ") {
		t.Errorf("exit %d, output %q; want 75 and TEMP", status, out)
	}
}

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
