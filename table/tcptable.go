package table

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/onionmx/onionmx/internal/printable"
)

// maxTCPRequest bounds a request line: "get ", a key of MaxKeyLen bytes
// %XX-encoded throughout, and the newline fit.
const maxTCPRequest = 16 << 10

// maxTCPReply bounds a reply line, newline included: tcp_table(5) allows
// 4096 characters.
const maxTCPReply = 4096

type tcpCodec struct{}

func (tcpCodec) bufSize() int { return maxTCPRequest }

func (tcpCodec) readRequest(r *bufio.Reader) (string, error) {
	line, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return "", &RequestError{Msg: fmt.Sprintf("request longer than %d bytes", maxTCPRequest), Fatal: true}
	case errors.Is(err, io.EOF):
		if len(line) > 0 {
			return "", io.ErrUnexpectedEOF
		}
		return "", io.EOF
	case err != nil:
		return "", err
	}
	return parseTCPRequest(string(line))
}

// parseTCPRequest parses one request line, "get KEY\n", KEY %XX-encoded. A
// "\r" before the newline is tolerated for people typing at the server;
// Postfix encodes a real one.
func parseTCPRequest(line string) (string, error) {
	line = strings.TrimSuffix(line, "\n")
	line = strings.TrimSuffix(line, "\r")
	cmd, arg, ok := strings.Cut(line, " ")
	if !ok || cmd != "get" {
		return "", &RequestError{Msg: fmt.Sprintf("unsupported request %q: want \"get KEY\"", printable.Line(line, 100))}
	}
	key, err := decodeTCP(arg)
	if err != nil {
		return "", &RequestError{Msg: err.Error()}
	}
	return key, nil
}

// decodeTCP decodes tcp_table(5)'s %XX encoding (hex digits in any case).
// The client encodes "%", white space and non-printable characters, so a
// raw one is an error; raw 8-bit bytes are taken as they are.
func decodeTCP(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return "", fmt.Errorf("truncated %%XX sequence at offset %d", i)
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", fmt.Errorf("bad %%XX sequence %q at offset %d", s[i:i+3], i)
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		case c <= ' ' || c == 0x7f:
			return "", fmt.Errorf("unencoded white space or control character 0x%02x", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// encodeTCP encodes s as tcp_table(5) asks: "%", white space and
// non-printable characters (8-bit bytes included) as %XX. It stops before
// the result would exceed max bytes, never inside a %XX sequence.
func encodeTCP(s string, max int) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' || c <= ' ' || c >= 0x7f {
			if b.Len()+3 > max {
				break
			}
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
			continue
		}
		if b.Len()+1 > max {
			break
		}
		b.WriteByte(c)
	}
	return b.String()
}

func (tcpCodec) writeAnswer(w *bufio.Writer, ans Answer) error {
	_, err := w.WriteString(tcpReply(ans))
	return err
}

// tcpReply returns the reply line for an answer, newline included, at most
// maxTCPReply bytes.
func tcpReply(ans Answer) string {
	code, text := "500", ans.Reason
	switch ans.Class {
	case Found:
		code, text = "200", ans.Result
	case Temp:
		code = "400"
	}
	// "NNN " and "\n" around the text.
	return code + " " + encodeTCP(printable.Line(text, maxReason*3), maxTCPReply-5) + "\n"
}
