package check

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/onionmx/onionmx/internal/printable"
	"github.com/onionmx/onionmx/internal/reply"
)

// watchConn is the SMTP connection of one target, as go-smtp's client sees
// it. Everything the server sends is read through a reply.Reader, in
// bounded memory whatever the server sends: a reply line longer than
// reply.MaxLine or a reply longer than reply.MaxReply is a *reply.Error,
// and so is a line that is not a reply line or a continuation line with
// another code (net/textproto would read on after those, into a message
// without a bound). After a *reply.Error the connection is closed without
// another word (see broken).
//
// It also notes the last command written (a failure before any is the
// greeting's), and keeps the first and the last line read, cut to maxLine:
// the greeting, and the reply go-smtp does not return on success. Only the
// session's goroutine uses it (the check's deadline only closes Conn).
type watchConn struct {
	net.Conn
	rd *reply.Reader
	// cmd is the last command written: "EHLO", "MAIL FROM"...; "" before
	// any.
	cmd         string
	wrote       bool
	first, last string
	lines       int // lines read
	// code is the code of the multi-line reply in progress, "" between
	// replies.
	code string
	err  error // sticky: the connection's error or a *reply.Error
	// buf holds the line being handed on; pending is what is left of it.
	buf     [reply.MaxLine + 8]byte
	pending []byte
}

// maxLine bounds what is kept of a line: enough for any reply worth
// showing.
const maxLine = 512

// maxHandOn bounds the lines handed on to go-smtp, whose client refuses a
// line over 2000 octets (its lineLimitReader) with an error that does not
// say whose fault it is. Longer lines, up to reply.MaxLine, are cut: the
// check shows no more than maxText of a reply anyway.
const maxHandOn = 1000

func newWatchConn(c net.Conn) *watchConn {
	return &watchConn{Conn: c, rd: reply.NewReader(c)}
}

// Read hands on the replies, at most one line per call.
func (c *watchConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(c.pending) == 0 {
		l, err := c.line()
		if err != nil {
			return 0, err
		}
		if len(l) > maxHandOn {
			l = append(l[:maxHandOn-2], '\r', '\n')
		}
		c.pending = l
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}

// line reads the next line, line end included, and checks it. The slice
// is valid until the next call.
func (c *watchConn) line() ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	n := 0
	for n == 0 || c.buf[n-1] != '\n' {
		if n == len(c.buf) { // reply.Reader hands on whole lines: not reached
			c.err = &reply.Error{Msg: fmt.Sprintf("reply line longer than %d bytes", reply.MaxLine)}
			return nil, c.err
		}
		m, err := c.rd.Read(c.buf[n:])
		n += m
		var rerr *reply.Error
		if errors.As(err, &rerr) && rerr.Line != "" && n == 0 {
			// A whole line that breaks the protocol: it is kept, as any
			// line, and judged below.
			n = copy(c.buf[:], rerr.Line[:min(len(rerr.Line), len(c.buf)-2)]+"\r\n")
			break
		}
		if err != nil {
			c.err = err
			return nil, err
		}
	}
	l := c.buf[:n]
	s := strings.TrimRight(string(l[:min(len(l), maxLine+2)]), "\r\n")
	if len(s) > maxLine {
		s = s[:maxLine]
	}
	s = strings.TrimRight(s, " ") // reply.Reader's completion of a bare code
	if c.lines == 0 {
		c.first = s
	}
	c.lines++
	c.last = s
	code, more, ok := replyCode(l)
	switch {
	case !ok:
		c.err = &reply.Error{Msg: fmt.Sprintf("line that is not an SMTP reply: %q", printable.Line(string(l), 80))}
	case c.code != "" && code != c.code:
		c.err = &reply.Error{Msg: fmt.Sprintf("reply whose lines have different codes (%s and %s)", c.code, code)}
	case more:
		c.code = code
	default:
		c.code = ""
	}
	if c.err != nil {
		return nil, c.err
	}
	return l, nil
}

// replyCode parses a reply line (RFC 5321 section 4.2): a code from 200 to
// 599, then a space, a hyphen (more lines follow) or the line end.
func replyCode(l []byte) (code string, more, ok bool) {
	l = bytes.TrimRight(l, "\r\n")
	if len(l) < 3 || len(l) > 3 && l[3] != ' ' && l[3] != '-' ||
		l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' {
		return "", false, false
	}
	return string(l[:3]), len(l) > 3 && l[3] == '-', true
}

// isReplyLine reports whether a line looks like an SMTP reply line.
func isReplyLine(l string) bool {
	_, _, ok := replyCode([]byte(l))
	return ok
}

func (c *watchConn) Write(p []byte) (int, error) {
	c.wrote = true
	c.cmd = commandName(p)
	return c.Conn.Write(p)
}

// commandName names the command that p starts: "EHLO", "MAIL FROM"...
func commandName(p []byte) string {
	verb, _, _ := bytes.Cut(p[:min(len(p), 16)], []byte(" "))
	verb = bytes.TrimRight(verb, "\r\n")
	switch v := strings.ToUpper(string(verb)); v {
	case "MAIL":
		return "MAIL FROM"
	case "RCPT":
		return "RCPT TO"
	default:
		return v
	}
}

// broken returns the *reply.Error the server broke the protocol or the
// limits with, if it did: then nothing more is to be said or read.
func (c *watchConn) broken() *reply.Error {
	e, _ := c.err.(*reply.Error)
	return e
}

// brokenDetail says how the server broke the protocol or the limits.
func (c *watchConn) brokenDetail(e *reply.Error) string {
	where := "as its greeting"
	if c.cmd != "" {
		where = "in reply to " + c.cmd
	}
	return fmt.Sprintf("not SMTP: the server sent a %s %s; connection closed", e.Msg, where)
}

func (c *watchConn) greeting() string { return clean(c.first) }

// quit says QUIT and waits up to wait for the reply (or for the server to
// close). It writes on the connection itself: go-smtp's Quit after Reset
// would say EHLO again first. After a *reply.Error it says nothing.
func (c *watchConn) quit(wait time.Duration) {
	if c.broken() != nil {
		return
	}
	c.SetDeadline(time.Now().Add(quitTimeout))
	if _, err := c.Write([]byte("QUIT\r\n")); err != nil || wait <= 0 {
		return
	}
	c.SetReadDeadline(time.Now().Add(wait))
	// go-smtp has read every reply it asked for, and no further: the next
	// one is QUIT's.
	c.pending = nil
	for {
		if _, err := c.line(); err != nil || c.code == "" {
			return
		}
	}
}
