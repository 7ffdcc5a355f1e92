// Package deliver delivers one message to an onion MX through Tor, for
// Postfix's pipe(8): the message comes from stdin, and the outcome is an
// *Error whose enhanced status code and exit status tell Postfix to defer or
// to bounce, or a 2xx reply from the remote.
//
// A delivery goes through these steps, in order:
//
//  1. Resolve the nexthop, or without one the recipients' domain, to onion
//     targets (package lookup). No usable route is a permanent 5.4.4; an
//     unknown answer (DNS SERVFAIL, timeout) a temporary 4.4.3.
//  2. For each target in turn: connect through Tor's SocksPort, the onion
//     name unresolved, with SOCKS credentials derived from the target so
//     that Tor isolates circuits per destination and reuses them.
//  3. Read the greeting. A 4xx or 5xx greeting is temporary, as with
//     Postfix's smtp_skip_5xx_greeting; a greeting that names our own EHLO
//     name is a mail loop (5.4.6).
//  4. EHLO, or HELO when EHLO is not understood; with TLS "may" or
//     "require", STARTTLS first. The reply to EHLO is checked for loops too.
//     A temporary failure up to here tries the next target; the message has
//     not been touched yet.
//  5. Check the server's SIZE limit and, when an address needs it, SMTPUTF8.
//  6. MAIL FROM (with SIZE and BODY=8BITMIME when offered), then RCPT TO for
//     every recipient. pipe(8) takes one status for all recipients, so it is
//     all or nothing: if any recipient is rejected, no DATA is sent.
//  7. DATA, the body streamed from the reader in constant memory, the end of
//     data. A 2xx reply to it is a delivery; a lost connection before the
//     reply is temporary ("message may be sent more than once").
//  8. QUIT, without waiting for the reply: nothing after the 2xx can turn a
//     delivery into a failure.
//
// Every network step has a deadline, and the context given to Deliver bounds
// the whole delivery by closing the connection when it expires: go-smtp
// clears its deadlines after each command and sets none while the body is
// written.
package deliver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/lookup"
)

// Timeouts, from RFC 5321 section 4.5.3.2 unless noted.
const (
	// DefaultConnectTimeout bounds the SOCKS connect, which includes Tor
	// fetching the onion service's descriptor and building the rendezvous:
	// Tor's own SocksTimeout is 2 minutes.
	DefaultConnectTimeout = 2 * time.Minute
	// DefaultCommandTimeout bounds the wait for the greeting and for the
	// reply to each command (RFC 5321: 5 minutes for greeting, MAIL, RCPT).
	DefaultCommandTimeout = 5 * time.Minute
	// DefaultBlockTimeout bounds each write of the body (RFC 5321: 3
	// minutes per data block).
	DefaultBlockTimeout = 3 * time.Minute
	// DefaultDataTimeout bounds the wait for the reply to the end of data
	// (RFC 5321: 10 minutes for DATA termination).
	DefaultDataTimeout = 10 * time.Minute
)

// TLSMode says whether to use STARTTLS. The onion service already
// authenticates the server and encrypts the stream, so the default is none.
type TLSMode int

const (
	TLSNone    TLSMode = iota // never STARTTLS
	TLSMay                    // STARTTLS when offered; the certificate is not verified
	TLSRequire                // defer if STARTTLS is not offered
)

// ParseTLSMode parses the --tls flag.
func ParseTLSMode(s string) (TLSMode, error) {
	switch s {
	case "", "none":
		return TLSNone, nil
	case "may":
		return TLSMay, nil
	case "require":
		return TLSRequire, nil
	}
	return 0, fmt.Errorf("--tls %q: want none, may or require", s)
}

// Client delivers messages. Its zero timeouts mean the defaults above.
type Client struct {
	Dialer   Dialer
	Resolver *lookup.Resolver
	// Helo is the name to send in EHLO; a server that greets with it is a
	// mail loop.
	Helo string
	TLS  TLSMode

	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	BlockTimeout   time.Duration
	DataTimeout    time.Duration

	// Transcript, when set, receives the SMTP dialogue (without the body).
	Transcript io.Writer
}

// Message is what Postfix hands to the transport.
type Message struct {
	Sender     string // "" is the null sender
	Recipients []string
	Size       int64 // Postfix's ${size}, or 0 when unknown
	Body       io.Reader
}

// Result is a successful delivery.
type Result struct {
	Target lookup.Target
	// Reply is the remote's reply to the end of data, on one line.
	Reply string
}

// Deliver delivers msg to the onion route of nexthop (Postfix's ${nexthop};
// empty means the recipients' domain). It returns an *Error on failure.
func (c *Client) Deliver(ctx context.Context, nexthop string, msg *Message) (*Result, error) {
	nh, err := c.nexthop(nexthop, msg.Recipients)
	if err != nil {
		return nil, ConfigError(err)
	}
	route, err := c.Resolver.Resolve(ctx, nh)
	if err != nil {
		return nil, routeError(err)
	}
	var last *Error
	for _, t := range route.Targets {
		res, err := c.session(ctx, route.Domain, t, msg)
		if err == nil {
			return res, nil
		}
		last = AsError(err)
		if !last.next || ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// nexthop returns the parsed nexthop, or the recipients' domain when it is
// empty; the recipients of one delivery must then share their domain.
func (c *Client) nexthop(s string, rcpts []string) (lookup.Nexthop, error) {
	if s != "" {
		return lookup.ParseNexthop(s)
	}
	var domain string
	for _, r := range rcpts {
		d, err := lookup.AddressDomain(r)
		if err != nil {
			return lookup.Nexthop{}, err
		}
		if domain != "" && d != domain {
			return lookup.Nexthop{}, fmt.Errorf("recipients in %s and %s: without --nexthop they must share one domain", domain, d)
		}
		domain = d
	}
	if domain == "" {
		return lookup.Nexthop{}, errors.New("no recipients")
	}
	return lookup.Nexthop{Host: domain}, nil
}

// routeError turns a lookup failure into the outcome Postfix needs.
func routeError(err error) *Error {
	var le *lookup.Error
	if errors.As(err, &le) {
		if le.Temporary {
			return tempErr("4.4.3", err, "%v", err)
		}
		return permErr("5.4.4", ExNoHost, err, "%v", err)
	}
	var me *lookup.MapError
	if errors.As(err, &me) {
		return ConfigError(err)
	}
	return Internal(err)
}

func (c *Client) timeout(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// session runs one SMTP session with target t. A returned *Error has next
// set when the next target may be tried.
func (c *Client) session(ctx context.Context, domain string, t lookup.Target, msg *Message) (*Result, error) {
	// Never dial anything but a v3 onion through Tor, whatever the caller
	// resolved: a clear-net name would leave through an exit relay.
	if err := lookup.CheckOnion(t.Host); err != nil {
		return nil, permErr("5.4.4", ExNoHost, err, "refusing to dial %s: %v", t.Host, err)
	}
	host := fmt.Sprintf("%s[%d]", t.Host, t.Port)

	dctx, cancel := context.WithTimeout(ctx, c.timeout(c.ConnectTimeout, DefaultConnectTimeout))
	raw, err := c.Dialer.DialContext(dctx, "tcp", t.Addr())
	cancel()
	if err != nil {
		e := dialError(fmtStringer(c.Dialer), t.Addr(), err, ctx.Err())
		e.next = e.Temporary()
		return nil, e
	}
	defer raw.Close()
	// The overall deadline: go-smtp's own deadlines do not cover the body.
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	cmdTimeout := c.timeout(c.CommandTimeout, DefaultCommandTimeout)
	sc := &sessionConn{Conn: raw, writeTimeout: c.timeout(c.BlockTimeout, DefaultBlockTimeout), log: c.Transcript}
	s := &session{ctx: ctx, host: host, domain: domain, helo: c.Helo}

	// Step 3: the greeting, read here rather than by go-smtp.
	br := bufio.NewReader(sc)
	tp := textproto.NewReader(br)
	sc.SetReadDeadline(time.Now().Add(cmdTimeout))
	code, text, err := tp.ReadResponse(0)
	sc.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, s.retry(s.netError("receiving the initial server greeting", err))
	}
	if code != 220 {
		// Postfix's smtp_skip_5xx_greeting: a 5xx greeting is as good as a
		// 4xx one, and the next server is tried.
		r := textReply(code, text)
		e := tempErr("4"+replyStatus(r)[1:], r, "host %s refused to talk to me: %s", host, replyText(r))
		e.Reply = r
		return nil, s.retry(e)
	}
	if err := s.checkLoop(text); err != nil {
		return nil, err
	}
	greeting := replyBytes(220, text)

	// Step 4: STARTTLS, when asked for, before go-smtp takes over.
	var conn net.Conn = sc
	var rest io.Reader = br
	if c.TLS != TLSNone {
		tconn, err := s.startTLS(sc, tp, br, cmdTimeout, c.TLS)
		if err != nil {
			return nil, err
		}
		if tconn != nil {
			sc = &sessionConn{Conn: tconn, writeTimeout: sc.writeTimeout, log: c.Transcript}
			conn, rest = sc, sc
		}
	}
	client := smtp.NewClient(&replayConn{Conn: conn, r: io.MultiReader(bytes.NewReader(greeting), rest)})
	client.CommandTimeout = cmdTimeout
	client.SubmissionTimeout = c.timeout(c.DataTimeout, DefaultDataTimeout)

	sc.capture(true)
	err = client.Hello(c.Helo)
	replies := sc.capture(false)
	if err != nil {
		var r *smtp.SMTPError
		if errors.As(err, &r) {
			e := replyError(host, r, helloCommand(replies))
			if e.Temporary() {
				return nil, s.retry(e)
			}
			return nil, e
		}
		return nil, s.retry(s.netError("performing the EHLO handshake", err))
	}
	for _, name := range helloNames(replies) {
		if err := s.checkLoop(name); err != nil {
			return nil, err
		}
	}

	// Step 5.
	if msg.Size > 0 {
		if max, ok := client.MaxMessageSize(); ok && max > 0 && msg.Size > int64(max) {
			return nil, s.quit(sc, permErr("5.3.4", ExUnavailable, nil,
				"message size %d exceeds size limit %d of server %s", msg.Size, max, host))
		}
	}
	utf8 := needsSMTPUTF8(msg.Sender, msg.Recipients)
	if ok, _ := client.Extension("SMTPUTF8"); utf8 && !ok {
		return nil, s.quit(sc, permErr("5.6.7", ExDataErr, nil,
			"SMTPUTF8 is required, but was not offered by host %s", host))
	}

	// Step 6.
	if err := ok2xx(client.Mail(msg.Sender, &smtp.MailOptions{Size: msg.Size, UTF8: utf8})); err != nil {
		return nil, s.quit(sc, s.commandError("MAIL FROM", "sending MAIL FROM", err))
	}
	var rejected []rejection
	for _, rcpt := range msg.Recipients {
		err := ok2xx(client.Rcpt(rcpt, nil))
		var r *smtp.SMTPError
		switch {
		case err == nil:
		case errors.As(err, &r):
			rejected = append(rejected, rejection{rcpt, r})
		default:
			return nil, s.netError("sending RCPT TO", err)
		}
	}
	if len(rejected) > 0 {
		return nil, s.quit(sc, rcptError(host, rejected, len(msg.Recipients)))
	}

	// Step 7.
	w, err := client.Data()
	if err != nil {
		return nil, s.commandError("DATA", "sending DATA command", err)
	}
	body := &readErrReader{r: msg.Body}
	// The body and its final dot stay out of the transcript; go-smtp
	// buffers, so they leave only as the dot is sent.
	sc.mute(true, "[message body, then .]")
	_, err = io.Copy(w, body)
	if body.err != nil {
		// Never send the final dot after a partial body: closing the
		// connection without it makes the server discard the message.
		raw.Close()
		return nil, tempErr("4.3.0", body.err, "error reading the message: %v", body.err)
	}
	if err != nil {
		return nil, s.netError("sending message body", err)
	}
	resp, err := w.CloseWithResponse()
	sc.mute(false, "")
	var reply string
	var r *smtp.SMTPError
	switch {
	case err == nil:
		reply = "250 " + oneLine(resp.StatusText)
	case errors.As(err, &r) && r.Code/100 == 2:
		reply = replyText(r)
	default:
		return nil, s.commandError("end of DATA", "sending end of data -- message may be sent more than once", err)
	}

	// Step 8: delivered. QUIT is a courtesy; its reply is not awaited.
	s.quit(sc, nil)
	return &Result{Target: t, Reply: reply}, nil
}

// session holds what the error messages of one SMTP session need.
type session struct {
	ctx    context.Context
	host   string // "x.onion[25]", as Postfix names hosts
	domain string
	helo   string
}

// retry marks a temporary failure as one after which the next target may
// be tried.
func (s *session) retry(e *Error) *Error {
	e.next = e.Temporary() && s.ctx.Err() == nil
	return e
}

// quit sends QUIT without waiting for the reply, and returns e.
func (s *session) quit(c net.Conn, e *Error) *Error {
	c.SetWriteDeadline(time.Now().Add(quitTimeout))
	c.Write([]byte("QUIT\r\n"))
	return e
}

// quitTimeout bounds the write of QUIT; its reply is never awaited.
const quitTimeout = 5 * time.Second

// checkLoop reports a mail loop when a greeting or EHLO reply names us, as
// Postfix's smtp(8) does.
func (s *session) checkLoop(text string) error {
	name, _, _ := strings.Cut(text, " ")
	name, _, _ = strings.Cut(name, "\n")
	if s.helo != "" && strings.EqualFold(strings.TrimSuffix(name, "."), strings.TrimSuffix(s.helo, ".")) {
		return permErr("5.4.6", ExUnavailable, nil, "mail for %s loops back to myself", s.domain)
	}
	return nil
}

// commandError classifies the failure of a command: the remote's reply, or
// a network failure while in phase.
func (s *session) commandError(cmd, phase string, err error) *Error {
	var r *smtp.SMTPError
	if errors.As(err, &r) {
		return replyError(s.host, r, cmd)
	}
	return s.netError(phase, err)
}

// netError classifies a failure of the connection while in phase, in
// Postfix's words. All of them are temporary.
func (s *session) netError(phase string, err error) *Error {
	var perr textproto.ProtocolError
	switch {
	case s.ctx.Err() != nil:
		return tempErr("4.4.2", err, "conversation with host %s timed out while %s (delivery deadline)", s.host, phase)
	case isTimeout(err):
		return tempErr("4.4.2", err, "conversation with host %s timed out while %s", s.host, phase)
	case errors.As(err, &perr):
		return tempErr("4.5.0", err, "host %s sent a malformed reply while %s: %s", s.host, phase, oneLine(string(perr)))
	}
	return tempErr("4.4.2", err, "lost connection with host %s while %s", s.host, phase)
}

// startTLS says EHLO and STARTTLS itself, since go-smtp has no STARTTLS on
// an open client. It returns nil and no error when TLS is optional and not
// offered; go-smtp then says EHLO again, which RFC 5321 allows.
func (s *session) startTLS(sc *sessionConn, tp *textproto.Reader, br *bufio.Reader, timeout time.Duration, mode TLSMode) (net.Conn, error) {
	exchange := func(cmd, phase string, want int) (string, error) {
		sc.SetDeadline(time.Now().Add(timeout))
		defer sc.SetDeadline(time.Time{})
		if _, err := fmt.Fprintf(sc, "%s\r\n", cmd); err != nil {
			return "", s.retry(s.netError(phase, err))
		}
		code, text, err := tp.ReadResponse(0)
		if err != nil {
			return "", s.retry(s.netError(phase, err))
		}
		if code != want {
			return "", s.retry(replyError(s.host, textReply(code, text), strings.Fields(cmd)[0]))
		}
		return text, nil
	}
	text, err := exchange("EHLO "+s.helo, "performing the EHLO handshake", 250)
	if err != nil {
		return nil, err
	}
	if err := s.checkLoop(text); err != nil {
		return nil, err
	}
	offered := false
	for _, line := range strings.Split(text, "\n")[1:] {
		if strings.EqualFold(strings.TrimSpace(line), "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		if mode == TLSRequire {
			return nil, s.quit(sc, s.retry(tempErr("4.7.4", nil, "TLS is required, but was not offered by host %s", s.host)))
		}
		return nil, nil
	}
	if _, err := exchange("STARTTLS", "sending STARTTLS", 220); err != nil {
		return nil, err
	}
	if br.Buffered() > 0 {
		// Bytes after the 220 would be read as if they came over TLS
		// (the STARTTLS injection of CVE-2011-0411).
		return nil, s.retry(tempErr("4.5.0", nil, "host %s sent data after its reply to STARTTLS", s.host))
	}
	host, _, _ := strings.Cut(s.host, "[")
	tconn := tls.Client(sc.Conn, &tls.Config{
		ServerName: host,
		// The onion address authenticates the server; a certificate that
		// matches a .onion name is rare, so it is not verified.
		InsecureSkipVerify: true,
	})
	hctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	if err := tconn.HandshakeContext(hctx); err != nil {
		return nil, s.retry(tempErr("4.7.5", err, "TLS handshake with host %s failed: %v", s.host, err))
	}
	return tconn, nil
}

type rejection struct {
	rcpt  string
	reply *smtp.SMTPError
}

// rcptError reports rejected recipients. With one recipient it is Postfix's
// own wording; with several, every rejected one is named, and the failure
// is temporary if any rejection was.
func rcptError(host string, rejected []rejection, total int) *Error {
	if len(rejected) == 1 && total == 1 {
		return replyError(host, rejected[0].reply, "RCPT TO")
	}
	first := replyError(host, rejected[0].reply, "RCPT TO")
	for _, r := range rejected {
		if e := replyError(host, r.reply, "RCPT TO"); e.Temporary() {
			first = e
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "host %s rejected %d of %d recipients, nothing was sent:", host, len(rejected), total)
	allUnknown := true
	for i, r := range rejected {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " <%s>: %s", r.rcpt, replyText(r.reply))
		if !strings.HasPrefix(replyStatus(r.reply), "5.1.") {
			allUnknown = false
		}
	}
	b.WriteString(" (in reply to RCPT TO command)")
	e := &Error{Status: first.Status, Exit: ExUnavailable, Msg: b.String(), Reply: first.Reply, Err: first.Err}
	switch {
	case e.Temporary():
		e.Exit = ExTempFail
	case allUnknown:
		e.Exit = ExNoUser
	}
	return e
}

// ok2xx treats a 2xx reply that go-smtp reports as an error (it expects
// exactly 250 where RFC 5321 allows any 2xx, such as 251) as success.
func ok2xx(err error) error {
	var r *smtp.SMTPError
	if errors.As(err, &r) && r.Code/100 == 2 {
		return nil
	}
	return err
}

// textReply builds the go-smtp form of a reply read with net/textproto.
func textReply(code int, text string) *smtp.SMTPError {
	r := &smtp.SMTPError{Code: code, Message: text}
	if first, rest, ok := strings.Cut(text, " "); ok {
		if ec, ok := parseEnhanced(first); ok {
			r.EnhancedCode, r.Message = ec, rest
		}
	}
	return r
}

// replyBytes serializes a reply read with net/textproto, for replay.
func replyBytes(code int, text string) []byte {
	var b bytes.Buffer
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		sep := '-'
		if i == len(lines)-1 {
			sep = ' '
		}
		fmt.Fprintf(&b, "%03d%c%s\r\n", code, sep, l)
	}
	return b.Bytes()
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

func needsSMTPUTF8(sender string, rcpts []string) bool {
	for _, a := range append([]string{sender}, rcpts...) {
		for i := 0; i < len(a); i++ {
			if a[i] >= 0x80 {
				return true
			}
		}
	}
	return false
}

// readErrReader remembers a read error of the message, to tell it from a
// write error on the connection.
type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
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
