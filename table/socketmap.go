package table

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/onionmx/onionmx/internal/printable"
)

// MaxNetstring bounds the payload of a request netstring: 100000 bytes, the
// limit socketmap_table(5) puts on replies. Postfix's requests (a map name
// and a key) are far shorter; a longer length is junk, answered with PERM
// before the connection is closed, and never read.
const MaxNetstring = 100000

type socketmapCodec struct{}

func (socketmapCodec) bufSize() int { return 4096 }

func (socketmapCodec) readRequest(r *bufio.Reader) (string, error) {
	payload, err := readNetstring(r, MaxNetstring)
	if err != nil {
		return "", err
	}
	_, key, err := parseSocketmapRequest(payload)
	return key, err
}

// readNetstring reads one netstring, "LEN:PAYLOAD,"
// (cr.yp.to/proto/netstrings.txt), of at most max payload bytes; line ends
// before it are skipped. A malformed one is a fatal *RequestError: after
// it, nothing on the stream can be trusted. It returns io.EOF when the input
// ends before a netstring starts.
func readNetstring(r *bufio.Reader, max int) ([]byte, error) {
	n, digits := 0, 0
	for {
		c, err := r.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) && digits > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if (c == '\n' || c == '\r') && digits == 0 {
			// Not part of the protocol, but what a person testing by hand
			// ends a line with; harmless between netstrings.
			continue
		}
		if c == ':' {
			if digits == 0 {
				return nil, &RequestError{Msg: "netstring without a length", Fatal: true}
			}
			break
		}
		if c < '0' || c > '9' {
			return nil, &RequestError{Msg: fmt.Sprintf("netstring length: unexpected %q", c), Fatal: true}
		}
		digits++
		n = n*10 + int(c-'0')
		if n > max {
			return nil, &RequestError{Msg: fmt.Sprintf("netstring longer than %d bytes", max), Fatal: true}
		}
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	c, err := r.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if c != ',' {
		return nil, &RequestError{Msg: fmt.Sprintf("netstring of length %d not followed by ','", n), Fatal: true}
	}
	return payload, nil
}

// parseSocketmapRequest splits a request, "NAME KEY". The key is the rest
// of the payload after the first space: an address whose local part was
// quoted may contain spaces. Any map name is accepted: the server serves
// one table, and the name is only what main.cf put after the socket path.
func parseSocketmapRequest(payload []byte) (name, key string, err error) {
	name, key, ok := strings.Cut(string(payload), " ")
	if !ok {
		return "", "", &RequestError{Msg: `want "NAME KEY"`}
	}
	if name == "" {
		return "", "", &RequestError{Msg: "empty map name"}
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c == 0x7f {
			return "", "", &RequestError{Msg: fmt.Sprintf("map name contains control character 0x%02x", c)}
		}
	}
	return name, key, nil
}

func (socketmapCodec) writeAnswer(w *bufio.Writer, ans Answer) error {
	_, err := w.WriteString(netstring(socketmapReply(ans)))
	return err
}

// socketmapReply returns the reply payload for an answer.
func socketmapReply(ans Answer) string {
	reason := printable.Line(ans.Reason, maxReason)
	switch ans.Class {
	case Found:
		return "OK " + ans.Result
	case NotFound:
		return "NOTFOUND "
	case Temp:
		return "TEMP " + reason
	}
	return "PERM " + reason
}

func netstring(s string) string { return fmt.Sprintf("%d:%s,", len(s), s) }
