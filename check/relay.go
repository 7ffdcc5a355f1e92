package check

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/timeout"
)

// NullSender, as the probe's sender, is the null reverse-path: MAIL
// FROM:<>.
const NullSender = "<>"

// ParseProbeSender checks the sender of the relay test:
// an address, local-part@domain, in ASCII without spaces or control
// characters, whose domain is fully qualified; or "<>", the null sender.
// Brackets around an address are dropped.
func ParseProbeSender(s string) (string, error) {
	bad := func(why string) (string, error) {
		return "", errors.New(why)
	}
	if s == NullSender {
		return s, nil
	}
	a := s
	if len(a) > 2 && a[0] == '<' && a[len(a)-1] == '>' {
		a = a[1 : len(a)-1]
	}
	for _, c := range []byte(a) {
		switch {
		case c < ' ' || c == 0x7f:
			return bad("a control character")
		case c == ' ':
			return bad("a space")
		case c > 0x7f:
			return bad("not ASCII (an address that needs SMTPUTF8 would test the extension, not the relaying)")
		case c == '<' || c == '>':
			return bad("want an address user@domain, or <> for the null sender")
		}
	}
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return bad("want an address user@domain, or <> for the null sender")
	}
	local, domain := a[:at], a[at+1:]
	switch {
	case len(local) > 64:
		return bad("the local part is longer than 64 characters")
	case len(domain) > 253:
		return bad("the domain is longer than 253 characters")
	}
	labels := strings.Split(domain, ".")
	if len(labels) < 2 {
		return bad("the domain is not fully qualified (reject_non_fqdn_sender refuses it)")
	}
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' ||
			strings.TrimLeft(strings.ToLower(l), "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return bad("the domain is not a domain name")
		}
	}
	return a, nil
}

// sender returns the reverse-path of the relay test's MAIL FROM, without
// its brackets: "" is the null sender.
func (c *Checker) sender() string {
	switch c.ProbeSender {
	case "":
		return ProbeAddress
	case NullSender:
		return ""
	}
	return c.ProbeSender
}

// relayTest asks the server to relay to a foreign domain, and resets the
// transaction. A 2xx to RCPT TO is an open relay; only a refusal to relay
// (relayRefusal) shows that it does not relay. Any other refusal proves
// nothing: it may be about the sender (Postfix, smtpd_delay_reject = yes,
// answers the sender restrictions at RCPT TO), the client or the mailbox,
// and a server that relays would give it too. A 4xx says "try later", and
// an open relay that greylists (or one behind a temporary error) would
// accept later.
func relayTest(client *smtp.Client, conn *watchConn, from string) (Relay, string) {
	defer func() {
		if conn.broken() == nil {
			client.Reset()
		}
	}()
	mail, rcpt := "MAIL FROM:<"+from+">", "RCPT TO:<"+ProbeAddress+">"
	err := client.Mail(from, nil)
	if e := conn.broken(); e != nil {
		return RelayInconclusive, conn.brokenDetail(e)
	}
	if !is2xx(err) {
		return RelayInconclusive, fmt.Sprintf("%s not accepted (%s), so RCPT TO was not tried: give a sender it accepts with --probe-sender", mail, describe(err))
	}
	err = client.Rcpt(ProbeAddress, nil)
	if e := conn.broken(); e != nil {
		return RelayInconclusive, conn.brokenDetail(e)
	}
	var r *smtp.SMTPError
	switch {
	case is2xx(err):
		return RelayOpen, fmt.Sprintf("%s accepted: %s", rcpt, clean(conn.last))
	case errors.As(err, &r) && r.Code/100 == 5 && relayRefusal(r):
		return RelayRejected, fmt.Sprintf("%s rejected: %s", rcpt, replyLine(r))
	case errors.As(err, &r) && r.Code/100 == 5 && senderRefused(r):
		return RelayInconclusive, fmt.Sprintf("%s refused, but not as relaying: %s (the sender was refused: give one it accepts with --probe-sender)", rcpt, replyLine(r))
	case errors.As(err, &r) && r.Code/100 == 5:
		return RelayInconclusive, fmt.Sprintf("%s refused, but not as relaying: %s (only a refusal to relay, such as 554 5.7.1 Relay access denied, shows that it does not relay)", rcpt, replyLine(r))
	case errors.As(err, &r) && r.Code/100 == 4 && senderRefused(r):
		return RelayInconclusive, fmt.Sprintf("%s deferred, not rejected: %s (the sender was refused: give one it accepts with --probe-sender)", rcpt, replyLine(r))
	case errors.As(err, &r) && r.Code/100 == 4:
		return RelayInconclusive, fmt.Sprintf("%s deferred, not rejected: %s; only a permanent (5xx) refusal to relay shows it does not relay (Postfix: reject_unauth_destination, not defer_unauth_destination)", rcpt, replyLine(r))
	}
	return RelayInconclusive, fmt.Sprintf("%s: %s", rcpt, describe(err))
}

// is2xx reports success, counting a 2xx that go-smtp does not expect (it
// wants 250 for MAIL, 25x for RCPT) as one.
func is2xx(err error) bool {
	var r *smtp.SMTPError
	return err == nil || errors.As(err, &r) && r.Code/100 == 2
}

func describe(err error) string {
	var r *smtp.SMTPError
	if errors.As(err, &r) {
		return replyLine(r)
	}
	if timeout.Is(err) {
		return "timed out"
	}
	return clean(err.Error())
}

// relayCodes are the enhanced status codes that real servers give with a
// refusal to relay: 5.7.1, "delivery not authorized, message refused"
// (RFC 3463; Postfix, Sendmail, chasquid, qmail, Exchange before 2013);
// 5.7.54 and 5.7.64 (Exchange, Exchange Online); 5.1.2, "bad destination
// system address" (Stalwart).
var relayCodes = map[smtp.EnhancedCode]bool{
	{5, 7, 1}: true, {5, 7, 54}: true, {5, 7, 64}: true, {5, 1, 2}: true,
}

// relayRefusal reports whether a 5xx reply to RCPT TO refuses to relay:
// its text names relaying, and its enhanced status code, if it has one,
// is one of relayCodes; and it is not one of Postfix's refusals of the
// sender, the client or the HELO name, whose text an administrator writes
// (check_sender_access: "REJECT no relaying for you"). See the package
// documentation.
func relayRefusal(r *smtp.SMTPError) bool {
	ec := enhancedCode(r)
	if ec != (smtp.EnhancedCode{}) && !relayCodes[ec] || senderRefused(r) {
		return false
	}
	m := strings.ToLower(r.Message)
	if strings.Contains(m, "client host rejected") || strings.Contains(m, "helo command rejected") {
		return false
	}
	return namesRelaying(r.Message)
}

// senderRefused reports a refusal of the sender, permanent or not: X.1.7
// or X.1.8 (RFC 3463), or Postfix's words for its sender restrictions.
func senderRefused(r *smtp.SMTPError) bool {
	ec := enhancedCode(r)
	return ec[1] == 1 && (ec[2] == 7 || ec[2] == 8) ||
		strings.Contains(strings.ToLower(r.Message), "sender address rejected")
}

// enhancedCode returns a reply's enhanced status code: at the start of
// its text (RFC 2034), or at its end as qmail writes it, "(#5.7.1)". It
// is zero when there is none.
func enhancedCode(r *smtp.SMTPError) smtp.EnhancedCode {
	if ec := r.EnhancedCode; ec != smtp.NoEnhancedCode && ec[0] > 0 {
		return ec
	}
	m := strings.TrimSpace(r.Message)
	i := strings.LastIndex(m, "(#")
	if i < 0 || !strings.HasSuffix(m, ")") {
		return smtp.EnhancedCode{}
	}
	parts := strings.Split(m[i+2:len(m)-1], ".")
	if len(parts) != 3 {
		return smtp.EnhancedCode{}
	}
	var ec smtp.EnhancedCode
	for j, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return smtp.EnhancedCode{}
		}
		ec[j] = n
	}
	return ec
}

// relayWords name relaying in a refusal; "rcpthosts" is qmail's.
var relayWords = map[string]bool{"relay": true, "relaying": true, "relayed": true, "rcpthosts": true}

// namesRelaying reports whether a reply's text names relaying: one of
// relayWords as a word of its own. Addresses (anything in angle brackets,
// or with an "@") are not read, nor are the words of host names
// ("relays.ordb.org", a DNS blocklist that a rejected client is listed
// in), so an address or a name that reads "relay" does not count.
func namesRelaying(text string) bool {
	var b strings.Builder
	for {
		i := strings.IndexByte(text, '<')
		if i < 0 {
			b.WriteString(text)
			break
		}
		b.WriteString(text[:i])
		b.WriteByte(' ')
		j := strings.IndexByte(text[i:], '>')
		if j < 0 {
			break
		}
		text = text[i+j+1:]
	}
	for _, f := range strings.Fields(b.String()) {
		if strings.Contains(f, "@") {
			continue
		}
		f = strings.ToLower(strings.Trim(f, `()[]{}"'.,;:!?`))
		if relayWords[f] {
			return true
		}
	}
	return false
}
