// Package tor is onionmx's one place for Tor's SocksPort: the SOCKS5
// dialer with its per-destination isolation credentials, Tor's SOCKS reply
// codes, the probe that asks whether a SOCKS5 server answers at all, and
// the one classification of a connect through Tor that failed (Classify),
// which deliver turns into its status codes and check into its verdict.
//
// Nothing here names a command-line flag: the commands add their hints.
package tor

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/net/proxy"
)

// SOCKSDialer dials through Tor's SocksPort with golang.org/x/net/proxy.
// The destination name goes to Tor unresolved (SOCKS5 ATYP 3), so no DNS
// query for it is ever made here.
type SOCKSDialer struct {
	Network string // "tcp" or "unix"
	Addr    string // host:port or socket path
}

// ParseSOCKS parses a SocksPort address: "host:port" or "unix:/path". The
// error quotes s and says what is wrong with it; the caller names where s
// came from.
func ParseSOCKS(s string) (*SOCKSDialer, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("%q: want unix:/absolute/path", s)
		}
		return &SOCKSDialer{Network: "unix", Addr: path}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("%q: want host:port or unix:/path", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return nil, fmt.Errorf("%q: bad port", s)
	}
	if host == "" {
		return nil, fmt.Errorf("%q: empty host", s)
	}
	return &SOCKSDialer{Network: "tcp", Addr: s}, nil
}

// String names the SocksPort as it is written: "127.0.0.1:9050" or
// "unix:/run/tor/socks".
func (d *SOCKSDialer) String() string {
	if d.Network == "unix" {
		return "unix:" + d.Addr
	}
	return d.Addr
}

// isolationAuth returns the SOCKS username and password for a destination.
// Tor's IsolateSOCKSAuth (on by default) puts streams with different
// credentials on different circuits: one destination always gets the same
// credentials and so reuses its circuit, and two destinations never share
// one. The credentials go only to the local Tor.
func isolationAuth(addr string) *proxy.Auth {
	return &proxy.Auth{User: "onionmx", Password: addr}
}

// DialContext connects to addr ("x.onion:25") through Tor. Its errors are
// x/net/proxy's; Classify says what they mean.
func (d *SOCKSDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	p, err := proxy.SOCKS5(d.Network, d.Addr, isolationAuth(addr), proxy.Direct)
	if err != nil {
		return nil, err
	}
	return p.(proxy.ContextDialer).DialContext(ctx, network, addr)
}
