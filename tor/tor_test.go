package tor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/onionmx/onionmx/internal/sockstest"
)

const target = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion:25"

func TestParseSOCKS(t *testing.T) {
	cases := []struct{ in, network, addr, err string }{
		{in: "127.0.0.1:9050", network: "tcp", addr: "127.0.0.1:9050"},
		{in: "[::1]:9050", network: "tcp", addr: "[::1]:9050"},
		{in: "unix:/run/tor/socks", network: "unix", addr: "/run/tor/socks"},
		{in: "unix:run/tor/socks", err: `"unix:run/tor/socks": want unix:/absolute/path`},
		{in: "nonsense", err: `"nonsense": want host:port or unix:/path`},
		{in: "127.0.0.1:0", err: `"127.0.0.1:0": bad port`},
		{in: "127.0.0.1:65536", err: `"127.0.0.1:65536": bad port`},
		{in: ":9050", err: `":9050": empty host`},
	}
	for _, tc := range cases {
		d, err := ParseSOCKS(tc.in)
		switch {
		case tc.err != "":
			if err == nil || err.Error() != tc.err {
				t.Errorf("ParseSOCKS(%q): error %v, want %q", tc.in, err, tc.err)
			}
		case err != nil:
			t.Errorf("ParseSOCKS(%q): %v", tc.in, err)
		case d.Network != tc.network || d.Addr != tc.addr || d.String() != tc.in:
			t.Errorf("ParseSOCKS(%q) = %+v (%s)", tc.in, d, d)
		}
	}
}

// TestIsolation: each destination gets its own credentials, the same
// every time.
func TestIsolation(t *testing.T) {
	s := sockstest.New(t, func(sockstest.Request) sockstest.Response { return sockstest.Response{Reply: 0xF0} })
	d := &SOCKSDialer{Network: "tcp", Addr: s.Addr}
	other := "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.onion:25"
	for _, a := range []string{target, target, other} {
		if _, err := d.DialContext(context.Background(), "tcp", a); err == nil {
			t.Fatal("CONNECT refused by the proxy, but the dial succeeded")
		}
	}
	r := s.Requests()
	if len(r) != 3 {
		t.Fatalf("%d requests, want 3", len(r))
	}
	for i, want := range []string{target, target, other} {
		if r[i].Addr() != want || r[i].ATYP != 3 || r[i].User != "onionmx" || r[i].Password != want {
			t.Errorf("request %d: %+v, want %s by name with its own credentials", i, r[i], want)
		}
	}
}

// TestClassifyReplies reads every reply code Tor sends from a real
// exchange with x/net/proxy, whose errors carry the code only as text.
func TestClassifyReplies(t *testing.T) {
	cases := []struct {
		code Reply
		kind Kind
		text string
	}{
		{ReplyGeneralFailure, OnTheWay, "general SOCKS server failure (SOCKS reply 01)"},
		{ReplyNotAllowed, OnTheWay, "connection not allowed by ruleset (SOCKS reply 02)"},
		{ReplyNetUnreachable, OnTheWay, "network unreachable (SOCKS reply 03)"},
		{ReplyHostUnreachable, OnTheWay, "host unreachable (SOCKS reply 04)"},
		{ReplyRefused, PortRefused, "connection refused (SOCKS reply 05)"},
		{ReplyTTLExpired, OnTheWay, "TTL expired (SOCKS reply 06)"},
		{ReplyCmdNotSupported, OnTheWay, "command not supported (SOCKS reply 07)"},
		{ReplyAddrNotSupported, OnTheWay, "address type not supported (SOCKS reply 08)"},
		{ReplyOnionDescNotFound, OnTheWay, "onion service descriptor not found (SOCKS reply F0)"},
		{ReplyOnionDescInvalid, OnTheWay, "onion service descriptor is invalid (SOCKS reply F1)"},
		{ReplyOnionIntroFailed, OnTheWay, "onion service introduction failed (SOCKS reply F2)"},
		{ReplyOnionRendFailed, OnTheWay, "onion service rendezvous failed (SOCKS reply F3)"},
		{ReplyOnionMissingAuth, NeedsAuth, "onion service requires client authorization (SOCKS reply F4)"},
		{ReplyOnionWrongAuth, NeedsAuth, "onion service client authorization is wrong (SOCKS reply F5)"},
		{ReplyOnionBadAddress, BadAddress, "invalid onion address (SOCKS reply F6)"},
		{ReplyOnionIntroTimeout, OnTheWay, "onion service introduction timed out (SOCKS reply F7)"},
		{0x42, OnTheWay, "unknown SOCKS reply (SOCKS reply 42)"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%02X", byte(tc.code)), func(t *testing.T) {
			s := sockstest.New(t, func(sockstest.Request) sockstest.Response { return sockstest.Response{Reply: byte(tc.code)} })
			d := &SOCKSDialer{Network: "tcp", Addr: s.Addr}
			_, err := d.DialContext(context.Background(), "tcp", target)
			if err == nil {
				t.Fatal("dial succeeded")
			}
			e := Classify(d.String(), target, err, nil)
			if e.Kind != tc.kind || e.Reply != tc.code {
				t.Errorf("kind %d reply %v, want %d %v (from %v)", e.Kind, e.Reply, tc.kind, tc.code, err)
			}
			if want := "connect to " + target + " via Tor: " + tc.text; e.Error() != want {
				t.Errorf("text %q\nwant %q", e, want)
			}
			if remote := tc.kind != OnTheWay; e.Remote() != remote {
				t.Errorf("Remote() = %v", e.Remote())
			}
			if !errors.Is(e, err) {
				t.Error("the dialer's error is not wrapped")
			}
		})
	}
}

// TestClassifySocksPort: failures of the SocksPort itself, worded without
// any command-line flag.
func TestClassifySocksPort(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	smtp := listen(t, func(c net.Conn) { c.Write([]byte("220 smtp.test ESMTP\r\n")) })
	web := listen(t, func(c net.Conn) { c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n")) })
	// It reads the method negotiation, all the client sends before it
	// waits, and closes.
	hangup := listen(t, func(c net.Conn) { io.ReadFull(c, make([]byte, 4)); c.Close() })
	hang := sockstest.New(t, func(sockstest.Request) sockstest.Response { return sockstest.Response{Hang: true} })

	cases := []struct {
		name, addr string
		timeout    time.Duration
		kind       Kind
		text       string
	}{
		{"down", closedAddr, 0, Unreachable, "cannot connect to Tor SocksPort " + closedAddr + ": connect: connection refused"},
		{"smtp", smtp, 0, NotSOCKS, "Tor SocksPort " + smtp + ` is not a SOCKS5 server: its answer began with "2", as an SMTP server's 220 greeting does`},
		{"web", web, 0, NotSOCKS, "Tor SocksPort " + web + ` is not a SOCKS5 server: its answer began with "H"`},
		{"hangs up", hangup, 0, Handshake, "connect to " + target + " via Tor SocksPort " + hangup + ": EOF"},
		{"hangs", hang.Addr, 100 * time.Millisecond, TimedOut, "connect to " + target + " via Tor: timed out"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), cmp.Or(tc.timeout, 10*time.Second))
			defer cancel()
			d := &SOCKSDialer{Network: "tcp", Addr: tc.addr}
			_, err := d.DialContext(ctx, "tcp", target)
			if err == nil {
				t.Fatal("dial succeeded")
			}
			var ctxErr error
			if tc.timeout > 0 {
				ctxErr = ctx.Err()
			}
			e := Classify(d.String(), target, err, ctxErr)
			if e.Kind != tc.kind || e.Error() != tc.text {
				t.Errorf("kind %d %q\nwant %d %q", e.Kind, e, tc.kind, tc.text)
			}
			if e.Remote() {
				t.Error("a failure of the SocksPort is the remote's")
			}
		})
	}
}

// listen starts a TCP server that serves every connection with serve, then
// closes it.
func listen(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c)
				// Until the client hangs up: closing with its bytes
				// unread would reset the connection.
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return l.Addr().String()
}

// The probe speaks to a real SOCKS5 server over a unix socket too.
func TestProbeUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "tor") // short: socket paths are limited to 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "socks")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var b [4]byte
		io.ReadFull(c, b[:])
		if b != [4]byte{5, 2, 0, 2} {
			t.Errorf("probe sent % x", b)
		}
		c.Write([]byte{5, 2})
		if n, _ := c.Read(b[:]); n != 0 {
			t.Errorf("probe sent more: % x", b[:n])
		}
	}()
	d := &SOCKSDialer{Network: "unix", Addr: path}
	if err := d.Probe(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestProbeNotSOCKS: the probe shows what answered, on one line.
func TestProbeNotSOCKS(t *testing.T) {
	web := listen(t, func(c net.Conn) { c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n")) })
	d := &SOCKSDialer{Network: "tcp", Addr: web}
	err := d.Probe(context.Background(), time.Second)
	var pe *ProbeError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v, want a *ProbeError", err)
	}
	if want := "Tor SocksPort " + web + ` is not a SOCKS5 server (it answered "HTTP/1.0 400 Bad Request    ")`; err.Error() != want {
		t.Errorf("%q\nwant %q", err, want)
	}
	if strings.ContainsAny(err.Error(), "\r\n") {
		t.Error("more than one line")
	}
}

// TestGreetingWithReply: Tor's reply to CONNECT and the server's greeting
// often arrive in one segment. x/net/proxy reads the reply with reads of
// its exact size, so the greeting stays in the socket for the caller's
// first read, which needs no new wait: here it comes in one write with the
// reply, and nothing follows it.
func TestGreetingWithReply(t *testing.T) {
	const greeting = "220 x.onion ESMTP\r\n"
	proxyAddr := listen(t, func(c net.Conn) {
		var b [512]byte
		io.ReadFull(c, b[:4]) // 5 2 0 2: no auth or user/pass
		c.Write([]byte{5, 2})
		n, _ := c.Read(b[:]) // user/pass (RFC 1929)
		if n == 0 {
			return
		}
		c.Write([]byte{1, 0})
		c.Read(b[:]) // CONNECT
		reply := []byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 25}
		c.Write(append(reply, greeting...))
	})
	d := &SOCKSDialer{Network: "tcp", Addr: proxyAddr}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A guard against a hang, not a timing: the greeting is there already.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 100)
	n, err := conn.Read(b)
	if string(b[:n]) != greeting {
		t.Fatalf("first read after the CONNECT: %q, %v; want the greeting %q", b[:n], err, greeting)
	}
}
