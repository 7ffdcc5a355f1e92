package deliver_test

import (
	"context"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
	"github.com/onionmx/onionmx/tor"
)

// bigBody is a message of 64 MiB.
func bigBody() io.Reader { return io.LimitReader(zeros{}, 64<<20) }

// zeros is an endless message body.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
		if i%72 == 71 {
			p[i] = '\n'
		}
	}
	return len(p), nil
}

func reply(code int, ec smtp.EnhancedCode, msg string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: ec, Message: msg}
}

// garbage writes a reply that is not SMTP before the server's own.
func garbage(c *smtp.Conn) error {
	c.Conn().Write([]byte("this is not smtp\r\n"))
	return nil
}

// outcome is what a fault must lead to.
type outcome struct {
	status string // wanted status code, or its prefix
	exit   int
	msgs   int    // messages the sink must have accepted
	text   string // wanted in the output
}

// stored is the outcome where CHUNKING sent the whole message, BDAT LAST
// included, before the reply that went missing or wrong: the server may
// have the message.
func stored(status, text string, msgs int) *outcome {
	return &outcome{status: status, exit: 75, msgs: msgs, text: text + " -- message may be sent more than once"}
}

// TestFaults drives a delivery into a failure at every step, in each mode
// (sequential, PIPELINING, PIPELINING with CHUNKING), and checks that
// Postfix would be told the right thing: the status code's class and
// detail, the exit status, and whether the sink got the message.
func TestFaults(t *testing.T) {
	type hooks func(s *smtptest.Sink) smtptest.Hooks
	delivered := &outcome{}
	cases := []struct {
		name    string
		socks   func(e *env) // changes how the proxy behaves
		hooks   hooks
		script  map[string]string // a hand-written server instead of the sink
		body    func() io.Reader  // the message, when not testBody
		timeout time.Duration     // for the whole delivery; default 20s
		status  string            // wanted status code, or its prefix
		exit    int
		msgs    int    // messages the sink must have accepted
		text    string // wanted in the output
		// chunked, when set, is the outcome with CHUNKING, where it
		// differs: MAIL, RCPT and the whole body go out before any reply
		// is read, and DATA is not sent at all.
		chunked *outcome
	}{
		// Connecting through Tor.
		{name: "proxy refused", socks: func(e *env) { e.client.Dialer = &tor.SOCKSDialer{Network: "tcp", Addr: sockstest.Closed(t)} },
			status: "4.4.1", exit: 75, text: "cannot connect to Tor SocksPort"},
		{name: "proxy is not SOCKS", socks: func(e *env) { e.client.Dialer = &tor.SOCKSDialer{Network: "tcp", Addr: e.sink.Addr} },
			status: "4.3.5", exit: 78, text: `is not a SOCKS5 server: its answer began with "2", as an SMTP server's 220 greeting does`},
		{name: "socks 01 general failure", socks: socksReply(0x01), status: "4.4.1", exit: 75, text: "(SOCKS reply 01)"},
		{name: "socks 04 host unreachable", socks: socksReply(0x04), status: "4.4.1", exit: 75, text: "host unreachable (SOCKS reply 04)"},
		{name: "socks 05 refused", socks: socksReply(0x05), status: "4.4.1", exit: 75, text: "(SOCKS reply 05)"},
		{name: "socks 06 ttl expired", socks: socksReply(0x06), status: "4.4.1", exit: 75, text: "(SOCKS reply 06)"},
		{name: "socks F0 descriptor not found", socks: socksReply(0xF0), status: "4.4.1", exit: 75, text: "onion service descriptor not found (SOCKS reply F0)"},
		{name: "socks F1 descriptor invalid", socks: socksReply(0xF1), status: "4.4.1", exit: 75, text: "(SOCKS reply F1)"},
		{name: "socks F2 introduction failed", socks: socksReply(0xF2), status: "4.4.1", exit: 75, text: "(SOCKS reply F2)"},
		{name: "socks F3 rendezvous failed", socks: socksReply(0xF3), status: "4.4.1", exit: 75, text: "(SOCKS reply F3)"},
		{name: "socks F4 client auth missing", socks: socksReply(0xF4), status: "5.7.0", exit: 77, text: "(SOCKS reply F4)"},
		{name: "socks F5 client auth wrong", socks: socksReply(0xF5), status: "5.7.0", exit: 77, text: "(SOCKS reply F5)"},
		{name: "socks F6 invalid onion", socks: socksReply(0xF6), status: "5.1.2", exit: 68, text: "(SOCKS reply F6)"},
		{name: "socks F7 introduction timed out", socks: socksReply(0xF7), status: "4.4.1", exit: 75, text: "(SOCKS reply F7)"},
		{name: "socks connect hangs", socks: func(e *env) {
			e.setConnect(func(sockstest.Request) sockstest.Response { return sockstest.Response{Hang: true} })
		}, status: "4.4.1", exit: 75, text: "timed out"},

		// The greeting.
		{name: "greeting 421", script: map[string]string{"greeting": "421 4.3.2 busy"}, status: "4.3.2", exit: 75, text: "refused to talk to me: 421 4.3.2 busy"},
		{name: "greeting 554", script: map[string]string{"greeting": "554 5.7.1 go away"}, status: "4.7.1", exit: 75, text: "refused to talk to me: 554 5.7.1 go away"},
		{name: "greeting garbage", script: map[string]string{"greeting": "hello"}, status: "4.5.0", exit: 75},
		{name: "greeting drop", script: map[string]string{"greeting": "drop"}, status: "4.4.2", exit: 75, text: "lost connection"},
		{name: "greeting hang", script: map[string]string{"greeting": "hang"}, status: "4.4.2", exit: 75, text: "timed out while receiving the initial server greeting"},

		// EHLO.
		{name: "ehlo 550", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Hello: func(*smtp.Conn) error { return reply(550, smtp.EnhancedCode{5, 7, 1}, "no") }}
		}, status: "5.7.1", exit: 69, text: "(in reply to HELO command)"}, // smtp(8) falls back to HELO, refused too
		{name: "ehlo 501, helo works", script: map[string]string{"EHLO": "501 5.5.4 syntax"}, status: "", exit: 0},
		{name: "ehlo 554, helo works", script: map[string]string{"EHLO": "554 5.7.1 no ESMTP for you"}, status: "", exit: 0},
		{name: "ehlo 451, helo works", script: map[string]string{"EHLO": "451 4.3.0 later"}, status: "", exit: 0},
		{name: "ehlo 252", script: map[string]string{"EHLO": "252 odd but fine"}, status: "", exit: 0},
		{name: "ehlo 421", script: map[string]string{"EHLO": "421 4.3.2 closing"}, status: "4.3.2", exit: 75, text: "(in reply to EHLO command)"},
		{name: "ehlo 550, helo 550", script: map[string]string{"EHLO": "550 5.7.1 no", "HELO": "550 5.7.1 no either"}, status: "5.7.1", exit: 69, text: "550 5.7.1 no either (in reply to HELO command)"},
		{name: "ehlo 421", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Hello: func(*smtp.Conn) error { return reply(421, smtp.EnhancedCode{4, 3, 0}, "later") }}
		}, status: "4.3.0", exit: 75},
		{name: "ehlo not understood, helo works", script: map[string]string{"EHLO": "502 5.5.2 what"}, status: "", exit: 0},
		{name: "ehlo drop", hooks: func(s *smtptest.Sink) smtptest.Hooks { return smtptest.Hooks{Hello: s.Drop} }, status: "4.4.2", exit: 75, text: "EHLO"},
		{name: "ehlo hang", hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Hello: func(*smtp.Conn) error { return s.Hang() }}
		}, status: "4.4.2", exit: 75, text: "timed out"},
		{name: "ehlo garbage", script: map[string]string{"EHLO": "nonsense"}, status: "4.5.0", exit: 75},

		// MAIL FROM.
		{name: "mail 451", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Mail: func(*smtp.Conn, string) error { return reply(451, smtp.EnhancedCode{4, 3, 0}, "try later") }}
		}, status: "4.3.0", exit: 75, text: "451 4.3.0 try later (in reply to MAIL FROM command)"},
		{name: "mail 553", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Mail: func(*smtp.Conn, string) error { return reply(553, smtp.EnhancedCode{5, 1, 8}, "bad sender") }}
		}, status: "5.1.8", exit: 69, text: "(in reply to MAIL FROM command)"},
		{name: "mail drop", hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Mail: func(c *smtp.Conn, _ string) error { return s.Drop(c) }}
		}, status: "4.4.2", exit: 75, text: "MAIL FROM", chunked: stored("4.4.2", "while sending MAIL FROM", 0)},
		{name: "mail hang", hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Mail: func(*smtp.Conn, string) error { return s.Hang() }}
		}, status: "4.4.2", exit: 75, text: "timed out while sending MAIL FROM", chunked: stored("4.4.2", "timed out while sending MAIL FROM", 0)},
		{name: "mail garbage", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Mail: func(c *smtp.Conn, _ string) error { return garbage(c) }}
		}, status: "4.5.0", exit: 75, chunked: stored("4.5.0", "while sending MAIL FROM", 1)},

		// RCPT TO.
		{name: "rcpt 450", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Rcpt: func(*smtp.Conn, string) error { return reply(450, smtp.EnhancedCode{4, 2, 0}, "mailbox busy") }}
		}, status: "4.2.0", exit: 75, text: "(in reply to RCPT TO command)"},
		{name: "rcpt 550", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Rcpt: func(_ *smtp.Conn, to string) error {
				return reply(550, smtp.EnhancedCode{5, 1, 1}, "<"+to+">: Recipient address rejected")
			}}
		}, status: "5.1.1", exit: 67, text: "said: 550 5.1.1 <user@recv.test>: Recipient address rejected (in reply to RCPT TO command)"},
		{name: "rcpt 550 without enhanced code", script: map[string]string{"RCPT": "550 no such user"}, status: "5.0.0", exit: 69},
		{name: "rcpt 251", script: map[string]string{"RCPT": "251 2.1.5 will forward"}, status: "", exit: 0},
		{name: "rcpt drop", hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Rcpt: func(c *smtp.Conn, _ string) error { return s.Drop(c) }}
		}, status: "4.4.2", exit: 75, text: "RCPT TO", chunked: stored("4.4.2", "while sending RCPT TO", 0)},
		{name: "rcpt hang", hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Rcpt: func(*smtp.Conn, string) error { return s.Hang() }}
		}, status: "4.4.2", exit: 75, text: "timed out while sending RCPT TO", chunked: stored("4.4.2", "timed out while sending RCPT TO", 0)},
		{name: "rcpt garbage", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Rcpt: func(c *smtp.Conn, _ string) error { return garbage(c) }}
		}, status: "4.5.0", exit: 75, chunked: stored("4.5.0", "while sending RCPT TO", 1)},

		// DATA.
		{name: "data 451", script: map[string]string{"DATA": "451 4.3.0 not now"}, status: "4.3.0", exit: 75, text: "(in reply to DATA command)", chunked: delivered},
		{name: "data 554", script: map[string]string{"DATA": "554 5.7.1 no thanks"}, status: "5.7.1", exit: 69, text: "(in reply to DATA command)", chunked: delivered},
		{name: "data drop", script: map[string]string{"DATA": "drop"}, status: "4.4.2", exit: 75, text: "DATA", chunked: delivered},
		{name: "data hang", script: map[string]string{"DATA": "hang"}, status: "4.4.2", exit: 75, text: "timed out", chunked: delivered},
		{name: "data garbage", script: map[string]string{"DATA": "~~~~"}, status: "4.5.0", exit: 75, chunked: delivered},

		// The body.
		{name: "body drop", body: bigBody, hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Body: func(c *smtp.Conn, r io.Reader) error {
				io.CopyN(io.Discard, r, 1<<20)
				return s.Drop(c)
			}}
		}, status: "4.4.2", exit: 75, text: "while sending message body"},
		{name: "body stalls", body: bigBody, hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Body: func(*smtp.Conn, io.Reader) error { return s.Hang() }}
		}, status: "4.4.2", exit: 75, text: "timed out while sending message body"},

		// The end of data: the reply decides.
		{name: "dot 451", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Data: func(*smtp.Conn, *smtptest.Message) error {
				return reply(451, smtp.EnhancedCode{4, 3, 0}, "local error")
			}}
		}, status: "4.3.0", exit: 75, text: "(in reply to end of DATA command)"},
		{name: "dot 554", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Data: func(*smtp.Conn, *smtptest.Message) error {
				return reply(554, smtp.EnhancedCode{5, 6, 0}, "content rejected")
			}}
		}, status: "5.6.0", exit: 69, text: "554 5.6.0 content rejected (in reply to end of DATA command)"},
		{name: "dot drop before reply", hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Data: func(c *smtp.Conn, _ *smtptest.Message) error { return s.Drop(c) }}
		}, status: "4.4.2", exit: 75, text: "message may be sent more than once"},
		{name: "dot hang", hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Data: func(*smtp.Conn, *smtptest.Message) error { return s.Hang() }}
		}, status: "4.4.2", exit: 75, text: "timed out while sending end of data -- message may be sent more than once"},
		{name: "dot garbage", hooks: func(*smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Data: func(c *smtp.Conn, _ *smtptest.Message) error { return garbage(c) }}
		}, status: "4.5.0", exit: 75, msgs: 1, text: "message may be sent more than once"},
		{name: "dot 251", script: map[string]string{".": "251 2.0.0 queued elsewhere"}, status: "", exit: 0},

		// After the 2xx: delivered, whatever QUIT does.
		{name: "quit hang", script: map[string]string{"QUIT": "hang"}, status: "", exit: 0},
		{name: "quit drop", script: map[string]string{"QUIT": "drop"}, status: "", exit: 0},

		// The whole delivery's deadline, with per-command timeouts far away.
		{name: "overall deadline", timeout: 500 * time.Millisecond, hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Rcpt: func(*smtp.Conn, string) error { return s.Hang() }}
		}, status: "4.4.2", exit: 75, text: "delivery deadline"},
		// The deadline finds the body being read (4.3.0) or written
		// (4.4.2), whichever the machine's load makes it: both say so.
		{name: "overall deadline in body", timeout: 500 * time.Millisecond, body: bigBody, hooks: func(s *smtptest.Sink) smtptest.Hooks {
			return smtptest.Hooks{Body: func(*smtp.Conn, io.Reader) error { return s.Hang() }}
		}, status: "4.", exit: 75, text: "delivery deadline"},
	}
	var mu sync.Mutex
	maybeTwice := map[string]int{} // per mode, the faults that ended "may be sent more than once"
	t.Cleanup(func() {
		for _, m := range modes {
			t.Logf("%s: %d of %d faults ended \"message may be sent more than once\"", m.name, maybeTwice[m.name], len(cases))
		}
	})
	for _, m := range modes {
		for _, tc := range cases {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				t.Parallel()
				want := outcome{status: tc.status, exit: tc.exit, msgs: tc.msgs, text: tc.text}
				if tc.chunked != nil && m.name == "chunking" {
					want = *tc.chunked
				}
				e := newEnv(t)
				e.hide = m.hide
				short := 1 * time.Second
				if tc.timeout != 0 {
					short = time.Minute // only the overall deadline may fire
				}
				e.client.ConnectTimeout, e.client.CommandTimeout = short, short
				e.client.BlockTimeout, e.client.DataTimeout = short, short
				if tc.socks != nil {
					tc.socks(e)
				}
				if tc.hooks != nil {
					e.sink.SetHooks(tc.hooks(e.sink))
				}
				if tc.script != nil {
					e.setConnect(scripted(t, tc.script))
				}
				var body io.Reader = strings.NewReader(testBody)
				if tc.body != nil {
					body = tc.body()
				}
				timeout := tc.timeout
				if timeout == 0 {
					timeout = 20 * time.Second
				}
				res, err := e.deliverBody(t, timeout, body)
				if err != nil && strings.Contains(err.Msg, "message may be sent more than once") {
					mu.Lock()
					maybeTwice[m.name]++
					mu.Unlock()
				}
				if want.exit == 0 {
					if err != nil {
						t.Fatalf("got %q (exit %d), want delivered", err, err.Exit())
					}
					if !strings.HasPrefix(res.Reply(), "2") {
						t.Errorf("reply %q, want 2xx", res.Reply())
					}
					return
				}
				if err == nil {
					t.Fatalf("delivered (%s), want %s", res.Reply(), want.status)
				}
				t.Logf("exit %d: %s", err.Exit(), err)
				if !strings.HasPrefix(err.Status, want.status) || err.Exit() != want.exit {
					t.Errorf("got %q exit %d, want %s exit %d", err, err.Exit(), want.status, want.exit)
				}
				if err.Temporary() != (want.exit == 75 || want.exit == 78) {
					t.Errorf("Temporary() = %v with exit %d", err.Temporary(), err.Exit())
				}
				if !strings.Contains(err.Error(), want.text) {
					t.Errorf("output %q does not contain %q", err, want.text)
				}
				// The sink records a message after it answered (or, here,
				// after it sent garbage): give it a moment to catch up.
				for deadline := time.Now().Add(2 * time.Second); len(e.sink.Messages()) < want.msgs && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
				if n := len(e.sink.Messages()); n != want.msgs {
					t.Errorf("sink accepted %d messages, want %d", n, want.msgs)
				}
			})
		}
	}
}

func socksReply(code byte) func(e *env) {
	return func(e *env) {
		e.setConnect(func(sockstest.Request) sockstest.Response { return sockstest.Response{Reply: code} })
	}
}

// TestQuitNotAwaited checks that a delivery ends right after the 2xx to the
// end of data, without waiting for the reply to QUIT.
func TestQuitNotAwaited(t *testing.T) {
	e := newEnv(t)
	e.setConnect(scripted(t, map[string]string{"QUIT": "hang"}))
	e.client.CommandTimeout = time.Hour
	done := make(chan *deliver.Error, 1)
	go func() {
		_, err := e.deliver(t, time.Hour)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("still waiting for the reply to QUIT after a minute")
	}
}

// TestReadErrorSendsNoDot checks that a message that cannot be read to its
// end is never terminated: the server must not get a truncated message.
func TestReadErrorSendsNoDot(t *testing.T) {
	e := newEnv(t)
	body := io.MultiReader(strings.NewReader("Subject: partial\r\n\r\nfirst half\r\n"), errReader{})
	_, err := e.deliverBody(t, 10*time.Second, body)
	if err == nil || !err.Temporary() {
		t.Fatalf("got %v, want a temporary failure", err)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(e.sink.Messages()); n != 0 {
		t.Fatalf("sink accepted %d messages from a partial body", n)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// TestRecipientsAllOrNothing checks that with several recipients one
// rejection stops the delivery before DATA, names every rejected
// recipient, and is temporary if any rejection was.
func TestRecipientsAllOrNothing(t *testing.T) {
	rcptHook := func(*smtptest.Sink) smtptest.Hooks {
		return smtptest.Hooks{Rcpt: func(_ *smtp.Conn, to string) error {
			switch {
			case strings.HasPrefix(to, "gone"):
				return reply(550, smtp.EnhancedCode{5, 1, 1}, "<"+to+">: unknown")
			case strings.HasPrefix(to, "full"):
				return reply(452, smtp.EnhancedCode{4, 2, 2}, "<"+to+">: mailbox full")
			}
			return nil
		}}
	}
	for _, tc := range []struct {
		rcpts  []string
		status string
		exit   int
	}{
		{[]string{"ok@recv.test", "gone@recv.test", "ok2@recv.test"}, "5.1.1", 67},
		{[]string{"gone@recv.test", "full@recv.test", "ok@recv.test"}, "4.2.2", 75},
		{[]string{"gone@recv.test", "gone2@recv.test"}, "5.1.1", 67},
	} {
		e := newEnv(t)
		e.sink.SetHooks(rcptHook(e.sink))
		_, err := e.deliver(t, 10*time.Second, tc.rcpts...)
		if err == nil || err.Status != tc.status || err.Exit() != tc.exit {
			t.Errorf("%v: got %v (exit %d), want %s exit %d", tc.rcpts, err, errExit(err), tc.status, tc.exit)
			continue
		}
		for _, r := range tc.rcpts {
			if rejected := !strings.HasPrefix(r, "ok"); rejected != strings.Contains(err.Msg, "<"+r+">") {
				t.Errorf("%v: output %q names %s: %v", tc.rcpts, err.Msg, r, !rejected)
			}
		}
		if n := len(e.sink.Messages()); n != 0 {
			t.Errorf("%v: sink accepted %d messages", tc.rcpts, n)
		}
	}
}

func errExit(e *deliver.Error) int {
	if e == nil {
		return 0
	}
	return e.Exit()
}

// TestNeverDialsClearNet checks that a route to anything but a v3 onion is
// refused before any connection: a clear-net or unusable nexthop from the
// configuration defers (4.3.5), and a recipient domain that is an unusable
// onion bounces (5.1.2), both with the reason.
func TestNeverDialsClearNet(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		nexthop, rcpt, status, text string
	}{
		{"[192.0.2.1]", "u@example.org", "4.3.5", "not a .onion name"},
		{"[mail.example.org]:25", "u@example.org", "4.3.5", "not a .onion name"},
		{"[expyuzz4wqqyqhjn.onion]", "u@example.org", "4.3.5", "v2 onion address"},
		{"mail.example.onion", "u@example.org", "4.3.5", "a v3 address has 56"},
		{"example.org:25", "u@example.org", "4.3.5", "a port goes with an onion"},
		{"", "u@expyuzz4wqqyqhjn.onion", "5.1.2", "v2 onion address"},
		{"expyuzz4wqqyqhjn.onion", "u@expyuzz4wqqyqhjn.onion", "5.1.2", "v2 onion address"},
		{"", "u@" + typo(e.onion), "5.1.2", "checksum"},
		{"", "u@mail.example.onion", "5.1.2", "a v3 address has 56"},
		{"", "u@bad_label!.onion", "5.1.2", "bad destination bad_label!.onion"},
		{"bad_label!.onion", "u@bad_label!.onion", "5.1.2", "bad destination bad_label!.onion"},
		{"[expyuzz4wqqyqhjn.onion]", "u@[expyuzz4wqqyqhjn.onion]", "5.1.2", "v2 onion address"},
		{"", "u@[expyuzz4wqqyqhjn.onion]", "5.1.2", "v2 onion address"},
		{"", "u@foo．onion", "5.1.2", "bad destination foo.onion"},
		{"foo。onion", "u@foo。onion", "5.1.2", "bad destination foo.onion"},
		{"", "u@bad_x!．onion", "5.1.2", "bad destination bad_x!．onion"},
	} {
		_, err := e.client.Deliver(context.Background(), tc.nexthop, &deliver.Message{
			Recipients: []string{tc.rcpt}, Body: strings.NewReader(testBody),
		})
		de := deliver.AsError(err)
		if err == nil || de.Status != tc.status || !strings.Contains(de.Error(), tc.text) {
			t.Errorf("nexthop %q, recipient %s: got %v, want %s with %q", tc.nexthop, tc.rcpt, err, tc.status, tc.text)
		}
	}
	if n := len(e.socks.Requests()); n != 0 {
		t.Fatalf("%d CONNECTs to the proxy, want none", n)
	}
}

// typo changes the first character of an onion name: its checksum no
// longer matches.
func typo(onion string) string {
	c := byte('a')
	if onion[0] == 'a' {
		c = 'b'
	}
	return string(c) + onion[1:]
}
