package check

import (
	"bufio"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// A broken or hostile remote: whatever it sends, the check reads it in
// bounded memory, blames the remote (not Tor) for what breaks the protocol
// or the limits, closes the connection, and keeps its output on one
// printable line per target.

// remote is a server that greets, then answers each command with
// answer(verb), written as it is; answer may also write by itself on w and
// return "" to close the connection.
type remote struct {
	greet  func(w io.Writer) error
	answer func(verb string, w io.Writer) (string, bool)

	mu   sync.Mutex
	cmds []string
}

func (s *remote) handle(c net.Conn) {
	defer c.Close()
	if s.greet != nil {
		if s.greet(c) != nil {
			return
		}
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		s.mu.Lock()
		s.cmds = append(s.cmds, line)
		s.mu.Unlock()
		verb, _, _ := strings.Cut(strings.ToUpper(line), " ")
		reply, ok := "", false
		if s.answer != nil {
			reply, ok = s.answer(verb, c)
		}
		if !ok {
			switch verb {
			case "EHLO":
				reply = "250-hostile.test\r\n250 8BITMIME\r\n"
			case "MAIL", "RSET":
				reply = "250 2.0.0 Ok\r\n"
			case "RCPT":
				reply = "554 5.7.1 <probe@onionmx-relay-test.invalid>: Relay access denied\r\n"
			case "QUIT":
				io.WriteString(c, "221 2.0.0 Bye\r\n")
				return
			default:
				reply = "502 5.5.2 no\r\n"
			}
		}
		if reply == "" {
			return
		}
		if _, err := io.WriteString(c, reply); err != nil {
			return
		}
	}
}

func (s *remote) commands() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cmds...)
}

func text(s string) func(io.Writer) error {
	return func(w io.Writer) error { _, err := io.WriteString(w, s); return err }
}

// stream writes prefix, then chunk again and again, up to n bytes in all
// (forever if n < 0), until a write fails: the client hung up.
func stream(w io.Writer, prefix string, chunk byte, n int64) error {
	if _, err := io.WriteString(w, prefix); err != nil {
		return err
	}
	buf := []byte(strings.Repeat(string(chunk), 64<<10))
	for sent := int64(len(prefix)); n < 0 || sent < n; {
		b := buf
		if n >= 0 {
			b = b[:min(int64(len(b)), n-sent)]
		}
		m, err := w.Write(b)
		sent += int64(m)
		if err != nil {
			return err
		}
	}
	return nil
}

// lines writes count lines "CODE-line NNN" and a last "CODE end", until a
// write fails.
func lines(w io.Writer, code string, count int) error {
	bw := bufio.NewWriter(w)
	for i := range count {
		if _, err := bw.WriteString(code + "-line " + strings.Repeat("x", i%50) + "\r\n"); err != nil {
			return err
		}
	}
	bw.WriteString(code + " end\r\n")
	return bw.Flush()
}

// wantPrintable fails the test unless out is valid UTF-8 made of printable
// characters, one line per target after the status line.
func wantPrintable(t *testing.T, out string, targets int) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("output is not valid UTF-8: %q", out)
	}
	if n := strings.Count(out, "\n"); n != 1+targets || !strings.HasSuffix(out, "\n") {
		t.Errorf("%d lines, want %d: %q", n, 1+targets, out)
	}
	for _, r := range strings.TrimSuffix(out, "\n") {
		if r != '\n' && !unicode.IsPrint(r) {
			t.Errorf("output has %U: %q", r, out)
			break
		}
	}
}

func TestHostileRemotes(t *testing.T) {
	long := func(n int) string { return "220 " + strings.Repeat("x", n-6) + "\r\n" }
	cases := []struct {
		name    string
		srv     *remote
		relay   bool
		timeout time.Duration
		status  Status
		outcome Outcome
		relayIs Relay
		detail  string // a regular expression the target's line must match
	}{
		{name: "greeting line of 1999 bytes", srv: &remote{greet: text(long(1999))},
			status: OK, outcome: Answered, detail: `: OK - EHLO answered in .*; greeting: 220 x{296}\.\.\.$`},
		{name: "greeting line of 2000 bytes", srv: &remote{greet: text(long(2000))},
			status: OK, outcome: Answered, detail: `: OK - EHLO answered in `},
		{name: "greeting line of 2001 bytes", srv: &remote{greet: text(long(2001))},
			status: Warning, outcome: Refused,
			detail: `: FAILED - not SMTP: the server sent a reply line longer than 2000 bytes as its greeting; connection closed$`},
		{name: "greeting line of 1 GB, no newline", srv: &remote{greet: func(w io.Writer) error { return stream(w, "220 ", 'x', 1<<30) }},
			status: Warning, outcome: Refused,
			detail: `: FAILED - not SMTP: the server sent a reply line longer than 2000 bytes as its greeting; connection closed$`},
		{name: "greeting of 300,000 lines", srv: &remote{greet: func(w io.Writer) error { return lines(w, "220", 300000) }},
			status: Warning, outcome: Refused,
			detail: `: FAILED - not SMTP: the server sent a reply longer than 65536 bytes as its greeting; connection closed; greeting: 220-line$`},
		{name: "EHLO reply of 300,000 lines", srv: &remote{greet: text("220 hostile.test ESMTP\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
			if verb == "EHLO" {
				lines(w, "250", 300000)
				return "", true
			}
			return "", false
		}}, status: Warning, outcome: Refused,
			detail: `: FAILED - not SMTP: the server sent a reply longer than 65536 bytes in reply to EHLO; connection closed; greeting: 220 hostile.test ESMTP$`},
		{name: "continuation lines with another code", srv: &remote{greet: text("220 hostile.test ESMTP\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
			if verb == "EHLO" {
				return "250-hostile.test\r\n251-x\r\n251 y\r\n", true
			}
			return "", false
		}}, status: Warning, outcome: Refused,
			detail: `: FAILED - not SMTP: the server sent a reply whose lines have different codes \(250 and 251\) in reply to EHLO; connection closed`},
		{name: "a continuation line that is not a reply line", srv: &remote{greet: text("220-hostile.test ESMTP\r\nhello\r\n220 x\r\n")},
			status: Warning, outcome: Refused,
			detail: `: FAILED - not SMTP: the server sent a line that is not an SMTP reply: "hello" as its greeting; connection closed`},
		{name: "bare codes", srv: &remote{greet: text("220\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
			switch verb {
			case "EHLO", "MAIL", "RSET":
				return "250\r\n", true
			case "RCPT":
				return "554 5.7.1 <probe@onionmx-relay-test.invalid>: Relay access denied\r\n", true
			case "QUIT":
				return "221\r\n", true
			}
			return "", false
		}}, relay: true, status: OK, outcome: Answered, relayIs: RelayRejected,
			detail: `: OK - EHLO answered in .*; greeting: 220; relay test passed: `},
		{name: "bare code EHLO, multi-line", srv: &remote{greet: text("220-\r\n220\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
			if verb == "EHLO" {
				return "250-\r\n250\r\n", true
			}
			return "", false
		}}, status: OK, outcome: Answered, detail: `: OK - EHLO answered in `},
		{name: "binary greeting", srv: &remote{greet: text("\x00\xff\xfe\x1b[31mred\u0085nel\u2028ls\u202ertl\x7f\r\n")},
			status: Warning, outcome: Refused, detail: `: FAILED - not SMTP: the server sent "`},
		{name: "binary reply text", srv: &remote{greet: text("220 \x00\xff\xfe\x1b[31mred\u0085nel\u2028ls\u202ertl\x7f|x\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
			if verb == "RCPT" {
				return "250 \x00ok\xc3\u202e\r\n", true
			}
			return "", false
		}}, relay: true, status: Critical, outcome: Answered, relayIs: RelayOpen,
			detail: `: OPEN RELAY - .*; greeting: 220 .*red.*nel.*ls.*rtl.*/x; relay test failed: RCPT TO:<probe@onionmx-relay-test.invalid> accepted: 250  ok`},
		{name: "reply line of 10 MB after MAIL", srv: &remote{greet: text("220 hostile.test ESMTP\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
			if verb == "MAIL" {
				stream(w, "250 ", 'x', 10<<20)
				return "", true
			}
			return "", false
		}}, relay: true, status: Warning, outcome: Answered, relayIs: RelayInconclusive,
			detail: `: OK - EHLO answered in .*; relay test inconclusive: not SMTP: the server sent a reply line longer than 2000 bytes in reply to MAIL FROM; connection closed$`},
		{name: "RCPT reply of 300,000 lines", srv: &remote{greet: text("220 hostile.test ESMTP\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
			if verb == "RCPT" {
				lines(w, "250", 300000)
				return "", true
			}
			return "", false
		}}, relay: true, status: Warning, outcome: Answered, relayIs: RelayInconclusive,
			detail: `: OK - .*; relay test inconclusive: not SMTP: the server sent a reply longer than 65536 bytes in reply to RCPT TO; connection closed$`},
		// bufio.Reader.ReadLine, under net/textproto, returns a line cut
		// short by the end of the connection as a whole line.
		{name: "a greeting cut short by the end of the connection", srv: &remote{greet: func(w io.Writer) error {
			io.WriteString(w, "220 hostile.test ESMTP")
			return io.EOF
		}}, status: Critical, outcome: Transit,
			detail: `: FAILED - connection lost after \d+\.\d{3}s waiting for the greeting: unexpected EOF \(the greeting never came\)$`},
		{name: "an RCPT TO accepted, cut short by the end of the connection", srv: &remote{greet: text("220 hostile.test ESMTP\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
			if verb == "RCPT" {
				io.WriteString(w, "250 2.1.5 Ok")
				return "", true
			}
			return "", false
		}}, relay: true, status: Warning, outcome: Answered, relayIs: RelayInconclusive,
			detail: `: OK - .*; relay test inconclusive: RCPT TO:<probe@onionmx-relay-test.invalid>: unexpected EOF$`},
		{name: "a greeting that never ends, slowly", timeout: 500 * time.Millisecond, srv: &remote{greet: func(w io.Writer) error {
			io.WriteString(w, "220 ")
			for {
				if _, err := w.Write([]byte("x")); err != nil {
					return err
				}
				time.Sleep(20 * time.Millisecond)
			}
		}}, status: Critical, outcome: Transit,
			detail: `: FAILED - timed out after \d+\.\d{3}s \(--timeout\) waiting for the greeting$`},
		{name: "an EHLO reply that never ends, slowly", timeout: 500 * time.Millisecond, srv: &remote{greet: text("220 hostile.test\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
			if verb != "EHLO" {
				return "", false
			}
			for {
				if _, err := io.WriteString(w, "250-x\r\n"); err != nil {
					return "", true
				}
				time.Sleep(20 * time.Millisecond)
			}
		}}, status: Critical, outcome: Transit,
			detail: `: FAILED - timed out after \d+\.\d{3}s \(--timeout\) waiting for the reply to EHLO; greeting: 220 hostile.test$`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := oniontest.New()
			socks := fakeTor(t, map[string]sockstest.Response{o: {Handle: tc.srv.handle}})
			c := checker(socks)
			c.RelayTest = tc.relay
			if tc.timeout > 0 {
				c.Timeout, c.Warn, c.Crit = tc.timeout, tc.timeout/2, tc.timeout*3/4
			}
			start := time.Now()
			r, out := run(t, c, o)
			if d := time.Since(start); d > c.Timeout+2*time.Second {
				t.Errorf("the check took %s", d)
			}
			wantPrintable(t, out, 1)
			res := r.Results[0]
			if r.Status != tc.status || res.Outcome != tc.outcome || res.Relay != tc.relayIs {
				t.Errorf("status %v, outcome %v, relay %v; want %v, %v, %v", r.Status, res.Outcome, res.Relay, tc.status, tc.outcome, tc.relayIs)
			}
			if !regexp.MustCompile(`(?m)\n` + regexp.QuoteMeta(o) + tc.detail).MatchString(out) {
				t.Errorf("no %q in:\n%s", tc.detail, out)
			}
		})
	}
}

// After a reply beyond the limits the connection is closed: no RSET, no
// QUIT.
func TestHostileRemoteClosed(t *testing.T) {
	o := oniontest.New()
	srv := &remote{greet: text("220 hostile.test ESMTP\r\n"), answer: func(verb string, w io.Writer) (string, bool) {
		if verb == "RCPT" {
			return "550 " + strings.Repeat("x", 3000) + "\r\n", true
		}
		return "", false
	}}
	socks := fakeTor(t, map[string]sockstest.Response{o: {Handle: srv.handle}})
	c := checker(socks)
	c.RelayTest = true
	r, _ := run(t, c, o)
	if r.Results[0].Relay != RelayInconclusive {
		t.Errorf("relay %v", r.Results[0].Relay)
	}
	want := []string{"EHLO checker.test", "MAIL FROM:<probe@onionmx-relay-test.invalid> BODY=8BITMIME", "RCPT TO:<probe@onionmx-relay-test.invalid>"}
	if got := srv.commands(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("commands %q, want %q", got, want)
	}
}
