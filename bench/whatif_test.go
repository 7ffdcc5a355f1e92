package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/textproto"
	"strings"
)

// pipelinedSend sends one message as a client with RFC 2920 PIPELINING
// would: after EHLO, MAIL, RCPT and DATA go in one batch and their replies
// are read together; then the body and the end of data. With chunking
// (RFC 3030 CHUNKING as well), MAIL, RCPT and "BDAT n LAST" with the body
// go in one batch, and the end of data needs no round trip of its own.
//
// It is a measuring stick for what go-smtp's client, which waits for every
// reply, costs in round trips; not a client to deliver mail with: it has no
// deadlines, no error classification, no loop check.
func pipelinedSend(conn net.Conn, from, to string, body []byte, chunking bool) error {
	tp := textproto.NewReader(bufio.NewReader(conn))
	bw := bufio.NewWriter(conn)
	expect := func(what string, code int) (string, error) {
		_, msg, err := tp.ReadResponse(code)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		return msg, nil
	}
	if _, err := expect("greeting", 220); err != nil {
		return err
	}
	fmt.Fprintf(bw, "EHLO %s\r\n", helo)
	if err := bw.Flush(); err != nil {
		return err
	}
	ext, err := expect("EHLO", 250)
	if err != nil {
		return err
	}
	offered := func(kw string) bool {
		for _, l := range strings.Split(ext, "\n")[1:] {
			if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], kw) {
				return true
			}
		}
		return false
	}
	if !offered("PIPELINING") || chunking && !offered("CHUNKING") {
		return fmt.Errorf("server does not offer PIPELINING/CHUNKING: %q", ext)
	}
	fmt.Fprintf(bw, "MAIL FROM:<%s> BODY=8BITMIME SIZE=%d\r\nRCPT TO:<%s>\r\n", from, len(body), to)
	if chunking {
		// BDAT carries the bytes as they are: the client makes the line
		// ends CRLF itself, and there is no dot-stuffing.
		crlf := bytes.ReplaceAll(body, []byte("\n"), []byte("\r\n"))
		fmt.Fprintf(bw, "BDAT %d LAST\r\n", len(crlf))
		bw.Write(crlf)
	} else {
		bw.WriteString("DATA\r\n")
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if _, err := expect("MAIL FROM", 250); err != nil {
		return err
	}
	if _, err := expect("RCPT TO", 250); err != nil {
		return err
	}
	if chunking {
		if _, err := expect("BDAT LAST", 250); err != nil {
			return err
		}
	} else {
		if _, err := expect("DATA", 354); err != nil {
			return err
		}
		dw := textproto.NewWriter(bw).DotWriter()
		dw.Write(body)
		if err := dw.Close(); err != nil { // writes "." and flushes
			return err
		}
		if _, err := expect("end of data", 250); err != nil {
			return err
		}
	}
	bw.WriteString("QUIT\r\n")
	return bw.Flush()
}
