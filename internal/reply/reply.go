// Package reply reads SMTP replies (RFC 5321 section 4.2) from a server
// that may be broken or hostile, in bounded memory.
//
// A remote onion can send anything: a greeting line of a gigabyte, an EHLO
// reply of a million lines, a reply code with no text. net/textproto, and
// go-smtp's client on top of it, keep a whole reply in memory and reject a
// bare "250" as a short response. A Reader sits between the connection and
// everything that reads replies, ours and go-smtp's:
//
//   - a reply line longer than MaxLine octets, a reply longer than
//     MaxReply octets, a line that is not a reply line and a continuation
//     line with another code are an *Error, and the Reader stays failed;
//   - a reply code with no text ("250" CRLF, which RFC 5321's grammar
//     allows) is accepted: ReadReply returns it with empty text, and Read
//     hands it on as "250 " CRLF, which net/textproto accepts;
//   - Read returns at most one line per call, so a bufio.Reader above it
//     (go-smtp's) never holds bytes past the line it asked for: after a
//     complete reply, whatever else the server sent is still here
//     (Buffered), not lost in someone else's buffer.
package reply

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/onionmx/onionmx/internal/printable"
)

const (
	// MaxLine bounds a reply line, CRLF included. RFC 5321 section
	// 4.5.3.1.5 allows 512 octets; about four times that leaves room for
	// servers that exceed it in good faith, and stays within the 2000
	// octets that go-smtp's client accepts (a longer line would fail there
	// as a broken connection, not as a bad reply).
	MaxLine = 2000
	// MaxReply bounds a whole reply, all its lines. An EHLO reply, the
	// longest real one, has a dozen or two lines: well under 2 KiB.
	MaxReply = 64 << 10
)

// Error is a reply that breaks the protocol or the limits: the connection
// cannot be trusted any further.
type Error struct {
	Msg string
	// Line is the offending line, without its line end, when a line that
	// is whole broke the protocol (not a reply line, or another code).
	Line string
}

func (e *Error) Error() string { return e.Msg }

// Reply is one complete reply.
type Reply struct {
	Code int
	// Lines are the texts after "NNN " or "NNN-", without the line end;
	// a bare code has one empty line.
	Lines []string
}

// Text returns the reply's lines joined with "\n", as net/textproto
// returns a reply's message.
func (r *Reply) Text() string { return strings.Join(r.Lines, "\n") }

// Reader reads replies from a connection. It is not safe for concurrent
// use.
type Reader struct {
	rd   io.Reader
	buf  []byte
	r, w int   // buf[r:w] is read from rd and not yet consumed
	err  error // sticky: the connection's error, or an *Error

	// pending is the rest of a line that Read has not returned yet.
	pending []byte
	// replyLen counts the octets of the reply in progress, and replyCode
	// is its code, for Read.
	replyLen  int
	replyCode int
	// fixed is the normalized copy of a bare-code line, for Read.
	fixed [8]byte
}

// NewReader returns a Reader of the replies that arrive on rd.
func NewReader(rd io.Reader) *Reader {
	return &Reader{rd: rd, buf: make([]byte, MaxLine)}
}

// Buffered returns the number of octets received and not yet consumed.
func (r *Reader) Buffered() int { return r.w - r.r + len(r.pending) }

// line returns the next complete line, its line end included. The slice is
// valid until the next call.
func (r *Reader) line() ([]byte, error) {
	for {
		if i := bytes.IndexByte(r.buf[r.r:r.w], '\n'); i >= 0 {
			l := r.buf[r.r : r.r+i+1]
			r.r += i + 1
			return l, nil
		}
		if r.err != nil {
			return nil, r.err
		}
		if r.w-r.r == len(r.buf) {
			r.err = &Error{Msg: fmt.Sprintf("reply line longer than %d bytes", MaxLine)}
			return nil, r.err
		}
		if r.r > 0 {
			r.w = copy(r.buf, r.buf[r.r:r.w])
			r.r = 0
		}
		n, err := r.rd.Read(r.buf[r.w:])
		r.w += n
		if err != nil {
			if err == io.EOF && r.w > r.r {
				err = io.ErrUnexpectedEOF
			}
			r.err = err
		}
	}
}

// codeLine parses a reply line: its code, whether more lines follow, and
// its text. ok is false when the line is not a reply line.
func codeLine(l []byte) (code int, more bool, text []byte, ok bool) {
	l = bytes.TrimSuffix(l, []byte("\n"))
	l = bytes.TrimSuffix(l, []byte("\r"))
	if len(l) < 3 || len(l) > 3 && l[3] != ' ' && l[3] != '-' {
		return 0, false, nil, false
	}
	for _, c := range l[:3] {
		if c < '0' || c > '9' {
			return 0, false, nil, false
		}
	}
	if l[0] < '2' || l[0] > '5' {
		return 0, false, nil, false
	}
	code, _ = strconv.Atoi(string(l[:3]))
	if len(l) == 3 {
		return code, false, nil, true
	}
	return code, l[3] == '-', l[4:], true
}

// count adds a line to the reply in progress and checks the reply's size.
func (r *Reader) count(l []byte, more bool) error {
	r.replyLen += len(l)
	if r.replyLen > MaxReply {
		r.err = &Error{Msg: fmt.Sprintf("reply longer than %d bytes", MaxReply)}
		return r.err
	}
	if !more {
		r.replyLen = 0
	}
	return nil
}

// ReadReply reads one reply.
func (r *Reader) ReadReply() (*Reply, error) {
	if len(r.pending) > 0 {
		return nil, errors.New("reply: ReadReply in the middle of a line given to Read")
	}
	var rep *Reply
	for {
		l, err := r.line()
		if err != nil {
			return nil, err
		}
		code, more, text, ok := codeLine(l)
		if !ok {
			r.err = lineError(l, fmt.Sprintf("not an SMTP reply: %q", printable.Line(string(l), 80)))
			return nil, r.err
		}
		if err := r.count(l, more); err != nil {
			return nil, err
		}
		if rep == nil {
			rep = &Reply{Code: code}
		} else if code != rep.Code {
			r.err = lineError(l, fmt.Sprintf("reply lines with different codes, %d and %d", rep.Code, code))
			return nil, r.err
		}
		rep.Lines = append(rep.Lines, string(text))
		if !more {
			return rep, nil
		}
	}
}

// Read hands the replies on as a byte stream, one line at most per call,
// with a bare code completed to "NNN ": what go-smtp's client reads.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(r.pending) == 0 {
		l, err := r.line()
		if err != nil {
			return 0, err
		}
		code, more, _, ok := codeLine(l)
		switch {
		case !ok:
			r.err = lineError(l, fmt.Sprintf("not an SMTP reply: %q", printable.Line(string(l), 80)))
			return 0, r.err
		case r.replyLen > 0 && code != r.replyCode:
			r.err = lineError(l, fmt.Sprintf("reply lines with different codes, %d and %d", r.replyCode, code))
			return 0, r.err
		}
		r.replyCode = code
		if err := r.count(l, more); err != nil {
			return 0, err
		}
		if c := bytes.TrimRight(l, "\r\n"); len(c) == 3 {
			// A bare code: net/textproto wants "NNN " at least.
			n := copy(r.fixed[:], c)
			r.fixed[n] = ' '
			n++
			n += copy(r.fixed[n:], l[3:])
			l = r.fixed[:n]
		}
		r.pending = l
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// lineError is an *Error about line l.
func lineError(l []byte, msg string) *Error {
	return &Error{Msg: msg, Line: strings.TrimRight(string(l), "\r\n")}
}
