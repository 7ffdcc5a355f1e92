package deliver

import (
	"errors"
	"fmt"
	"github.com/onionmx/onionmx/internal/printable"
	"github.com/onionmx/onionmx/internal/reply"
	"strings"

	"github.com/emersion/go-smtp"
)

// Exit statuses from sysexits.h, as Postfix's pipe(8) reads them. Only
// ExTempFail (and EX_OSERR) defer; every other non-zero status bounces
// unless the output starts with a 4.x.y enhanced status code.
const (
	ExOK          = 0
	ExUsage       = 64 // command line usage error
	ExDataErr     = 65 // data format error
	ExNoUser      = 67 // addressee unknown
	ExNoHost      = 68 // host name unknown
	ExUnavailable = 69 // service unavailable
	ExSoftware    = 70 // internal software error
	ExTempFail    = 75 // temporary failure; Postfix defers
	ExProtocol    = 76 // remote error in protocol
	ExNoPerm      = 77 // permission denied
	ExConfig      = 78 // configuration error
)

// Error is the outcome of a delivery that did not succeed, in the terms
// Postfix's pipe(8) needs: an RFC 3463 enhanced status code whose class says
// whether to defer (4) or bounce (5), and one line of text in the words of
// Postfix's smtp(8). The exit status follows from the status code (Exit),
// so the two can never disagree.
type Error struct {
	// Status is the RFC 3463 enhanced status code, "4.4.1" or "5.1.1".
	Status string
	// Msg is the text after the status code.
	Msg string
	// Reply is the remote's reply, when the failure is one.
	Reply *smtp.SMTPError
	// Err is the underlying cause, if any.
	Err error

	// tlsFailed says that TLS failed on a connection that could go on
	// without it: Deliver decides whether to try again in plaintext.
	tlsFailed bool
}

func (e *Error) Error() string { return e.Status + " " + e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether Postfix is to retry the delivery later.
func (e *Error) Temporary() bool { return strings.HasPrefix(e.Status, "4.") }

// Exit returns the sysexits status for the error, worked out here alone
// from its status code and whether it is the remote's reply: every 4.x.y
// is EX_TEMPFAIL but the configuration's 4.3.5, which is EX_CONFIG
// (pipe(8) defers it for its 4.x.y output) — a remote's own 4.3.5 is its
// trouble, not ours; a permanent failure names its kind as sendmail's
// statuses do.
func (e *Error) Exit() int {
	switch {
	case e.Status == "4.3.5" && e.Reply == nil:
		return ExConfig
	case !strings.HasPrefix(e.Status, "5."):
		// Anything but a permanent code is uncertain: defer.
		return ExTempFail
	case e.Status == "5.1.0" || e.Status == "5.1.1":
		return ExNoUser // bad destination mailbox, whoever says so
	case e.Reply != nil:
		return ExUnavailable // the remote refused
	case e.Status == "5.1.2" || e.Status == "5.4.4":
		return ExNoHost // bad destination system, no route
	case e.Status == "5.6.7":
		return ExDataErr // SMTPUTF8 needed and not offered
	case e.Status == "5.7.0":
		return ExNoPerm // Tor: onion client authorization
	}
	return ExUnavailable
}

// fail returns the failure with status, temporary or permanent as the
// status's class says.
func fail(status string, err error, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...), Err: err}
}

// ConfigError is a usage or configuration error: the mail is deferred with
// 4.3.5 ("system incorrectly configured") and EX_CONFIG, never bounced, so
// that nothing is lost while the administrator fixes it.
func ConfigError(err error) *Error {
	return &Error{Status: "4.3.5", Msg: err.Error(), Err: err}
}

// Internal turns an unexpected failure (a panic, a bug) into a temporary
// one: when in doubt, defer.
func Internal(err error) *Error {
	return &Error{Status: "4.3.0", Msg: "internal error: " + err.Error(), Err: err}
}

// AsError returns err as an *Error: itself when it is one, and otherwise a
// temporary internal error.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return Internal(err)
}

// replyError returns the failure for a remote's 4xx or 5xx reply to cmd,
// worded as Postfix's smtp(8) words it:
// "host X[25] said: 550 5.1.1 <u@d>: Recipient address rejected (in reply to RCPT TO command)".
func replyError(host string, r *smtp.SMTPError, cmd string) *Error {
	return &Error{Status: replyStatus(r, r.Code/100), Reply: r, Err: r,
		Msg: fmt.Sprintf("host %s said: %s (in reply to %s command)", host, replyText(r), cmd)}
}

// replyStatus returns the enhanced status code for a reply: the remote's
// detail in the given class (the reply code's, as Postfix takes it when
// the two disagree), or class.0.0 when the remote gave none.
func replyStatus(r *smtp.SMTPError, class int) string {
	if class != 4 && class != 5 {
		// A reply outside 4xx/5xx where a failure is reported: the
		// protocol went wrong, and the outcome is uncertain.
		class = 4
	}
	ec, ok := enhancedCode(r)
	if !ok {
		return fmt.Sprintf("%d.0.0", class)
	}
	return fmt.Sprintf("%d.%d.%d", class, ec[1], ec[2])
}

// enhancedCode returns the reply's RFC 3463 code. go-smtp parses it from
// the first line only; some servers (go-smtp's own among them) put it on
// the last line of a multi-line reply, so the other lines are tried too.
func enhancedCode(r *smtp.SMTPError) (smtp.EnhancedCode, bool) {
	if validEnhanced(r.EnhancedCode) {
		return r.EnhancedCode, true
	}
	for _, line := range strings.Split(r.Message, "\n") {
		word, _, _ := strings.Cut(line, " ")
		if ec, ok := parseEnhanced(word); ok {
			return ec, true
		}
	}
	return smtp.EnhancedCode{}, false
}

// parseEnhanced parses an RFC 3463 code, "class.subject.detail".
func parseEnhanced(word string) (smtp.EnhancedCode, bool) {
	var ec smtp.EnhancedCode
	n, _ := fmt.Sscanf(word, "%d.%d.%d", &ec[0], &ec[1], &ec[2])
	return ec, n == 3 && strings.Count(word, ".") == 2 && validEnhanced(ec)
}

func validEnhanced(ec smtp.EnhancedCode) bool {
	return ec[0] >= 2 && ec[0] <= 5 && ec[1] >= 0 && ec[1] <= 999 && ec[2] >= 0 && ec[2] <= 999
}

// replyText rebuilds the remote's reply as one line: code, enhanced code,
// text, with the lines of a multi-line reply joined by spaces.
func replyText(r *smtp.SMTPError) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%03d", r.Code)
	if ec := r.EnhancedCode; validEnhanced(ec) {
		fmt.Fprintf(&b, " %d.%d.%d", ec[0], ec[1], ec[2])
	}
	if r.Message != "" {
		b.WriteByte(' ')
		b.WriteString(printable.Line(r.Message, reply.MaxReply))
	}
	return b.String()
}
