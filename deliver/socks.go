package deliver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/net/proxy"
)

// Dialer opens a connection to an onion service. SOCKSDialer is the real
// one; tests pass others.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// SOCKSDialer dials through Tor's SocksPort with golang.org/x/net/proxy.
// The destination name goes to Tor unresolved (SOCKS5 ATYP 3), so no DNS
// query for it is ever made here.
type SOCKSDialer struct {
	Network string // "tcp" or "unix"
	Addr    string // host:port or socket path
}

// ParseSOCKS parses the --socks flag: "host:port" or "unix:/path".
func ParseSOCKS(s string) (*SOCKSDialer, error) {
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("--socks %q: want unix:/absolute/path", s)
		}
		return &SOCKSDialer{Network: "unix", Addr: path}, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return nil, fmt.Errorf("--socks %q: want host:port or unix:/path", s)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return nil, fmt.Errorf("--socks %q: bad port", s)
	}
	if host == "" {
		return nil, fmt.Errorf("--socks %q: empty host", s)
	}
	return &SOCKSDialer{Network: "tcp", Addr: s}, nil
}

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

// DialContext connects to addr ("x.onion:25") through Tor.
func (d *SOCKSDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	p, err := proxy.SOCKS5(d.Network, d.Addr, isolationAuth(addr), proxy.Direct)
	if err != nil {
		return nil, err
	}
	return p.(proxy.ContextDialer).DialContext(ctx, network, addr)
}

// SOCKSReply is a SOCKS5 reply code (RFC 1928 section 6), including the
// onion-service codes Tor sends with ExtendedErrors (Tor's socks-extensions
// spec).
type SOCKSReply byte

// Tor's extended SOCKS reply codes, from Tor's socks-extensions.txt.
const (
	ReplyGeneralFailure    SOCKSReply = 0x01
	ReplyNotAllowed        SOCKSReply = 0x02
	ReplyNetUnreachable    SOCKSReply = 0x03
	ReplyHostUnreachable   SOCKSReply = 0x04
	ReplyRefused           SOCKSReply = 0x05
	ReplyTTLExpired        SOCKSReply = 0x06
	ReplyCmdNotSupported   SOCKSReply = 0x07
	ReplyAddrNotSupported  SOCKSReply = 0x08
	ReplyOnionDescNotFound SOCKSReply = 0xF0
	ReplyOnionDescInvalid  SOCKSReply = 0xF1
	ReplyOnionIntroFailed  SOCKSReply = 0xF2
	ReplyOnionRendFailed   SOCKSReply = 0xF3
	ReplyOnionMissingAuth  SOCKSReply = 0xF4
	ReplyOnionWrongAuth    SOCKSReply = 0xF5
	ReplyOnionBadAddress   SOCKSReply = 0xF6
	ReplyOnionIntroTimeout SOCKSReply = 0xF7
)

var replyDescriptions = map[SOCKSReply]string{
	ReplyGeneralFailure:    "general SOCKS server failure",
	ReplyNotAllowed:        "connection not allowed by ruleset",
	ReplyNetUnreachable:    "network unreachable",
	ReplyHostUnreachable:   "host unreachable",
	ReplyRefused:           "connection refused",
	ReplyTTLExpired:        "TTL expired",
	ReplyCmdNotSupported:   "command not supported",
	ReplyAddrNotSupported:  "address type not supported",
	ReplyOnionDescNotFound: "onion service descriptor not found",
	ReplyOnionDescInvalid:  "onion service descriptor is invalid",
	ReplyOnionIntroFailed:  "onion service introduction failed",
	ReplyOnionRendFailed:   "onion service rendezvous failed",
	ReplyOnionMissingAuth:  "onion service requires client authorization",
	ReplyOnionWrongAuth:    "onion service client authorization is wrong",
	ReplyOnionBadAddress:   "invalid onion address",
	ReplyOnionIntroTimeout: "onion service introduction timed out",
}

func (r SOCKSReply) String() string {
	d, ok := replyDescriptions[r]
	if !ok {
		d = "unknown SOCKS reply"
	}
	return fmt.Sprintf("%s (SOCKS reply %02X)", d, byte(r))
}

// SOCKSReplyOf extracts the SOCKS reply code from a dial error of
// golang.org/x/net/proxy. That package reports a refused CONNECT only as
// text ("unknown error host unreachable", "unknown error unknown code: 240")
// inside a *net.OpError; this is the one place that reads that text.
func SOCKSReplyOf(err error) (SOCKSReply, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Err == nil || !strings.HasPrefix(op.Op, "socks") {
		return 0, false
	}
	text, ok := strings.CutPrefix(op.Err.Error(), "unknown error ")
	if !ok {
		return 0, false
	}
	if n, ok := strings.CutPrefix(text, "unknown code: "); ok {
		v, err := strconv.ParseUint(n, 10, 8)
		if err != nil {
			return 0, false
		}
		return SOCKSReply(v), true
	}
	// x/net's own names for the RFC 1928 codes 0x01 to 0x08.
	for code := ReplyGeneralFailure; code <= ReplyAddrNotSupported; code++ {
		if text == replyDescriptions[code] {
			return code, true
		}
	}
	return 0, false
}

// notSOCKS5 reports the first byte of a SocksPort's answer that was not
// SOCKS5 at all: x/net/proxy says "unexpected protocol version N".
func notSOCKS5(err error) (byte, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Err == nil {
		return 0, false
	}
	n, ok := strings.CutPrefix(op.Err.Error(), "unexpected protocol version ")
	if !ok {
		return 0, false
	}
	v, perr := strconv.ParseUint(n, 10, 8)
	return byte(v), perr == nil
}

// DialError classifies a failure of d to connect to target ("x.onion:25")
// through Tor, as a delivery does: Tor's SOCKS replies, timeouts, and
// failures of the SocksPort itself. ctxErr is the error of the context the
// connect ran under, if any. onionmx check words its results with it.
func DialError(d Dialer, target string, err, ctxErr error) *Error {
	return dialError(fmtStringer(d), target, err, ctxErr)
}

// dialError classifies a failure to connect to target through Tor.
func dialError(socks fmt.Stringer, target string, err error, ctxErr error) *Error {
	if code, ok := SOCKSReplyOf(err); ok {
		switch code {
		case ReplyOnionMissingAuth, ReplyOnionWrongAuth:
			return fail("5.7.0", err, "connect to %s via Tor: %s", target, code)
		case ReplyOnionBadAddress:
			return fail("5.1.2", err, "connect to %s via Tor: %s", target, code)
		default:
			// Descriptor, introduction and rendezvous failures come and go
			// with the Tor network; so do Tor's standard codes.
			return fail("4.4.1", err, "connect to %s via Tor: %s", target, code)
		}
	}
	if ctxErr != nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return fail("4.4.1", err, "connect to %s via Tor: timed out", target)
	}
	if b, ok := notSOCKS5(err); ok {
		// Something else listens there: --socks names the wrong port.
		hint := ""
		if b == '2' {
			hint = ", as an SMTP server's 220 greeting does"
		}
		return &Error{Status: "4.3.5", Err: err,
			Msg: fmt.Sprintf("Tor SocksPort %s is not a SOCKS5 server: its answer began with %q%s (check --socks)", socks, string(rune(b)), hint)}
	}
	var op *net.OpError
	if errors.As(err, &op) {
		// The SOCKS handshake itself failed: the proxy is down, is not
		// a SOCKS server, or refused our credentials.
		inner := op.Err
		var dialOp *net.OpError
		if errors.As(inner, &dialOp) && dialOp.Op == "dial" {
			return fail("4.4.1", err, "cannot connect to Tor SocksPort %s: %v", socks, dialOp.Err)
		}
		if inner != nil {
			return fail("4.4.1", err, "connect to %s via Tor SocksPort %s: %v", target, socks, inner)
		}
	}
	return fail("4.4.1", err, "connect to %s via Tor: %v", target, err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
