package check

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"time"
)

// SOCKSError is a SocksPort that does not work: nothing listens, nothing
// answers, or what answers is not a SOCKS5 server.
type SOCKSError struct {
	Addr    string // as given to --socks
	Problem string // "is unreachable", "does not answer", ...
	Err     error
}

func (e *SOCKSError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("Tor SocksPort %s %s", e.Addr, e.Problem)
	}
	return fmt.Sprintf("Tor SocksPort %s %s: %v", e.Addr, e.Problem, e.Err)
}

func (e *SOCKSError) Unwrap() error { return e.Err }

// probe makes sure a SOCKS5 server answers at the SocksPort. It offers the
// two methods onionmx uses, "no authentication" and "username/password"
// (RFC 1928 section 3), reads the server's choice and hangs up before any
// request: Tor answers from memory and builds no circuit for it.
func probe(ctx context.Context, network, addr string, timeout time.Duration) error {
	name := addr
	if network == "unix" {
		name = "unix:" + addr
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		if ctx.Err() != nil {
			return &SOCKSError{Addr: name, Problem: fmt.Sprintf("does not accept connections (nothing within %s)", seconds(timeout))}
		}
		var op *net.OpError
		if errors.As(err, &op) && op.Err != nil {
			err = op.Err
		}
		return &SOCKSError{Addr: name, Problem: "is unreachable", Err: err}
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte{5, 2, 0, 2}); err != nil {
		return &SOCKSError{Addr: name, Problem: "closed the connection", Err: err}
	}
	var reply [2]byte
	n, err := io.ReadFull(conn, reply[:])
	switch {
	case err != nil && isTimeout(err):
		return &SOCKSError{Addr: name, Problem: fmt.Sprintf("does not answer (no SOCKS5 reply within %s)", seconds(timeout))}
	case err != nil && n > 0:
		return &SOCKSError{Addr: name, Problem: fmt.Sprintf("is not a SOCKS5 server (it answered %q)", reply[:n])}
	case err != nil:
		return &SOCKSError{Addr: name, Problem: "closed the connection without a SOCKS5 reply", Err: err}
	case reply[0] != 5:
		// Read a little more, to show people what answered: "220 ..." is
		// an SMTP server, "HTTP/1.0 ..." a web server.
		more := make([]byte, 30)
		conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		m, _ := conn.Read(more)
		return &SOCKSError{Addr: name, Problem: fmt.Sprintf("is not a SOCKS5 server (it answered %q)", clean(string(reply[:])+string(more[:m])))}
	case reply[1] == 0xff:
		return &SOCKSError{Addr: name, Problem: "accepts neither no authentication nor username/password"}
	}
	return nil
}

// isPermission reports a SocksPort that exists but may not be opened by
// this user: a configuration problem, not a broken Tor.
func isPermission(err error) bool { return errors.Is(err, fs.ErrPermission) }
