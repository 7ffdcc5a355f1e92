package tor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/onionmx/onionmx/internal/timeout"
)

// ProbeError is a SocksPort that does not work: nothing listens, nothing
// answers, or what answers is not a SOCKS5 server.
type ProbeError struct {
	SOCKS   string // the SocksPort, as SOCKSDialer.String names it
	Problem string // "is unreachable", "does not answer ...", ...
	Err     error
}

func (e *ProbeError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("Tor SocksPort %s %s", e.SOCKS, e.Problem)
	}
	return fmt.Sprintf("Tor SocksPort %s %s: %v", e.SOCKS, e.Problem, e.Err)
}

func (e *ProbeError) Unwrap() error { return e.Err }

// Probe makes sure a SOCKS5 server answers at the SocksPort within
// wait. It offers the two methods onionmx uses, "no authentication" and
// "username/password" (RFC 1928 section 3), reads the server's choice and
// hangs up before any request: Tor answers from memory and builds no
// circuit for it. Its error is a *ProbeError.
func (d *SOCKSDialer) Probe(ctx context.Context, wait time.Duration) error {
	name := d.String()
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, d.Network, d.Addr)
	if err != nil {
		if ctx.Err() != nil {
			return &ProbeError{SOCKS: name, Problem: fmt.Sprintf("does not accept connections (nothing within %s)", seconds(wait))}
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return &ProbeError{SOCKS: name, Problem: "is unreachable", Err: err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte{5, 2, 0, 2}); err != nil {
		return &ProbeError{SOCKS: name, Problem: "closed the connection", Err: err}
	}
	var reply [2]byte
	n, err := io.ReadFull(conn, reply[:])
	switch {
	case err != nil && timeout.Is(err):
		return &ProbeError{SOCKS: name, Problem: fmt.Sprintf("does not answer (no SOCKS5 reply within %s)", seconds(wait))}
	case err != nil && n > 0:
		return &ProbeError{SOCKS: name, Problem: fmt.Sprintf("is not a SOCKS5 server (it answered %q)", reply[:n])}
	case err != nil:
		return &ProbeError{SOCKS: name, Problem: "closed the connection without a SOCKS5 reply", Err: err}
	case reply[0] != 5:
		// Read a little more, to show people what answered: "220 ..." is
		// an SMTP server, "HTTP/1.0 ..." a web server.
		more := make([]byte, 30)
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		m, _ := conn.Read(more)
		return &ProbeError{SOCKS: name, Problem: fmt.Sprintf("is not a SOCKS5 server (it answered %q)", spaced(string(reply[:])+string(more[:m])))}
	case reply[1] == 0xff:
		return &ProbeError{SOCKS: name, Problem: "accepts neither no authentication nor username/password"}
	}
	return nil
}

// seconds formats a timeout as the check's output does: "0.200s".
func seconds(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

// spaced puts an answer on one line: its line ends and other control
// characters become spaces (%q then shows the rest printably).
func spaced(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
