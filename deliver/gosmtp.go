package deliver

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/reply"
)

// go-smtp's client says EHLO (falling back to HELO when EHLO is answered
// 500 or 502); onionmx does the rest itself. Everything that works around
// what its client does, or does not do, is here:
//
//   - it reads the greeting itself and gives no access to it, but a
//     greeting failure must be told from an EHLO failure: we read the
//     greeting, and helloConn replays it to go-smtp;
//   - it does not return the reply to EHLO, which is checked for loops and
//     whose keywords onionmx needs: helloConn keeps what go-smtp reads,
//     helloCommand tells from it whether it fell back to HELO, and
//     ehloKeywords reads the keywords;
//   - it falls back to HELO only after 500 or 502, where Postfix's smtp(8)
//     does after any refusal but 421, and it wants 250 where any 2xx will
//     do: session.hello does the rest;
//   - net/textproto, under it, keeps a whole reply in memory and rejects a
//     reply code without text: it reads through our reply.Reader, which
//     bounds both and completes a bare code, one line per read, so that
//     nothing past the reply to EHLO is left in go-smtp's buffer;
//   - it wants exactly 250 where RFC 5321 allows any 2xx, and has neither
//     STARTTLS on an open connection, nor PIPELINING, nor a BDAT that can
//     be pipelined: onionmx says STARTTLS (session.startTLS) and runs the
//     transaction itself (transaction.go), on the same connection, through
//     the same reply.Reader, which go-smtp left empty after EHLO.
//
// go-smtp also sets and then clears the connection's deadline around each
// command; sessionConn gives every write its own deadline again.

// goSMTPHello says EHLO with go-smtp's client, and HELO when EHLO is
// refused. go-smtp falls back to HELO only after 500 or 502 and wants
// exactly 250; Postfix's smtp(8) falls back after any refusal but 421, and
// takes any 2xx: the rest is done here. It returns the replies read (for
// the loop check and the keywords) and the command that succeeded.
func (s *session) goSMTPHello() (replies []byte, cmd string, _ error) {
	client, seen := newHelloClient(s)
	err := client.Hello(s.c.Helo)
	replies = seen.Bytes()
	cmd = helloCommand(replies)
	var r *smtp.SMTPError
	switch {
	case err == nil:
	case errors.As(err, &r) && r.Code/100 == 2:
		// A 2xx other than the 250 go-smtp wants.
	case errors.As(err, &r) && cmd == "EHLO" && r.Code != 421:
		rep, err := s.command("HELO "+s.c.Helo, s.cmdWait)
		if err != nil {
			return nil, "", s.tlsFailed(s.netError("performing the HELO handshake", err))
		}
		if rep.Code/100 != 2 {
			return nil, "", replyError(s.host, smtpError(rep), "HELO")
		}
		replies = append(replies, replyBytes(rep)...)
		cmd = "HELO"
	case errors.As(err, &r):
		return nil, "", replyError(s.host, r, cmd)
	default:
		return nil, "", s.tlsFailed(s.netError("performing the EHLO handshake", err))
	}
	return replies, cmd, nil
}

// newHelloClient returns go-smtp's client on the session's connection,
// and the buffer that keeps what it reads.
func newHelloClient(s *session) (*smtp.Client, *bytes.Buffer) {
	conn := &helloConn{Conn: s.sc, greeting: replyBytes(s.greet), rr: s.rr}
	client := smtp.NewClient(conn)
	client.CommandTimeout = s.cmdWait
	return client, &conn.seen
}

// helloConn is the connection as go-smtp's client reads it: first the
// greeting, which we read ourselves, replayed; then the replies to EHLO
// and HELO from our reply.Reader (which bounds them), kept in seen.
type helloConn struct {
	net.Conn
	greeting []byte
	rr       *reply.Reader
	seen     bytes.Buffer
}

func (c *helloConn) Read(p []byte) (int, error) {
	if len(c.greeting) > 0 {
		n := copy(p, c.greeting)
		c.greeting = c.greeting[n:]
		return n, nil
	}
	n, err := c.rr.Read(p)
	if c.seen.Len() < 2*reply.MaxReply {
		c.seen.Write(p[:n])
	}
	return n, err
}

// helloCommand tells from the captured replies whether go-smtp fell back
// from EHLO to HELO (after a 500 or 502).
func helloCommand(replies []byte) string {
	if bytes.HasPrefix(replies, []byte("500")) || bytes.HasPrefix(replies, []byte("502")) {
		return "HELO"
	}
	return "EHLO"
}

// helloNames returns the first word of each 250 reply in the captured
// replies to EHLO/HELO: the name the server gives itself.
func helloNames(replies []byte) []string {
	var names []string
	first := true
	for _, line := range strings.Split(string(replies), "\n") {
		line = strings.TrimRight(line, "\r")
		if len(line) < 4 {
			continue
		}
		if first && strings.HasPrefix(line, "250") {
			name, _, _ := strings.Cut(line[4:], " ")
			names = append(names, name)
		}
		first = line[3] == ' '
	}
	return names
}

// ehloKeywords returns the EHLO keywords of the captured reply, upper
// case, with their parameters: "SIZE" -> "10240000".
func ehloKeywords(replies []byte) map[string]string {
	ext := map[string]string{}
	for i, line := range strings.Split(strings.TrimRight(string(replies), "\r\n"), "\n") {
		line = strings.TrimRight(line, "\r")
		if i == 0 || len(line) < 5 {
			continue // the server's name, or a bare code
		}
		kw, param, _ := strings.Cut(strings.TrimSpace(line[4:]), " ")
		if kw != "" {
			ext[strings.ToUpper(kw)] = param
		}
	}
	return ext
}

// replyBytes serializes a reply for replay.
func replyBytes(r *reply.Reply) []byte {
	var b bytes.Buffer
	for i, l := range r.Lines {
		sep := '-'
		if i == len(r.Lines)-1 {
			sep = ' '
		}
		fmt.Fprintf(&b, "%03d%c%s\r\n", r.Code, sep, l)
	}
	return b.Bytes()
}

// smtpError returns a reply in go-smtp's form, the enhanced status code
// parsed from the first line.
func smtpError(rep *reply.Reply) *smtp.SMTPError {
	text := rep.Text()
	r := &smtp.SMTPError{Code: rep.Code, Message: text}
	if first, rest, ok := strings.Cut(text, " "); ok {
		if ec, ok := parseEnhanced(first); ok {
			r.EnhancedCode, r.Message = ec, rest
		}
	}
	return r
}
