package tor

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/onionmx/onionmx/internal/timeout"
)

// Kind is what went wrong with a connect through Tor.
type Kind int

// The kinds of a failed connect, from the far end to the near one.
const (
	// NeedsAuth: Tor says the onion service wants client authorization,
	// or not the credentials it has (replies F4, F5).
	NeedsAuth Kind = iota + 1
	// BadAddress: Tor says the onion address is invalid (reply F6).
	BadAddress
	// PortRefused: the onion service refused the port (reply 05).
	PortRefused
	// OnTheWay: any other reply from Tor. Descriptor, introduction and
	// rendezvous failures come and go with the Tor network, and Tor's
	// general failure (01) is also what a closed target behind a working
	// onion gives; they may be the local Tor's.
	OnTheWay
	// TimedOut: no answer within the deadline.
	TimedOut
	// NotSOCKS: what answers at the SocksPort is not a SOCKS5 server; the
	// SocksPort address is wrong.
	NotSOCKS
	// Unreachable: the SocksPort does not accept connections; Tor is down.
	Unreachable
	// Handshake: the SOCKS exchange with the SocksPort failed otherwise
	// (closed early, credentials refused).
	Handshake
	// Other: none of the above.
	Other
)

// ConnectError is a failed connect to Target through the SocksPort SOCKS,
// classified once for every user. Its text is one line, without the
// words of any command line.
type ConnectError struct {
	Kind   Kind
	Reply  Reply  // Tor's reply, for NeedsAuth, BadAddress, PortRefused, OnTheWay
	Target string // "x.onion:25"
	SOCKS  string // the SocksPort, as SOCKSDialer.String names it
	Err    error  // the dialer's error

	first byte  // NotSOCKS: the first byte of the answer
	cause error // Unreachable, Handshake: the part of Err worth showing
}

func (e *ConnectError) Error() string {
	switch e.Kind {
	case NeedsAuth, BadAddress, PortRefused, OnTheWay:
		return fmt.Sprintf("connect to %s via Tor: %s", e.Target, e.Reply)
	case TimedOut:
		return fmt.Sprintf("connect to %s via Tor: timed out", e.Target)
	case NotSOCKS:
		hint := ""
		if e.first == '2' {
			hint = ", as an SMTP server's 220 greeting does"
		}
		return fmt.Sprintf("Tor SocksPort %s is not a SOCKS5 server: its answer began with %q%s", e.SOCKS, string(rune(e.first)), hint)
	case Unreachable:
		return fmt.Sprintf("cannot connect to Tor SocksPort %s: %v", e.SOCKS, e.cause)
	case Handshake:
		return fmt.Sprintf("connect to %s via Tor SocksPort %s: %v", e.Target, e.SOCKS, e.cause)
	}
	return fmt.Sprintf("connect to %s via Tor: %v", e.Target, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Remote reports whether the failure is the remote end's, which restarting
// the local Tor cannot change: the onion refused the port, its address is
// invalid, or it wants client authorization.
func (e *ConnectError) Remote() bool {
	switch e.Kind {
	case NeedsAuth, BadAddress, PortRefused:
		return true
	}
	return false
}

// Classify says why a connect to target through the SocksPort socks
// failed with err. ctxErr is the error of the context the connect ran
// under, if any: a connect cut short by it timed out.
func Classify(socks, target string, err, ctxErr error) *ConnectError {
	e := &ConnectError{Target: target, SOCKS: socks, Err: err, Kind: Other}
	if code, ok := ReplyOf(err); ok {
		e.Reply = code
		switch code {
		case ReplyOnionMissingAuth, ReplyOnionWrongAuth:
			e.Kind = NeedsAuth
		case ReplyOnionBadAddress:
			e.Kind = BadAddress
		case ReplyRefused:
			e.Kind = PortRefused
		default:
			e.Kind = OnTheWay
		}
		return e
	}
	if ctxErr != nil || errors.Is(err, context.DeadlineExceeded) || timeout.Is(err) {
		e.Kind = TimedOut
		return e
	}
	if b, ok := notSOCKS5(err); ok {
		e.Kind, e.first = NotSOCKS, b
		return e
	}
	var op *net.OpError
	if errors.As(err, &op) {
		inner := op.Err
		var dialOp *net.OpError
		if errors.As(inner, &dialOp) && dialOp.Op == "dial" {
			e.Kind, e.cause = Unreachable, dialOp.Err
			return e
		}
		if inner != nil {
			e.Kind, e.cause = Handshake, inner
		}
	}
	return e
}
