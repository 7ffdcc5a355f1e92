package deliver

import (
	"bytes"
	"errors"
	"io"
)

// MaxLineLen is the longest line of the message sent to the server, CRLF
// excluded: RFC 5321 section 4.5.3.1.6 limits a text line to 1000 octets
// with its CRLF, and receivers that enforce it reject the whole message.
// Longer lines are folded as Postfix's smtp(8) folds them
// (smtp_line_length_limit = 998): CRLF and a space are inserted, so that a
// header field stays one field (a line that starts with white space
// continues it), and a MIME body suffers the least.
const MaxLineLen = 998

// bodyBufSize is the size of the buffers a body is read into and written
// from: large enough that a copy costs a few system calls per megabyte.
const bodyBufSize = 64 << 10

// errNotCommitted is returned by writeBody when commit refused the final
// dot: the delivery was interrupted.
var errNotCommitted = errors.New("interrupted before the end of data")

// bodyReadError is a failure to read the message: its end is unknown, so
// the final dot must never be sent.
type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

// writeBody sends the message read from r to w as the content of DATA
// (RFC 5321 section 4.5.2), in constant memory:
//
//   - line ends become CRLF: LF alone and CRLF both end a line; a CR that
//     is not followed by LF is part of the line, as Postfix's smtp(8)
//     keeps it, and so is a CR at the very end of the input;
//   - a line that starts with "." gets another one (dot-stuffing);
//   - a line longer than MaxLineLen is folded (see MaxLineLen);
//   - a last line without a line end gets one, and then comes the final
//     ".", CRLF.
//
// The final dot is sent only after r returned io.EOF and commit returned
// true, in the same write as the rest of the body. A read error stops the
// copy before the dot (a *bodyReadError); a false commit does too
// (errNotCommitted); every other error is w's.
func writeBody(w io.Writer, r io.Reader, commit func() bool) error {
	b := &bodyWriter{w: w, out: make([]byte, 0, 2*bodyBufSize)}
	in := make([]byte, bodyBufSize)
	for {
		n, err := r.Read(in)
		if n > 0 {
			if werr := b.write(in[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return &bodyReadError{err}
		}
	}
	b.finish()
	if !commit() {
		return errNotCommitted
	}
	return b.flush()
}

// bodyWriter is the state of writeBody between two reads.
type bodyWriter struct {
	w   io.Writer
	out []byte // what is ready to be written
	// lineLen counts the octets of the line being written, not counting
	// a dot added by dot-stuffing (nor does smtp(8)); 0 at the start of a
	// line.
	lineLen int
	// cr is set when the input read so far ends with a CR: whether it
	// ends the line depends on the next octet.
	cr bool
}

// write takes a piece of the input.
func (b *bodyWriter) write(p []byte) error {
	for len(p) > 0 {
		if b.cr {
			b.cr = false
			if p[0] == '\n' {
				b.endLine()
				p = p[1:]
				continue
			}
			b.content([]byte{'\r'})
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if p[len(p)-1] == '\r' {
				b.cr = true
				p = p[:len(p)-1]
			}
			b.content(p)
			break
		}
		line := p[:i]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		b.content(line)
		b.endLine()
		p = p[i+1:]
		if len(b.out) >= bodyBufSize {
			if err := b.flush(); err != nil {
				return err
			}
		}
	}
	if len(b.out) >= bodyBufSize {
		return b.flush()
	}
	return nil
}

// content appends octets of the current line, dot-stuffing and folding.
func (b *bodyWriter) content(p []byte) {
	for len(p) > 0 {
		if b.lineLen == MaxLineLen {
			b.out = append(b.out, "\r\n "...)
			b.lineLen = 1
		}
		if b.lineLen == 0 && p[0] == '.' {
			b.out = append(b.out, '.')
		}
		n := min(len(p), MaxLineLen-b.lineLen)
		b.out = append(b.out, p[:n]...)
		b.lineLen += n
		p = p[n:]
	}
}

func (b *bodyWriter) endLine() {
	b.out = append(b.out, '\r', '\n')
	b.lineLen = 0
}

// finish ends the last line and appends the final dot.
func (b *bodyWriter) finish() {
	if b.cr {
		b.cr = false
		b.content([]byte{'\r'})
	}
	if b.lineLen > 0 {
		b.endLine()
	}
	b.out = append(b.out, ".\r\n"...)
}

func (b *bodyWriter) flush() error {
	if len(b.out) == 0 {
		return nil
	}
	_, err := b.w.Write(b.out)
	b.out = b.out[:0]
	return err
}
