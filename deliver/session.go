package deliver

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/onionmx/onionmx/internal/printable"
	"github.com/onionmx/onionmx/internal/reply"
	"github.com/onionmx/onionmx/internal/timeout"
	"github.com/onionmx/onionmx/lookup"
)

// quitTimeout bounds the write of QUIT; its reply is never awaited.
const quitTimeout = 5 * time.Second

// session is one SMTP session with one target: steps 2 to 8 of the
// package doc, one method each.
type session struct {
	c *Client
	// soft ends at the deadline or when the delivery is interrupted;
	// hard only at the deadline; stop is the caller's context, whose
	// cancellation is the interruption.
	soft, hard, stop context.Context
	domain           string
	target           lookup.Target
	host             string // "x.onion[25]", as Postfix names hosts
	tls              TLSMode

	// best is set for the first target of the route: a mail loop there
	// is permanent, elsewhere the next target is tried (as smtp(8) does
	// for the best MX and the others).
	best bool

	raw      net.Conn
	sc       *sessionConn  // the connection in use: raw, or TLS over raw
	overTLS  bool          // sc is a TLS connection
	rr       *reply.Reader // the replies that arrive on sc
	greet    *reply.Reply
	ext      map[string]string // the EHLO keywords, upper case, and their parameters; nil after HELO
	guard    commitGuard
	cmdWait  time.Duration
	dataWait time.Duration
}

// session runs one SMTP session with target t. Whether a failure may try
// the next target, or this one again without TLS, Deliver decides.
func (c *Client) session(soft, hard, stop context.Context, domain string, t lookup.Target, best bool, mode TLSMode, msg *Message) (*Result, error) {
	// Never dial anything but a v3 onion through Tor, whatever the caller
	// resolved: a clear-net name would leave through an exit relay.
	if err := lookup.CheckOnion(t.Host); err != nil {
		return nil, Internal(fmt.Errorf("refusing to dial %s: %v", t.Host, err))
	}
	s := &session{
		c: c, soft: soft, hard: hard, stop: stop,
		domain: domain, target: t, tls: mode, best: best,
		host:     fmt.Sprintf("%s[%d]", t.Host, t.Port),
		cmdWait:  cmp.Or(c.CommandTimeout, DefaultCommandTimeout),
		dataWait: cmp.Or(c.DataTimeout, DefaultDataTimeout),
	}
	if err := s.connect(); err != nil {
		return nil, err
	}
	defer s.raw.Close()
	// The deadline closes the connection whatever is going on; an
	// interruption only until the final dot is on its way.
	defer context.AfterFunc(hard, func() { s.raw.Close() })()
	defer context.AfterFunc(stop, func() {
		if s.guard.abort() {
			s.raw.Close()
		}
	})()

	if err := s.greeting(); err != nil {
		return nil, err
	}
	if err := s.hello(); err != nil {
		return nil, err
	}
	return s.transaction(msg)
}

// Step 2: connect through Tor.
func (s *session) connect() error {
	dctx, cancel := context.WithTimeout(s.soft, cmp.Or(s.c.ConnectTimeout, DefaultConnectTimeout))
	defer cancel()
	raw, err := s.c.Dialer.DialContext(dctx, "tcp", s.target.Addr())
	if err != nil {
		if s.stop.Err() != nil {
			return interrupted(s.stop, "connecting to "+s.target.Addr())
		}
		return dialError(fmtStringer(s.c.Dialer), s.target.Addr(), err, s.soft.Err())
	}
	s.raw = raw
	s.sc = &sessionConn{Conn: raw, writeTimeout: cmp.Or(s.c.BlockTimeout, DefaultBlockTimeout), log: s.c.Transcript}
	s.rr = reply.NewReader(s.sc)
	return nil
}

// Step 3: the greeting.
func (s *session) greeting() error {
	const phase = "receiving the initial server greeting"
	rep, err := s.readReply(s.cmdWait)
	if err != nil {
		return s.netError(phase, err)
	}
	if rep.Code != 220 {
		// Postfix's smtp_skip_5xx_greeting: a 5xx greeting is as good as a
		// 4xx one, and the next server is tried.
		r := smtpError(rep)
		return &Error{Status: replyStatus(r, 4), Reply: r, Err: r,
			Msg: fmt.Sprintf("host %s refused to talk to me: %s", s.host, replyText(r))}
	}
	// A greeting that names us is not yet a loop (smtp(8) only warns):
	// the name in the reply to EHLO decides.
	s.greet = rep
	return nil
}

// Step 4: EHLO or HELO, after STARTTLS when asked for (go-smtp's client,
// completed in gosmtp.go). The names the server gives itself are checked
// for a mail loop.
func (s *session) hello() error {
	if s.tls != TLSNone {
		if err := s.startTLS(); err != nil {
			return err
		}
	}
	replies, cmd, err := s.goSMTPHello()
	if err != nil {
		return err
	}
	for _, name := range helloNames(replies) {
		if err := s.checkLoop(name); err != nil {
			return err
		}
	}
	if cmd == "EHLO" {
		s.ext = ehloKeywords(replies)
	}
	return nil
}

// startTLS says EHLO and STARTTLS itself, before go-smtp takes over: its
// client has no STARTTLS on an open connection. It returns nil when TLS is
// optional and not to be had on this connection; go-smtp then says EHLO
// again, which RFC 5321 allows, and falls back to HELO if need be.
func (s *session) startTLS() error {
	rep, err := s.command("EHLO "+s.c.Helo, s.cmdWait)
	if err != nil {
		return s.netError("performing the EHLO handshake", err)
	}
	if rep.Code != 250 {
		r := smtpError(rep)
		switch {
		case s.tls == TLSRequire:
			return fail("4.7.4", r, "TLS is required, but host %s rejected EHLO: %s", s.host, replyText(r))
		case rep.Code/100 == 5:
			// No ESMTP, so no STARTTLS: plaintext, as with --tls none.
			return nil
		}
		return replyError(s.host, r, "EHLO")
	}
	if err := s.checkLoop(rep.Lines[0]); err != nil {
		return err
	}
	offered := false
	for _, line := range rep.Lines[1:] {
		if strings.EqualFold(strings.TrimSpace(line), "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		if s.tls == TLSRequire {
			return s.quit(fail("4.7.4", nil, "TLS is required, but was not offered by host %s", s.host))
		}
		return nil
	}
	rep, err = s.command("STARTTLS", s.cmdWait)
	if err != nil {
		return s.netError("sending STARTTLS", err)
	}
	if rep.Code != 220 {
		r := smtpError(rep)
		switch {
		case s.tls == TLSRequire:
			return s.quit(fail("4.7.4", r, "TLS is required, but host %s refused to start TLS: %s", s.host, replyText(r)))
		case rep.Code == 421:
			// The server is closing the connection.
			return replyError(s.host, r, "STARTTLS")
		}
		// Opportunistic: go on in plaintext on this connection.
		return nil
	}
	return s.handshake()
}

// handshake runs the TLS handshake after the server's 220 to STARTTLS,
// and puts the session over TLS.
func (s *session) handshake() error {
	if s.rr.Buffered() > 0 {
		// Bytes after the 220 would be read as if they came over TLS
		// (the STARTTLS injection of CVE-2011-0411): TLS failed.
		return s.noTLS(fail("4.5.0", nil, "host %s sent data after its reply to STARTTLS", s.host))
	}
	tconn := tls.Client(s.raw, &tls.Config{
		ServerName: s.target.Host,
		// The onion address authenticates the server; a certificate that
		// matches a .onion name is rare, so it is not verified.
		InsecureSkipVerify: true,
	})
	hctx, cancel := context.WithTimeout(s.soft, s.cmdWait)
	defer cancel()
	if err := tconn.HandshakeContext(hctx); err != nil {
		if s.guard.aborted() || s.stop.Err() != nil {
			return interrupted(s.stop, "starting TLS")
		}
		return s.noTLS(fail("4.7.5", err, "TLS handshake with host %s failed: %v", s.host, err))
	}
	s.sc = &sessionConn{Conn: tconn, writeTimeout: s.sc.writeTimeout, log: s.c.Transcript}
	s.rr = reply.NewReader(s.sc)
	s.overTLS = true
	return nil
}

// noTLS is a failure of TLS itself (STARTTLS's aftermath, the handshake,
// the connection over TLS). Marked so, Deliver tries the target again in
// plaintext when TLS is "may": TLS must never fail a delivery that
// --tls none makes.
func (s *session) noTLS(e *Error) *Error {
	e.tlsFailed = true
	return e
}

// tlsFailed is a failure of the connection before the body: over TLS, a
// failure of TLS.
func (s *session) tlsFailed(e *Error) *Error {
	if s.overTLS {
		return s.noTLS(e)
	}
	return e
}

// Step 8, and after a refusal: QUIT, without waiting for the reply. It
// returns e.
func (s *session) quit(e *Error) *Error {
	s.sc.writeWithin([]byte("QUIT\r\n"), quitTimeout)
	return e
}

// command sends one command line and reads its reply.
func (s *session) command(line string, wait time.Duration) (*reply.Reply, error) {
	if _, err := s.sc.Write([]byte(line + "\r\n")); err != nil {
		return nil, err
	}
	return s.readReply(wait)
}

// readReply reads one reply, waiting at most wait.
func (s *session) readReply(wait time.Duration) (*reply.Reply, error) {
	s.sc.SetReadDeadline(time.Now().Add(wait))
	defer s.sc.SetReadDeadline(time.Time{})
	return s.rr.ReadReply()
}

// unexpected is the failure for a reply to cmd that is not a success: the
// remote's refusal, or a reply that does not belong there (a 3xx to MAIL,
// a 2xx to DATA), which is a protocol error.
func (s *session) unexpected(rep *reply.Reply, cmd string) *Error {
	r := smtpError(rep)
	if c := rep.Code / 100; c == 4 || c == 5 {
		return replyError(s.host, r, cmd)
	}
	return fail("4.5.0", r, "host %s sent an unexpected reply to %s: %s", s.host, cmd, replyText(r))
}

// checkLoop reports a mail loop when the reply to EHLO or HELO names us,
// as Postfix's smtp(8) does: permanent at the first target of the route,
// as at the best MX; elsewhere temporary, and the next target is tried.
func (s *session) checkLoop(text string) error {
	name, _, _ := strings.Cut(text, " ")
	name, _, _ = strings.Cut(name, "\n")
	if helo := s.c.Helo; helo == "" || !strings.EqualFold(strings.TrimSuffix(name, "."), strings.TrimSuffix(helo, ".")) {
		return nil
	}
	if s.best {
		return fail("5.4.6", nil, "mail for %s loops back to myself", s.domain)
	}
	return s.quit(fail("4.4.6", nil, "mail for %s loops back to myself", s.domain))
}

// netError classifies a failure of the connection while in phase, in
// Postfix's words. All of them are temporary.
func (s *session) netError(phase string, err error) *Error {
	var rerr *reply.Error
	var perr textproto.ProtocolError
	switch {
	case s.guard.aborted():
		return interrupted(s.stop, phase)
	case s.hard.Err() != nil:
		return fail("4.4.2", err, "conversation with host %s timed out while %s (delivery deadline)", s.host, phase)
	case timeout.Is(err):
		return fail("4.4.2", err, "conversation with host %s timed out while %s", s.host, phase)
	case errors.As(err, &rerr):
		return fail("4.5.0", err, "host %s sent a malformed reply while %s: %s", s.host, phase, rerr.Msg)
	case errors.As(err, &perr):
		return fail("4.5.0", err, "host %s sent a malformed reply while %s: %s", s.host, phase, printable.Line(string(perr), 200))
	}
	return fail("4.4.2", err, "lost connection with host %s while %s", s.host, phase)
}

// commitGuard decides, once, between the final dot and an interruption.
type commitGuard struct {
	mu         sync.Mutex
	committed  bool // the final dot is on its way
	wasAborted bool // the delivery was interrupted before that
}

// commit reports whether the final dot may be sent: false once aborted.
func (g *commitGuard) commit() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.wasAborted {
		return false
	}
	g.committed = true
	return true
}

// abort reports whether the delivery may still be abandoned: false once
// the final dot is on its way.
func (g *commitGuard) abort() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.committed {
		return false
	}
	g.wasAborted = true
	return true
}

func (g *commitGuard) aborted() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.wasAborted
}

// fmtStringer names the dialer in messages ("127.0.0.1:9050").
func fmtStringer(d Dialer) fmt.Stringer {
	if s, ok := d.(fmt.Stringer); ok {
		return s
	}
	return stringer("the SOCKS proxy")
}

type stringer string

func (s stringer) String() string { return string(s) }
