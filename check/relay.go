package check

import (
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"
)

// relayTest asks the server to relay to a foreign domain, and resets the
// transaction. Only a 2xx to RCPT TO is an open relay and only a 5xx a
// refusal: a 4xx says "try later", and an open relay that greylists (or
// one behind a temporary error) would accept later. After a reply that
// breaks the protocol or the limits, nothing more is said.
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
		return RelayInconclusive, fmt.Sprintf("%s not accepted (%s), so RCPT TO was not tried", mail, describe(err))
	}
	err = client.Rcpt(ProbeAddress, nil)
	if e := conn.broken(); e != nil {
		return RelayInconclusive, conn.brokenDetail(e)
	}
	var r *smtp.SMTPError
	switch {
	case is2xx(err):
		return RelayOpen, fmt.Sprintf("%s accepted: %s", rcpt, clean(conn.last))
	case errors.As(err, &r) && r.Code/100 == 5:
		return RelayRejected, fmt.Sprintf("%s rejected: %s", rcpt, replyLine(r))
	case errors.As(err, &r) && r.Code/100 == 4:
		return RelayInconclusive, fmt.Sprintf("%s deferred, not rejected: %s; only a permanent (5xx) refusal shows it does not relay (Postfix: reject_unauth_destination, not defer_unauth_destination)", rcpt, replyLine(r))
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
	if isTimeout(err) {
		return "timed out"
	}
	return clean(err.Error())
}
