// Package deliver delivers one message to an onion MX through Tor, for
// Postfix's pipe(8): the message comes from stdin, and the outcome is an
// *Error whose enhanced status code and exit status tell Postfix to defer or
// to bounce, or a 2xx reply from the remote.
//
// A delivery goes through these steps, in order:
//
//  1. Resolve the nexthop, or without one the recipients' domain, to onion
//     targets (package lookup). A mail domain without a usable route is a
//     permanent 5.4.4; a .onion recipient domain that is not a usable v3
//     address a permanent 5.1.2; an unknown answer (DNS SERVFAIL, timeout)
//     a temporary 4.4.3. What only configuration can cause — a bracketed
//     nexthop that is not a usable onion, a bad static-map entry, a map
//     that routes the domain to another transport — defers with 4.3.5.
//  2. For each target in turn: connect through Tor's SocksPort, the onion
//     name unresolved, with SOCKS credentials derived from the target so
//     that Tor isolates circuits per destination and reuses them.
//  3. Read the greeting. A 4xx or 5xx greeting is temporary, as with
//     Postfix's smtp_skip_5xx_greeting; a greeting that names our own EHLO
//     name is a mail loop (5.4.6).
//  4. EHLO, or HELO when EHLO is not understood; with TLS "may" or
//     "require", STARTTLS first. "may" is opportunistic, as Postfix's
//     smtp_tls_security_level = may: a server without ESMTP or STARTTLS,
//     or one that refuses STARTTLS, gets the message in plaintext, and
//     after a failed handshake the target is tried again in plaintext on
//     a new connection. The reply to EHLO is checked for loops too. A
//     temporary failure up to here tries the next target; the message has
//     not been touched yet.
//  5. Check the server's SIZE limit and, when an address needs it, SMTPUTF8.
//  6. The transaction (transaction.go), in as few round trips as the server
//     allows: MAIL FROM (with SIZE and BODY=8BITMIME when offered) and RCPT
//     TO for every recipient, all in one write with PIPELINING. pipe(8)
//     takes one status for all recipients, so it is all or nothing: if any
//     recipient is rejected, no message is sent.
//  7. The message, streamed from the reader in constant memory, its line
//     ends made CRLF and lines longer than 998 octets folded as smtp(8)
//     folds them (body.go): after DATA's 354, dot-stuffed and ended with
//     the final dot; or, with CHUNKING and one recipient, in BDAT chunks
//     pipelined right behind RCPT, the last one marked LAST. The end — the
//     dot or LAST — is sent only after the reader said the message ended
//     (io.EOF), and only if the delivery was not interrupted. A 2xx reply
//     to it is a delivery; a reply that does not come after it is
//     temporary ("message may be sent more than once"), and so is, with
//     BDAT, any reply that goes missing after LAST was sent.
//  8. QUIT, without waiting for the reply: nothing after the 2xx can turn a
//     delivery into a failure. With BDAT, QUIT goes in the batch, and its
//     reply shows that the replies before it were read in step.
//
// Whether to go on with the next target after a failure is decided in one
// place, Deliver (mayTryAgain): after a temporary failure, before a byte of
// the message was read.
//
// Every reply is read through internal/reply, which bounds a reply line to
// 2048 octets and a reply to 64 KiB (more is a broken or hostile server:
// 4.5.0) and accepts a reply code without text. Every network step has a
// deadline. Client.Timeout bounds the whole delivery by closing the
// connection; cancelling the context given to Deliver interrupts it (a
// signal to the process): before the final dot the connection is closed
// and the message is not sent, after it the reply is still awaited within
// the deadlines.
package deliver

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

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
	// DefaultTimeout bounds a whole delivery; it stays below Postfix's
	// command_time_limit (1000 s), after which pipe(8) kills the command
	// and bounces the message.
	DefaultTimeout = 10 * time.Minute
)

// TLSMode says whether to use STARTTLS. The onion service already
// authenticates the server and encrypts the stream, so the default is none.
type TLSMode int

const (
	TLSNone    TLSMode = iota // never STARTTLS
	TLSMay                    // STARTTLS when offered; the certificate is not verified; plaintext when TLS is not to be had
	TLSRequire                // defer if TLS cannot be had
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
	// NoChunking keeps BDAT (RFC 3030) out of deliveries: see
	// transaction.go for what it trades.
	NoChunking bool

	// Timeout bounds the whole delivery, the wait for the reply to the
	// final dot included.
	Timeout        time.Duration
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
	// Body is the message. Its io.EOF is taken for the end of the
	// message; any other error means it did not arrive whole.
	Body io.Reader
	// RefuseFromLine makes a message that begins with "From " a
	// configuration error (4.3.5), found before anything goes out. Exim's
	// pipe transport puts an mbox "From " line before the message unless
	// its message_prefix is set empty; that line is no header field (it
	// has no colon right after the name), and the remote would get it as
	// the message's first line.
	RefuseFromLine bool
}

// mboxFrom is what an mbox "From " line, and Exim's default
// message_prefix, begins with.
const mboxFrom = "From "

// isFromLine reports whether p, the first octets of a message (at least
// len(mboxFrom)+1 of them), begin an mbox "From " line: "From " and then
// not the colon of a From header field in RFC 5322's obsolete syntax,
// where white space may precede it ("From : a@b"). Exim's line has the
// return path there, or MAILER-DAEMON.
func isFromLine(p []byte) bool {
	return len(p) > len(mboxFrom) && string(p[:len(mboxFrom)]) == mboxFrom && !strings.ContainsRune(" \t:", rune(p[len(mboxFrom)]))
}

// Result is a successful delivery.
type Result struct {
	Target lookup.Target
	// Code and Text are the remote's reply to the end of data; Text has
	// the lines of a multi-line reply joined by spaces, and no enhanced
	// status code.
	Code int
	Text string
	// Enhanced is the reply's enhanced status code ("2.0.0"), if any.
	Enhanced string
}

// Reply returns the remote's reply on one line, as Postfix's smtp(8) logs
// it: "250 2.0.0 Ok: queued as 4DFED9862A1".
func (r *Result) Reply() string {
	s := fmt.Sprintf("%03d", r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if r.Text != "" {
		s += " " + r.Text
	}
	return s
}

// Summary returns the delivery on one line, made to fit the first 100
// characters of a successful command's output, which pipe(8) logs: the
// onion and the remote's reply without its enhanced code, whose text ends
// with the remote's queue id in Postfix's and Exim's words:
// "<56>.onion: 250 Ok: queued as 4DFED9862A1" (":port" after the onion
// when it is not 25 and there is room for it). A text too long for the
// rest of the 100 loses words from its middle, so that its end, the queue
// id, stays: Postfix's reply to BDAT, "Ok: 57396523 bytes queued as
// C869C986D34", becomes "Ok: ... queued as C869C986D34".
func (r *Result) Summary() string {
	line := func(host string) string {
		s := fmt.Sprintf("%s: %03d", host, r.Code)
		if r.Text != "" {
			s += " " + shorten(r.Text, summaryLen-len(s)-1)
		}
		return s
	}
	if r.Target.Port != lookup.DefaultPort {
		// The port, unless it would push the queue id out of the 100
		// characters.
		if s := line(r.Target.Addr()); len(s) <= summaryLen {
			return s
		}
	}
	return line(r.Target.Host)
}

// summaryLen is how much of a successful command's output pipe(8) logs.
const summaryLen = 100

// shorten fits text into room bytes by dropping whole words from its
// middle: its first word, " ... ", and as many of its last words as fit.
// Without a word boundary to cut at, it is returned as it is (pipe(8) cuts
// its end).
func shorten(text string, room int) string {
	if len(text) <= room {
		return text
	}
	head, _, _ := strings.Cut(text, " ")
	for i := len(head); i < len(text); i++ {
		if text[i] == ' ' && len(head)+len(" ... ")+len(text)-i-1 <= room {
			return head + " ... " + text[i+1:]
		}
	}
	return text
}

// Deliver delivers msg to the onion route of nexthop (Postfix's ${nexthop};
// empty means the recipients' domain). It returns an *Error on failure.
// Cancelling ctx interrupts the delivery (see the package doc); the
// cancellation's cause names the reason in the error.
func (c *Client) Deliver(ctx context.Context, nexthop string, msg *Message) (*Result, error) {
	deadline := time.Now().Add(cmp.Or(c.Timeout, DefaultTimeout))
	// hard ends the delivery at its deadline, interrupted or not.
	hard, cancelHard := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancelHard()
	// soft is what the steps before the final dot run under.
	soft, cancelSoft := context.WithDeadline(ctx, deadline)
	defer cancelSoft()

	nhs, err := c.nexthop(nexthop, msg.Recipients)
	if err != nil {
		return nil, err
	}
	// The first octets of the message, before anything goes out: an empty
	// message is no message (RFC 5322 wants at least a Date and a From
	// field; Postfix never hands one over), and an input that already
	// failed needs no connection. Reading it ends with the delivery's
	// deadline or its interruption, however long the writer keeps silent.
	input, stopInput := interruptible(soft, msg.Body)
	defer stopInput()
	body := &messageReader{Reader: bufio.NewReader(input)}
	want := 1
	if msg.RefuseFromLine {
		want = len(mboxFrom) + 1
	}
	// A message shorter than want ends in io.EOF after a few octets: it is
	// no "From " line, and not empty.
	if p, err := body.Peek(want); len(p) == 0 {
		switch {
		case ctx.Err() != nil:
			return nil, interrupted(ctx, "waiting for the message")
		case soft.Err() != nil:
			return nil, fail("4.3.0", err, "message not sent: the delivery deadline passed while waiting for the message on the input")
		case err == io.EOF:
			return nil, fail("4.3.0", err, "message not sent: it is empty (nothing came on the input)")
		}
		return nil, fail("4.3.0", err, "message not sent: %v", err)
	} else if msg.RefuseFromLine && isFromLine(p) {
		return nil, ConfigError(errors.New(`message not sent: it begins with a "From " line, which is not part of the message (Exim's pipe transport adds it: set message_prefix empty in the transport)`))
	}
	msg = &Message{Sender: msg.Sender, Recipients: msg.Recipients, Size: msg.Size, Body: body}
	// A nexthop that is the recipients' own domain (what Postfix passes when
	// the transport map gave none) is their address; any other comes from
	// the configuration.
	fromRcpt := nexthop == "" || isRecipientDomain(nexthop, msg.Recipients)
	route, err := c.resolve(soft, nhs, fromRcpt)
	if err != nil {
		if ctx.Err() != nil {
			return nil, interrupted(ctx, "resolving the route")
		}
		return nil, err
	}
	var last *Error
	for i, t := range route.Targets {
		tls := c.TLS
		for {
			res, err := c.session(soft, hard, ctx, route.Domain, t, i == 0, tls, msg)
			if err == nil {
				return res, nil
			}
			last = AsError(err)
			if !last.tlsFailed || tls != TLSMay || !mayTryAgain(last, soft, body) {
				break
			}
			// TLS "may": TLS failed before the body; the target is tried
			// again in plaintext, on a new connection.
			tls = TLSNone
		}
		if !mayTryAgain(last, soft, body) {
			break
		}
	}
	return nil, last
}

// mayTryAgain decides whether, after the failure e, the delivery may go on
// with another connection: the failure is temporary, the message has not
// been touched (not a byte of the body read: it could not be read again),
// and the delivery is neither interrupted nor out of time.
func mayTryAgain(e *Error, soft context.Context, body *messageReader) bool {
	return e.Temporary() && !body.started && soft.Err() == nil
}

// messageReader is the message, and whether a delivery has read from it.
type messageReader struct {
	*bufio.Reader
	started bool
}

func (m *messageReader) Read(p []byte) (int, error) {
	m.started = true
	return m.Reader.Read(p)
}

// nexthop returns the parsed nexthop, or the recipients' domain when it is
// empty; the recipients of one delivery must then share their domain. A
// Postfix 3.5 nexthop list ("[a.onion]:25,[b.onion]:2525", what the lookup
// servers answer for a static-map entry with several onions) gives several.
func (c *Client) nexthop(s string, rcpts []string) ([]lookup.Nexthop, error) {
	if strings.ContainsAny(s, ", \t") {
		nhs, err := lookup.ParseNexthopList(s)
		if err != nil {
			return nil, ConfigError(fmt.Errorf("nexthop list %q: %w", s, err))
		}
		for _, nh := range nhs {
			if !nh.Literal && !lookup.IsOnion(nh.Host) {
				return nil, ConfigError(fmt.Errorf("nexthop list %q: %s is not an onion: a list names onions to try in order", s, nh))
			}
		}
		return nhs, nil
	}
	if s != "" {
		nh, err := lookup.ParseNexthop(s)
		if err != nil {
			if isRecipientDomain(s, rcpts) && lookup.LooksOnion(s) {
				// Postfix's empty nexthop: the recipient domain itself,
				// a .onion name that is not even a domain name.
				return nil, fail("5.1.2", err, "bad destination %s: %v", s, err)
			}
			return nil, ConfigError(err)
		}
		if nh.Port != 0 && !nh.Literal && !lookup.IsOnion(nh.Host) {
			return nil, ConfigError(fmt.Errorf("nexthop %q: a port goes with an onion or a bracketed nexthop, not with a mail domain", s))
		}
		return []lookup.Nexthop{nh}, nil
	}
	var domain string
	for _, r := range rcpts {
		if i := strings.LastIndexByte(r, '@'); i >= 0 && strings.HasPrefix(r[i+1:], "[") && len(rcpts) == 1 {
			// An address literal, "u@[x.onion]": the nexthop is that host.
			return c.nexthop(r[i+1:], rcpts)
		}
		d, err := lookup.AddressDomain(r)
		if err != nil {
			if i := strings.LastIndexByte(r, '@'); i >= 0 && lookup.LooksOnion(r[i+1:]) {
				return nil, fail("5.1.2", err, "bad destination %s: %v", r[i+1:], err)
			}
			return nil, ConfigError(err)
		}
		if domain != "" && d != domain {
			return nil, ConfigError(fmt.Errorf("recipients in %s and %s: without --nexthop they must share one domain", domain, d))
		}
		domain = d
	}
	if domain == "" {
		return nil, ConfigError(errors.New("no recipients"))
	}
	return []lookup.Nexthop{{Host: domain}}, nil
}

// resolve returns the route of the nexthops, or the failure in Postfix's
// terms. The targets of a list are tried in its order; each of its
// members comes from the configuration, which must name usable onions.
func (c *Client) resolve(ctx context.Context, nhs []lookup.Nexthop, fromRcpt bool) (*lookup.Route, error) {
	if len(nhs) == 1 {
		route, err := c.Resolver.Resolve(ctx, nhs[0])
		if err != nil {
			return nil, routeError(nhs[0], fromRcpt, err)
		}
		return route, nil
	}
	var all *lookup.Route
	for _, nh := range nhs {
		route, err := c.Resolver.Resolve(ctx, nh)
		if err != nil {
			var le *lookup.Error
			if errors.As(err, &le) && !le.Temporary {
				return nil, ConfigError(fmt.Errorf("nexthop %s in a list: %s", nh, skippedReason(le)))
			}
			return nil, routeError(nh, false, err)
		}
		if all == nil {
			all = &lookup.Route{Domain: route.Domain, Source: "nexthop list"}
		}
		all.Targets = append(all.Targets, route.Targets...)
	}
	return all, nil
}

// isRecipientDomain reports whether nexthop is the domain of one of the
// recipients (an address literal's brackets included): what Postfix passes
// as ${nexthop} when the transport map gave none. Any other nexthop comes
// from the configuration.
func isRecipientDomain(nexthop string, rcpts []string) bool {
	same := func(a, b string) bool {
		if na, err := lookup.NormalizeDomain(a); err == nil {
			if nb, err := lookup.NormalizeDomain(b); err == nil {
				return na == nb
			}
		}
		return strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(b, "."))
	}
	for _, r := range rcpts {
		if i := strings.LastIndexByte(r, '@'); i >= 0 && same(nexthop, r[i+1:]) {
			return true
		}
	}
	return false
}

// routeError turns a lookup failure into the outcome Postfix needs.
// fromRcpt says that the nexthop is the recipients' own domain.
func routeError(nh lookup.Nexthop, fromRcpt bool, err error) *Error {
	var le *lookup.Error
	var me *lookup.MapError
	var ee *lookup.ElsewhereError
	switch {
	case errors.As(err, &me):
		return ConfigError(err)
	case errors.As(err, &ee):
		// Postfix sent the mail here, but the map onionmx reads routes
		// the domain elsewhere: the two configurations disagree.
		return ConfigError(fmt.Errorf("configuration mismatch: %w", err))
	case !errors.As(err, &le):
		return Internal(err)
	case le.Temporary:
		return fail("4.4.3", err, "%v", err)
	case lookup.IsOnion(nh.Host) && fromRcpt:
		// The recipient's own domain is an onion that cannot be used
		// (a typo, a v2 address), bracketed or not: the address is wrong.
		return fail("5.1.2", err, "bad destination %s: %s", nh.Host, skippedReason(le))
	case nh.Literal:
		// "[host]" comes from a transport map: naming anything but a
		// usable onion there is the administrator's mistake.
		return ConfigError(fmt.Errorf("nexthop %s: %w", nh, err))
	case lookup.IsOnion(nh.Host):
		// An onion nexthop that is not the recipient's domain comes from
		// a transport map.
		return ConfigError(fmt.Errorf("nexthop %s: %s", nh, skippedReason(le)))
	}
	return fail("5.4.4", err, "%v", err)
}

// skippedReason says why a route had no usable target.
func skippedReason(le *lookup.Error) string {
	if len(le.Skipped) > 0 {
		return le.Skipped[0].Reason
	}
	return le.Error()
}

// interrupted is the failure of a delivery stopped by ctx's cancellation
// (a signal) before the final dot: the message was not sent.
func interrupted(ctx context.Context, phase string) *Error {
	cause := context.Cause(ctx)
	return fail("4.3.0", cause, "delivery interrupted (%v) while %s; the message was not sent", cause, phase)
}
