package deliver_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

const testBody = "From: a@sender.test\r\nSubject: test\r\n\r\nHello over Tor.\r\n.leading dot\r\n"

// env is one sender (a deliver.Client) behind a fake SOCKS proxy that routes
// one onion to an in-process SMTP sink.
type env struct {
	onion  string
	sink   *smtptest.Sink
	socks  *sockstest.Server
	client *deliver.Client
	// connect, when set, overrides what the proxy does with a CONNECT.
	connect atomic.Pointer[func(sockstest.Request) sockstest.Response]
	// hide lists EHLO keywords the proxy takes out of the server's reply:
	// PIPELINING and CHUNKING, to drive the client down its other paths.
	hide []string
	done chan struct{} // closed when the test ends, before the proxy closes
}

// A mode is a way the client can run a transaction, chosen by the EHLO
// keywords it gets to see (go-smtp's server offers both).
type mode struct {
	name string
	hide []string
}

var modes = []mode{
	{"sequential", []string{"PIPELINING", "CHUNKING"}},
	{"pipelining", []string{"CHUNKING"}},
	{"chunking", nil},
}

// hideKeywords puts a relay in front of what resp would connect the client
// to, which removes the hidden keywords from the replies to EHLO.
func hideKeywords(t *testing.T, done <-chan struct{}, resp sockstest.Response, hide []string) sockstest.Response {
	if resp.Dial == "" && resp.Handle == nil {
		return resp
	}
	inner := resp
	return sockstest.Response{Handle: func(c net.Conn) {
		defer c.Close()
		var server net.Conn
		if inner.Dial != "" {
			var err error
			if server, err = net.Dial("tcp", inner.Dial); err != nil {
				t.Error(err)
				return
			}
		} else {
			var ours net.Conn
			server, ours = net.Pipe()
			go inner.Handle(ours)
		}
		defer server.Close()
		go func() {
			io.Copy(server, c)
			server.Close()
		}()
		finished := make(chan struct{})
		defer close(finished)
		go func() {
			select {
			case <-done: // a server that hangs: unblock both copies
				server.Close()
				c.Close()
			case <-finished:
			}
		}()
		// Replies, a line at a time; a multi-line reply is held until its
		// last line, so that the new last line can be marked as such.
		br := bufio.NewReader(server)
		var held []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			kw, _, _ := strings.Cut(strings.TrimSpace(line[min(4, len(line)):]), " ")
			if len(line) > 4 && slices.Contains(hide, strings.ToUpper(kw)) && len(held) > 0 {
				if line[3] == ' ' {
					last := held[len(held)-1]
					held[len(held)-1] = last[:3] + " " + last[4:]
				} else {
					continue
				}
			} else {
				held = append(held, line)
			}
			if len(line) > 3 && line[3] == '-' {
				continue
			}
			if _, err := io.WriteString(c, strings.Join(held, "")); err != nil {
				return
			}
			held = held[:0]
		}
	}}
}

// setConnect makes the proxy answer CONNECTs with f.
func (e *env) setConnect(f func(sockstest.Request) sockstest.Response) { e.connect.Store(&f) }

func newEnv(t *testing.T, configure ...func(*smtp.Server)) *env {
	t.Helper()
	e := &env{onion: oniontest.New(), sink: smtptest.New(t, configure...), done: make(chan struct{})}
	e.socks = sockstest.New(t, func(r sockstest.Request) sockstest.Response {
		resp := sockstest.Response{Reply: 0xF0}
		if f := e.connect.Load(); f != nil {
			resp = (*f)(r)
		} else if r.Host == e.onion {
			resp = sockstest.Response{Dial: e.sink.Addr}
		}
		if hide := e.hide; len(hide) > 0 {
			resp = hideKeywords(t, e.done, resp, hide)
		}
		return resp
	})
	// Runs before the proxy's own cleanup, which waits for its relays.
	t.Cleanup(func() { close(e.done) })
	e.client = &deliver.Client{
		Dialer:         &tor.SOCKSDialer{Network: "tcp", Addr: e.socks.Addr},
		Resolver:       &lookup.Resolver{},
		Helo:           "sender.test",
		ConnectTimeout: 5 * time.Second,
		CommandTimeout: 5 * time.Second,
		BlockTimeout:   5 * time.Second,
		DataTimeout:    5 * time.Second,
	}
	return e
}

func (e *env) deliver(t *testing.T, timeout time.Duration, rcpts ...string) (*deliver.Result, *deliver.Error) {
	t.Helper()
	return e.deliverBody(t, timeout, strings.NewReader(testBody), rcpts...)
}

func (e *env) deliverBody(t *testing.T, timeout time.Duration, body io.Reader, rcpts ...string) (*deliver.Result, *deliver.Error) {
	t.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{"user@recv.test"}
	}
	e.client.Timeout = timeout
	res, err := e.client.Deliver(context.Background(), "["+e.onion+"]:25", &deliver.Message{
		Sender:     "a@sender.test",
		Recipients: rcpts,
		Body:       body,
	})
	if err != nil {
		var de *deliver.Error
		if !errors.As(err, &de) {
			t.Fatalf("Deliver returned %T %v, want *deliver.Error", err, err)
		}
		if !strings.HasPrefix(de.Error(), de.Status+" ") {
			t.Fatalf("output %q does not start with its status %s", de.Error(), de.Status)
		}
		if res != nil {
			t.Fatalf("Deliver returned a result and an error")
		}
		return nil, de
	}
	return res, nil
}

func TestDeliverOK(t *testing.T) {
	e := newEnv(t, func(s *smtp.Server) {
		s.EnableSMTPUTF8 = true
		s.MaxMessageBytes = 1 << 20
	})
	res, err := e.deliver(t, 10*time.Second, "user@recv.test")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Reply(), "250 ") {
		t.Errorf("reply %q, want the remote's 250", res.Reply())
	}
	msgs := e.sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("sink has %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "a@sender.test" || len(m.To) != 1 || m.To[0] != "user@recv.test" {
		t.Errorf("envelope %q -> %q", m.From, m.To)
	}
	if string(m.Data) != testBody {
		t.Errorf("body %q, want %q (dot-stuffing must be undone by the server)", m.Data, testBody)
	}
	if m.Helo != "sender.test" {
		t.Errorf("EHLO %q, want sender.test", m.Helo)
	}
	if m.Opts.Body != smtp.Body8BitMIME {
		t.Errorf("BODY=%q, want 8BITMIME when offered", m.Opts.Body)
	}
	reqs := e.socks.Requests()
	if len(reqs) != 1 || reqs[0].Host != e.onion || reqs[0].Port != 25 || reqs[0].ATYP != 3 {
		t.Fatalf("SOCKS requests %+v, want one CONNECT to %s:25 by name", reqs, e.onion)
	}
}

func TestDeliverBareLF(t *testing.T) {
	// Postfix's pipe(8) hands over the message with LF line endings.
	e := newEnv(t)
	if _, err := e.deliverBody(t, 10*time.Second, strings.NewReader("Subject: x\n\n.\n..two\nend\n")); err != nil {
		t.Fatal(err)
	}
	got := string(e.sink.Messages()[0].Data)
	if want := "Subject: x\r\n\r\n.\r\n..two\r\nend\r\n"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
}

func TestDeliverSize(t *testing.T) {
	e := newEnv(t, func(s *smtp.Server) { s.MaxMessageBytes = 100 })
	ctx := context.Background()
	_, err := e.client.Deliver(ctx, "["+e.onion+"]", &deliver.Message{
		Sender: "a@sender.test", Recipients: []string{"u@recv.test"}, Size: 5000, Body: strings.NewReader(testBody),
	})
	var de *deliver.Error
	if !errors.As(err, &de) || de.Status != "5.3.4" || de.Temporary() {
		t.Fatalf("got %v, want 5.3.4 over the server's SIZE", err)
	}
	if n := len(e.sink.Messages()); n != 0 {
		t.Errorf("sink has %d messages", n)
	}

	e = newEnv(t, func(s *smtp.Server) { s.MaxMessageBytes = 1 << 20 })
	if _, err := e.client.Deliver(ctx, "["+e.onion+"]", &deliver.Message{
		Sender: "a@sender.test", Recipients: []string{"u@recv.test"}, Size: 90, Body: strings.NewReader(testBody),
	}); err != nil {
		t.Fatal(err)
	}
	if m := e.sink.Messages(); len(m) != 1 || m[0].Opts.Size != 90 {
		t.Errorf("messages %+v, want one with MAIL SIZE=90", m)
	}
}

func TestDeliverSMTPUTF8(t *testing.T) {
	e := newEnv(t)
	_, err := e.deliver(t, 10*time.Second, "jörg@recv.test")
	if err == nil || err.Status != "5.6.7" {
		t.Fatalf("got %v, want 5.6.7 when SMTPUTF8 is needed and not offered", err)
	}
	e = newEnv(t, func(s *smtp.Server) { s.EnableSMTPUTF8 = true })
	if _, err := e.deliver(t, 10*time.Second, "jörg@recv.test"); err != nil {
		t.Fatal(err)
	}
	if m := e.sink.Messages(); len(m) != 1 || !m[0].Opts.UTF8 {
		t.Fatalf("messages %+v, want one sent with SMTPUTF8", m)
	}
}

func TestDeliverNullSender(t *testing.T) {
	e := newEnv(t)
	_, err := e.client.Deliver(context.Background(), "["+e.onion+"]", &deliver.Message{
		Recipients: []string{"u@recv.test"}, Body: strings.NewReader(testBody),
	})
	if err != nil {
		t.Fatal(err)
	}
	if m := e.sink.Messages(); len(m) != 1 || m[0].From != "" {
		t.Fatalf("messages %+v, want one with MAIL FROM:<>", m)
	}
}

func TestIsolationCredentials(t *testing.T) {
	e := newEnv(t)
	other := oniontest.New()
	for range 2 {
		e.deliver(t, 10*time.Second)
	}
	e.client.Deliver(context.Background(), "["+other+"]:2525", &deliver.Message{
		Recipients: []string{"u@x.test"}, Body: strings.NewReader(testBody),
	})
	reqs := e.socks.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d CONNECTs, want 3", len(reqs))
	}
	if reqs[0].User == "" || reqs[0].Password == "" {
		t.Fatalf("no SOCKS credentials: Tor's IsolateSOCKSAuth needs them")
	}
	if reqs[0] != reqs[1] {
		t.Errorf("same destination got different credentials: %+v vs %+v", reqs[0], reqs[1])
	}
	if reqs[2].User == reqs[0].User && reqs[2].Password == reqs[0].Password {
		t.Errorf("different destinations share credentials (and so a circuit)")
	}
}

func TestLoopDetection(t *testing.T) {
	t.Run("greeting only", func(t *testing.T) {
		// smtp(8) only warns about a greeting with its own name: the reply
		// to EHLO decides, and go-smtp's server does not name itself there.
		e := newEnv(t, func(s *smtp.Server) { s.Domain = "SENDER.test" })
		if _, err := e.deliver(t, 10*time.Second); err != nil {
			t.Fatalf("got %v, want delivered", err)
		}
	})
	t.Run("ehlo", func(t *testing.T) {
		e := newEnv(t)
		e.setConnect(scripted(t, map[string]string{"EHLO": "250-sender.test hello\r\n250 8BITMIME"}))
		_, err := e.deliver(t, 10*time.Second)
		if err == nil || err.Status != "5.4.6" {
			t.Fatalf("got %v, want 5.4.6 mail loop", err)
		}
	})
}

// scripted returns a proxy behaviour that connects to a hand-written SMTP
// server: it greets with script["greeting"] (default 220) and answers each
// command verb (EHLO, MAIL, RCPT, DATA, ".", QUIT) with script[verb] or a
// default 2xx/354. A reply "hang" never answers, "drop" closes.
func scripted(t *testing.T, script map[string]string) func(sockstest.Request) sockstest.Response {
	defaults := map[string]string{
		"greeting": "220 scripted.test ESMTP",
		"EHLO":     "250-scripted.test\r\n250-8BITMIME\r\n250-PIPELINING\r\n250 CHUNKING",
		"HELO":     "250 scripted.test",
		"MAIL":     "250 2.1.0 Ok",
		"RCPT":     "250 2.1.5 Ok",
		"DATA":     "354 End data with <CR><LF>.<CR><LF>",
		".":        "250 2.0.0 Ok: queued as SCRIPTED",
		"BDAT":     "250 2.0.0 chunk received",
		"QUIT":     "221 2.0.0 Bye",
		"RSET":     "250 2.0.0 Ok",
	}
	reply := func(c net.Conn, verb string) bool {
		r, ok := script[verb]
		if !ok {
			r = defaults[verb]
		}
		switch r {
		case "hang":
			io.Copy(io.Discard, c)
			return false
		case "drop", "":
			return false
		}
		_, err := fmt.Fprintf(c, "%s\r\n", r)
		return err == nil
	}
	return func(sockstest.Request) sockstest.Response {
		return sockstest.Response{Handle: func(c net.Conn) {
			defer c.Close()
			if !reply(c, "greeting") {
				return
			}
			br := bufio.NewReader(c)
			inData := false
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				line = strings.TrimRight(line, "\r\n")
				verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
				if inData {
					if line != "." {
						continue
					}
					inData, verb = false, "."
				}
				if i := strings.IndexByte(verb, ':'); i >= 0 {
					verb = verb[:i]
				}
				if verb == "BDAT" {
					// "BDAT n [LAST]": n octets follow; the reply to the
					// last chunk is that to the end of data.
					var n int64
					var last string
					fmt.Sscanf(line, "BDAT %d %s", &n, &last)
					if _, err := io.CopyN(io.Discard, br, n); err != nil {
						return
					}
					if last == "LAST" {
						verb = "."
					}
				}
				if !reply(c, verb) {
					return
				}
				if verb == "DATA" && strings.HasPrefix(script["DATA"]+defaults["DATA"], "354") {
					inData = true
				}
			}
		}}
	}
}

func TestSTARTTLS(t *testing.T) {
	withTLS := func(t *testing.T) func(*smtp.Server) {
		cfg := smtptest.SelfSignedTLS(t)
		return func(s *smtp.Server) { s.TLSConfig = cfg }
	}
	for _, tc := range []struct {
		name    string
		offered bool
		mode    deliver.TLSMode
		status  string // "" delivered
		tls     bool
	}{
		{"none, offered", true, deliver.TLSNone, "", false},
		{"may, offered", true, deliver.TLSMay, "", true},
		{"may, not offered", false, deliver.TLSMay, "", false},
		{"require, offered", true, deliver.TLSRequire, "", true},
		{"require, not offered", false, deliver.TLSRequire, "4.7.4", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e *env
			if tc.offered {
				e = newEnv(t, withTLS(t))
			} else {
				e = newEnv(t)
			}
			e.client.TLS = tc.mode
			_, err := e.deliver(t, 10*time.Second)
			if tc.status != "" {
				if err == nil || err.Status != tc.status || !err.Temporary() {
					t.Fatalf("got %v, want %s", err, tc.status)
				}
				if n := len(e.sink.Messages()); n != 0 {
					t.Fatalf("sink accepted %d messages", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := e.sink.Messages()
			if len(m) != 1 || m[0].TLS != tc.tls || m[0].Helo != "sender.test" {
				t.Fatalf("messages %+v, want one with TLS=%v", m, tc.tls)
			}
			if string(m[0].Data) != testBody {
				t.Fatalf("body %q", m[0].Data)
			}
		})
	}
}
