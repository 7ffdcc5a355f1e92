package deliver

import (
	"bytes"
	"errors"
	"io"
	"strconv"
)

// MaxLineLen is the longest line of the message sent to the server, CRLF
// excluded: RFC 5321 section 4.5.3.1.6 limits a text line to 1000 octets
// with its CRLF, and receivers that enforce it reject the whole message.
// Longer lines are folded as Postfix's smtp(8) folds them
// (smtp_line_length_limit = 998): CRLF and a space are inserted, so that a
// header field stays one field (a line that starts with white space
// continues it), and a MIME body suffers the least.
const MaxLineLen = 998

// bodyBufSize is the most the message is read in one call: a quarter of
// the pipe that onionmx deliver asks for (1 MiB, see input.go), where
// Linux's default of 64 KiB made four times as many reads.
const bodyBufSize = 256 << 10

// dataWriteSize is how much of a body writeBody gathers before a write:
// large enough that the system calls and the write deadlines they each
// set cost nothing beside the copying, small enough to stay in the CPU's
// cache.
const dataWriteSize = 256 << 10

// maxChunk is the size of a BDAT chunk (RFC 3030) but the last: 1 MiB of
// the normalised message, so that a message of up to 1 MiB goes as one
// "BDAT n LAST" in one write, and a larger one costs a write and a reply
// per MiB, in constant memory.
const maxChunk = 1 << 20

// putSlack is how far normalizer.put may go past its limit: it stops once
// the limit is reached, after at most a fold, one octet and a CRLF.
const putSlack = 8

// finishSlack is the most normalizer.finish appends: a held CR after a
// fold, and the line's CRLF.
const finishSlack = 8

// errNotCommitted is returned by writeBody and writeChunks when commit
// refused the end of the message: the delivery was interrupted.
var errNotCommitted = errors.New("interrupted before the end of data")

// bodyReadError is a failure to read the message: its end is unknown, so
// the end of the message (the final dot, BDAT LAST) must never be sent.
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
	s := newBodySender(w, nil, &dataFraming{}, true, dataWriteSize, len(".\r\n"))
	return s.send(r, commit)
}

// writeChunks sends the message read from r as BDAT chunks (RFC 3030):
// each chunk is "BDAT <n>\r\n" followed by n octets; the last is
// "BDAT <n> LAST\r\n" (n may be 0), written only after r returned io.EOF
// and commit returned true. The octets are the message normalised as
// writeBody normalises it, without dot-stuffing: BDAT counts octets, and
// no line ends the data. Every chunk but the last carries exactly maxChunk
// octets; a message of up to maxChunk normalised octets goes as one
// "BDAT n LAST".
//
// prefix (the pipelined MAIL FROM and RCPT TO lines) goes in the same
// first write as the first chunk, so that a small message leaves in one
// write; with no chunk written, the prefix was not either. writeChunks
// returns how many chunks it wrote, LAST included when it was written: the
// caller reads one reply per chunk. The errors are those of writeBody:
// *bodyReadError, errNotCommitted, or w's.
func writeChunks(w io.Writer, r io.Reader, commit func() bool, prefix []byte) (chunks int, err error) {
	f := &bdatFraming{}
	s := newBodySender(w, prefix, f, false, maxChunk, 0)
	err = s.send(r, commit)
	return f.chunks, err
}

// normalizer is the core that writeBody and writeChunks share: it turns
// the message into lines of at most MaxLineLen octets with CRLF ends, as
// writeBody describes, piece by piece, whatever the pieces.
type normalizer struct {
	stuff bool // dot-stuff the lines (DATA)
	// lineLen counts the octets of the line being written, not counting
	// a dot added by dot-stuffing (nor does smtp(8)); 0 at the start of a
	// line.
	lineLen int
	// cr is set when the input taken so far ends with a CR: whether it
	// ends the line depends on the next octet.
	cr bool
}

var crlf = []byte("\r\n")

// put appends the normalised form of p to out until len(out) reaches
// limit, and returns out and how many octets of p it took (all of them,
// unless it stopped at limit). It may go past limit by putSlack octets;
// the caller provides the capacity, so that put never allocates.
func (z *normalizer) put(out, p []byte, limit int) ([]byte, int) {
	n := 0
	for n < len(p) && len(out) < limit {
		if z.cr {
			z.cr = false
			if p[n] == '\n' {
				out = append(out, '\r', '\n')
				z.lineLen = 0
				n++
			} else {
				// A CR not before LF is part of the line. It is
				// not in p: it takes nothing from p.
				out, _ = z.content(out, crlf[:1], limit)
			}
			continue
		}
		if z.lineLen == 0 {
			var k int
			out, k = z.lines(out, p[n:], limit)
			if n += k; n == len(p) {
				break
			}
		}
		// What lines left: a line too long, one without its end in p
		// yet, or the last before limit.
		q := p[n:]
		end := bytes.IndexByte(q, '\n')
		lf := end >= 0
		if !lf {
			end = len(q)
		}
		// A CR just before LF is part of the line end; a CR at the end
		// of p waits for the next octet.
		c := end
		if c > 0 && q[c-1] == '\r' {
			c--
		}
		var k int
		out, k = z.content(out, q[:c], limit)
		if n += k; k < c {
			break
		}
		switch {
		case lf:
			out = append(out, '\r', '\n')
			z.lineLen = 0
			n += end - c + 1
		case c < end:
			z.cr = true
			n++
		}
	}
	return out, n
}

// lines is put's fast path, from the start of a line: it appends the
// whole lines of q that need no folding, one copy each, while they fit in
// limit, and returns how many octets of q it took. The searches for LF
// and the copies are most of the cost of a body; everything else is done
// once per line at most.
func (z *normalizer) lines(out, q []byte, limit int) ([]byte, int) {
	n := 0
	for {
		i := bytes.IndexByte(q[n:], '\n')
		if i < 0 || i > MaxLineLen+1 || len(out)+i+3 > limit {
			return out, n
		}
		c := i
		if c > 0 && q[n+c-1] == '\r' {
			c--
		} else if c > MaxLineLen {
			return out, n
		}
		if z.stuff && c > 0 && q[n] == '.' {
			out = append(out, '.')
		}
		out = append(out, q[n:n+c]...)
		out = append(out, '\r', '\n')
		n += i + 1
	}
}

// content appends octets of the current line, dot-stuffing and folding,
// until len(out) reaches limit, and returns how many of q it took: at
// least one if q has any, so that a held CR is never split from its
// fold.
func (z *normalizer) content(out, q []byte, limit int) ([]byte, int) {
	k := 0
	for k < len(q) {
		if z.lineLen == MaxLineLen {
			out = append(out, '\r', '\n', ' ')
			z.lineLen = 1
		} else if z.lineLen == 0 && z.stuff && q[k] == '.' {
			out = append(out, '.')
		}
		m := min(len(q)-k, MaxLineLen-z.lineLen, max(limit-len(out), 1))
		out = append(out, q[k:k+m]...)
		z.lineLen += m
		k += m
		if len(out) >= limit {
			break
		}
	}
	return out, k
}

// finish ends the message: a CR held at its very end is part of the last
// line, and a last line without a line end gets one. It appends at most
// finishSlack octets.
func (z *normalizer) finish(out []byte) []byte {
	if z.cr {
		z.cr = false
		out, _ = z.content(out, crlf[:1], len(out)+1)
	}
	if z.lineLen > 0 {
		out = append(out, '\r', '\n')
		z.lineLen = 0
	}
	return out
}

// framing is what DATA and BDAT put around the normalised message, and
// when they write it.
type framing interface {
	// headroom is the most octets the framing puts before the data of a
	// write.
	headroom() int
	// full writes what the buffer holds once it reached the sender's
	// limit, with more of the message to come.
	full(s *bodySender) error
	// end writes the rest of the message and its end; the last write
	// only if commit returns true, and commit is called just before it.
	end(s *bodySender, commit func() bool) error
}

// bodySender carries a message from its reader through the normalizer to
// w, in one buffer allocated at the start: buf holds room for the
// framing and the prefix, then the data not yet written.
type bodySender struct {
	w      io.Writer
	f      framing
	z      normalizer
	prefix []byte // to go in the first write, before the framing
	buf    []byte
	head   int // where the data starts in buf
	data   []byte
	limit  int // of data octets before the framing writes
}

func newBodySender(w io.Writer, prefix []byte, f framing, stuff bool, limit, tail int) *bodySender {
	head := len(prefix) + f.headroom()
	buf := make([]byte, head+limit+putSlack+finishSlack+tail)
	return &bodySender{w: w, f: f, z: normalizer{stuff: stuff}, prefix: prefix, buf: buf, head: head,
		data: buf[head:head], limit: limit}
}

// send reads r to its end, normalising, and writes through the framing.
func (s *bodySender) send(r io.Reader, commit func() bool) error {
	in := make([]byte, bodyBufSize)
	for {
		n, err := r.Read(in)
		for p := in[:n]; len(p) > 0; {
			var k int
			s.data, k = s.z.put(s.data, p, s.limit)
			p = p[k:]
			if len(p) > 0 {
				// Full: what remains of p is more to come.
				if err := s.f.full(s); err != nil {
					return err
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return &bodyReadError{err}
		}
	}
	s.data = s.z.finish(s.data)
	return s.f.end(s, commit)
}

// write writes head, which the framing placed just before the data, and
// the first n octets of the data; the prefix goes first, once. The rest of
// the data moves to the start of the data.
func (s *bodySender) write(head []byte, n int) error {
	start := s.head - len(head)
	copy(s.buf[start:], head)
	if s.prefix != nil {
		start -= len(s.prefix)
		copy(s.buf[start:], s.prefix)
		s.prefix = nil
	}
	_, err := s.w.Write(s.buf[start : s.head+n])
	s.data = s.data[:copy(s.data, s.data[n:])]
	return err
}

// dataFraming is DATA's: the data as it is, and the final dot.
type dataFraming struct{}

func (dataFraming) headroom() int { return 0 }

func (dataFraming) full(s *bodySender) error { return s.write(nil, len(s.data)) }

func (dataFraming) end(s *bodySender, commit func() bool) error {
	if !commit() {
		return errNotCommitted
	}
	s.data = append(s.data, ".\r\n"...)
	return s.write(nil, len(s.data))
}

// bdatFraming is BDAT's: a command before each chunk.
type bdatFraming struct {
	chunks int // written
	hdr    []byte
}

// bdatMaxHeader is the longest chunk command.
var bdatMaxHeader = len("BDAT " + strconv.Itoa(maxChunk) + " LAST\r\n")

func (f *bdatFraming) headroom() int { return bdatMaxHeader }

func (f *bdatFraming) full(s *bodySender) error {
	// A chunk is exactly maxChunk octets; what went past stays for the
	// next.
	return f.chunk(s, maxChunk, false)
}

func (f *bdatFraming) end(s *bodySender, commit func() bool) error {
	// put or finish may have gone past maxChunk: a full chunk first.
	if len(s.data) > maxChunk {
		if err := f.chunk(s, maxChunk, false); err != nil {
			return err
		}
	}
	if !commit() {
		return errNotCommitted
	}
	return f.chunk(s, len(s.data), true)
}

func (f *bdatFraming) chunk(s *bodySender, n int, last bool) error {
	h := append(f.hdr[:0], "BDAT "...)
	h = strconv.AppendInt(h, int64(n), 10)
	if last {
		h = append(h, " LAST"...)
	}
	f.hdr = append(h, "\r\n"...)
	if err := s.write(f.hdr, n); err != nil {
		return err
	}
	f.chunks++
	return nil
}
