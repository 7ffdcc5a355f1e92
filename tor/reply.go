package tor

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Reply is a SOCKS5 reply code (RFC 1928 section 6), including the
// onion-service codes Tor sends with ExtendedErrors (Tor's socks-extensions
// spec).
type Reply byte

// Tor's SOCKS reply codes, from Tor's socks-extensions.txt.
const (
	ReplyGeneralFailure    Reply = 0x01
	ReplyNotAllowed        Reply = 0x02
	ReplyNetUnreachable    Reply = 0x03
	ReplyHostUnreachable   Reply = 0x04
	ReplyRefused           Reply = 0x05
	ReplyTTLExpired        Reply = 0x06
	ReplyCmdNotSupported   Reply = 0x07
	ReplyAddrNotSupported  Reply = 0x08
	ReplyOnionDescNotFound Reply = 0xF0
	ReplyOnionDescInvalid  Reply = 0xF1
	ReplyOnionIntroFailed  Reply = 0xF2
	ReplyOnionRendFailed   Reply = 0xF3
	ReplyOnionMissingAuth  Reply = 0xF4
	ReplyOnionWrongAuth    Reply = 0xF5
	ReplyOnionBadAddress   Reply = 0xF6
	ReplyOnionIntroTimeout Reply = 0xF7
)

// description returns a reply's meaning. The standard codes 0x01 to 0x08
// are worded as x/net/proxy words them, which ReplyOf relies on.
func (r Reply) description() string {
	switch r {
	case ReplyGeneralFailure:
		return "general SOCKS server failure"
	case ReplyNotAllowed:
		return "connection not allowed by ruleset"
	case ReplyNetUnreachable:
		return "network unreachable"
	case ReplyHostUnreachable:
		return "host unreachable"
	case ReplyRefused:
		return "connection refused"
	case ReplyTTLExpired:
		return "TTL expired"
	case ReplyCmdNotSupported:
		return "command not supported"
	case ReplyAddrNotSupported:
		return "address type not supported"
	case ReplyOnionDescNotFound:
		return "onion service descriptor not found"
	case ReplyOnionDescInvalid:
		return "onion service descriptor is invalid"
	case ReplyOnionIntroFailed:
		return "onion service introduction failed"
	case ReplyOnionRendFailed:
		return "onion service rendezvous failed"
	case ReplyOnionMissingAuth:
		return "onion service requires client authorization"
	case ReplyOnionWrongAuth:
		return "onion service client authorization is wrong"
	case ReplyOnionBadAddress:
		return "invalid onion address"
	case ReplyOnionIntroTimeout:
		return "onion service introduction timed out"
	}
	return "unknown SOCKS reply"
}

func (r Reply) String() string {
	return fmt.Sprintf("%s (SOCKS reply %02X)", r.description(), byte(r))
}

// ReplyOf extracts the SOCKS reply code from a dial error of
// golang.org/x/net/proxy. That package reports a refused CONNECT only as
// text ("unknown error host unreachable", "unknown error unknown code: 240")
// inside a *net.OpError; this is the one place that reads that text.
func ReplyOf(err error) (Reply, bool) {
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
		return Reply(v), true
	}
	// x/net's own names for the RFC 1928 codes 0x01 to 0x08.
	for code := ReplyGeneralFailure; code <= ReplyAddrNotSupported; code++ {
		if text == code.description() {
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
