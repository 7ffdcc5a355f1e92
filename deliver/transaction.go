package deliver

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/printable"
	"github.com/onionmx/onionmx/internal/reply"
)

// The mail transaction, steps 5 to 8 of the package doc, in as few round
// trips as the server allows:
//
//   - sequential, a reply awaited after every command, when the server
//     does not offer PIPELINING: MAIL, each RCPT, DATA, the body;
//   - RFC 2920 PIPELINING: MAIL, every RCPT and DATA in one write, their
//     replies read in order, then the body (2 round trips);
//   - with RFC 3030 CHUNKING too, and one recipient: MAIL, RCPT, the body
//     as BDAT chunks and QUIT in one stream, the replies read after it (1
//     round trip), the reply to QUIT showing that they were read in step.
//
// Recipients are all or nothing, whichever way: pipe(8) takes one status
// for all of them. PIPELINING keeps that: every RCPT reply is known before
// the body goes out, and a 354 after a refused RCPT is answered by closing
// the connection without the final dot, which makes the server discard
// the message. BDAT LAST does not keep it (the body is complete before the
// RCPT replies are read, and the server delivers to the recipients it
// accepted), hence one recipient only.

// Step 5: what must be known before MAIL FROM.
func (s *session) limits(msg *Message) *Error {
	if msg.Size > 0 {
		if max, err := strconv.ParseInt(s.ext["SIZE"], 10, 64); err == nil && max > 0 && msg.Size > max {
			return fail("5.3.4", nil,
				"message size %d exceeds size limit %d of server %s", msg.Size, max, s.host)
		}
	}
	if _, ok := s.ext["SMTPUTF8"]; needsSMTPUTF8(msg) && !ok {
		return fail("5.6.7", nil,
			"SMTPUTF8 is required, but was not offered by host %s", s.host)
	}
	return nil
}

// transaction runs steps 5 to 8 the fastest way the server offers.
func (s *session) transaction(msg *Message) (*Result, error) {
	if err := s.limits(msg); err != nil {
		return nil, s.quit(err)
	}
	if s.rr.Buffered() > 0 {
		// A reply before any command: every reply after it would be read
		// one step late, and BDAT has no 354 to show it (the reply to RCPT
		// would pass for the reply to the message). Nothing is sent.
		return nil, fail("4.5.0", nil, "host %s sent a reply nobody asked for, after its reply to EHLO", s.host)
	}
	_, pipelining := s.ext["PIPELINING"]
	_, chunking := s.ext["CHUNKING"]
	switch {
	case pipelining && chunking && len(msg.Recipients) == 1 && !s.c.NoChunking:
		return s.chunked(msg)
	case pipelining:
		return s.pipelined(msg)
	}
	return s.sequential(msg)
}

// sequential is the transaction without PIPELINING.
func (s *session) sequential(msg *Message) (*Result, error) {
	// Until DATA, the message is untouched: a temporary failure tries the
	// next target, as smtp(8) keeps the recipients for the next server.
	rep, err := s.command(mailFrom(s.ext, msg), s.cmdWait)
	if e := s.mailReply(rep, err); e != nil {
		return nil, s.quit(e)
	}
	var rejected []rejection
	for _, rcpt := range msg.Recipients {
		rep, err := s.command(rcptTo(rcpt), s.cmdWait)
		if e := s.rcptReply(rep, err, rcpt, &rejected); e != nil {
			return nil, s.quit(e)
		}
	}
	if len(rejected) > 0 {
		return nil, s.quit(rcptError(s.host, rejected, len(msg.Recipients)))
	}
	rep, err = s.command("DATA", s.cmdWait)
	if e := s.dataReply(rep, err); e != nil {
		return nil, s.quit(e)
	}
	return s.data(msg)
}

// pipelined is the transaction with PIPELINING: MAIL, RCPT and DATA in
// one write, their replies read in order.
func (s *session) pipelined(msg *Message) (*Result, error) {
	var b strings.Builder
	b.WriteString(mailFrom(s.ext, msg) + "\r\n")
	for _, rcpt := range msg.Recipients {
		b.WriteString(rcptTo(rcpt) + "\r\n")
	}
	b.WriteString("DATA\r\n")
	if _, err := s.sc.Write([]byte(b.String())); err != nil {
		return nil, s.tlsFailed(s.netError("sending MAIL FROM", err))
	}
	// The first failure decides; the replies after it are still read (they
	// are on their way), up to the one to DATA, which says whether the
	// server now waits for a body.
	rep, err := s.readReply(s.cmdWait)
	failed := s.mailReply(rep, err)
	var rejected []rejection
	for _, rcpt := range msg.Recipients {
		if failed != nil && err != nil {
			break // the connection is gone
		}
		rep, err = s.readReply(s.cmdWait)
		if e := s.rcptReply(rep, err, rcpt, &rejected); e != nil && failed == nil {
			failed = e
		}
	}
	if failed == nil && len(rejected) > 0 {
		failed = rcptError(s.host, rejected, len(msg.Recipients))
	}
	if failed != nil && err != nil {
		return nil, failed
	}
	rep, err = s.readReply(s.cmdWait)
	switch {
	case failed != nil && err == nil && rep.Code == 354:
		// The server waits for the body: hanging up without the final dot
		// is the only way to make sure nothing is delivered (QUIT would be
		// taken for a line of the message).
		s.raw.Close()
		return nil, failed
	case failed != nil:
		return nil, s.quit(failed)
	}
	if e := s.dataReply(rep, err); e != nil {
		return nil, s.quit(e)
	}
	return s.data(msg)
}

// chunked is the transaction with PIPELINING and CHUNKING, for one
// recipient: MAIL, RCPT and the body in BDAT chunks, the replies read
// after the last one. From the moment BDAT LAST is written, a reply that
// does not come, or that makes no sense, leaves the server with what may
// be a complete message: the outcome is temporary, "message may be sent
// more than once", never a success.
func (s *session) chunked(msg *Message) (*Result, error) {
	envelope := mailFrom(s.ext, msg) + "\r\n" + rcptTo(msg.Recipients[0]) + "\r\n"
	s.sc.logSent(envelope)
	s.sc.mute(true, "[message body, as BDAT chunks]")
	chunks, err := writeChunks(s.sc, msg.Body, s.guard.commit, []byte(envelope))
	if err != nil {
		return nil, s.bodyError(err)
	}
	s.sc.mute(false, "")
	// QUIT ends the batch (RFC 2920 allows it last in a group): its reply,
	// which comes right behind the others, shows that they were read in
	// step (see inStep).
	s.sc.writeWithin([]byte("QUIT\r\n"), quitTimeout)
	// Every reply awaited from here on may be the one that would have said
	// the message was stored.
	const maybeStored = " -- message may be sent more than once"
	rep, err := s.readReply(s.cmdWait)
	if err != nil {
		return nil, s.netError("sending MAIL FROM"+maybeStored, err)
	}
	if e := s.mailReply(rep, nil); e != nil {
		// Without MAIL, no RCPT and no message: BDAT consumed its octets
		// and was refused.
		return nil, e
	}
	rep, err = s.readReply(s.cmdWait)
	if err != nil {
		return nil, s.netError("sending RCPT TO"+maybeStored, err)
	}
	var rejected []rejection
	if e := s.rcptReply(rep, nil, msg.Recipients[0], &rejected); e != nil {
		return nil, e
	}
	if len(rejected) > 0 {
		return nil, rcptError(s.host, rejected, 1)
	}
	for i := 1; i < chunks; i++ {
		rep, err := s.readReply(s.cmdWait)
		if err != nil {
			return nil, s.netError("sending BDAT"+maybeStored, err)
		}
		if rep.Code/100 != 2 {
			// A chunk refused: the server drops the transaction (RFC 3030
			// section 3), and refuses the chunks after it.
			return nil, s.unexpected(rep, "BDAT")
		}
	}
	rep, err = s.readReply(s.dataWait)
	if err != nil {
		return nil, s.netError("sending end of data"+maybeStored, err)
	}
	res, err := s.endOfData(rep)
	if err != nil {
		return nil, err
	}
	if e := s.inStep(); e != nil {
		return nil, e
	}
	return res, nil
}

// quitReplyWait bounds the wait for the reply to a pipelined QUIT once
// every other reply is in: it comes with them, or not at all.
const quitReplyWait = 10 * time.Second

// inStep reads the reply to the QUIT that ended a BDAT batch, after a 2xx
// to the message. Replies are read by their place in the batch, and with
// BDAT nothing else (DATA's 354) shows that they are in step: a server
// that sent one reply too many on the way (two to MAIL, say) has had its
// reply to RCPT read as the reply to the message, and its real reply to
// the message comes where the 221 should. Anything but a 2xx there is
// such a reply: the outcome is unknown. A server that hangs up without
// answering QUIT cannot be checked, and its 2xx stands.
func (s *session) inStep() *Error {
	rep, err := s.readReply(min(s.cmdWait, quitReplyWait))
	if err != nil || rep.Code/100 == 2 {
		return nil
	}
	return fail("4.5.0", nil, "host %s sent replies out of step with the commands (%s where the reply to QUIT should be) -- message may be sent more than once", s.host, replyText(smtpError(rep)))
}

// mailReply judges the reply to MAIL FROM (err, when reading it failed).
func (s *session) mailReply(rep *reply.Reply, err error) *Error {
	if err != nil {
		return s.tlsFailed(s.netError("sending MAIL FROM", err))
	}
	if rep.Code/100 != 2 {
		return s.unexpected(rep, "MAIL FROM")
	}
	return nil
}

// rcptReply judges the reply to RCPT TO for rcpt: a refusal is added to
// rejected, for rcptError to report them all; a failure to read it, or a
// reply that makes no sense, is returned.
func (s *session) rcptReply(rep *reply.Reply, err error, rcpt string, rejected *[]rejection) *Error {
	if err != nil {
		return s.tlsFailed(s.netError("sending RCPT TO", err))
	}
	switch rep.Code / 100 {
	case 2:
	case 4, 5:
		*rejected = append(*rejected, rejection{rcpt, smtpError(rep)})
	default:
		return s.unexpected(rep, "RCPT TO")
	}
	return nil
}

// dataReply judges the reply to DATA: 354 is the go-ahead.
func (s *session) dataReply(rep *reply.Reply, err error) *Error {
	if err != nil {
		return s.tlsFailed(s.netError("sending DATA command", err))
	}
	if rep.Code != 354 {
		return s.unexpected(rep, "DATA")
	}
	return nil
}

// Step 7: after the 354, the body, the final dot and its reply.
func (s *session) data(msg *Message) (*Result, error) {
	// The body and its final dot stay out of the transcript.
	s.sc.mute(true, "[message body, then .]")
	if err := writeBody(s.sc, msg.Body, s.guard.commit); err != nil {
		return nil, s.bodyError(err)
	}
	rep, err := s.readReply(s.dataWait)
	s.sc.mute(false, "")
	if err != nil {
		return nil, s.netError("sending end of data -- message may be sent more than once", err)
	}
	res, err := s.endOfData(rep)
	if err == nil {
		s.quit(nil)
	}
	return res, err
}

// bodyError is the failure of writeBody or writeChunks: the final dot or
// the LAST chunk was not sent, and the message is not delivered.
func (s *session) bodyError(err error) *Error {
	var rerr *bodyReadError
	switch {
	case errors.As(err, &rerr):
		// Never end the message after a partial body: closing the
		// connection without it makes the server discard the message.
		s.raw.Close()
		switch {
		case s.guard.aborted() || s.stop.Err() != nil:
			return interrupted(s.stop, "sending the message body")
		case s.soft.Err() != nil || s.hard.Err() != nil:
			// soft, which the input is read under, can end a moment
			// before hard at the same deadline.
			return fail("4.3.0", rerr.err, "message not sent: the delivery deadline passed while reading it from the input")
		}
		return fail("4.3.0", rerr.err, "message not sent: %v", rerr.err)
	case errors.Is(err, errNotCommitted):
		return interrupted(s.stop, "sending the message body")
	}
	return s.netError("sending message body", err)
}

// endOfData judges the reply to the final dot or to BDAT LAST: a 2xx is
// a delivery.
func (s *session) endOfData(rep *reply.Reply) (*Result, error) {
	r := smtpError(rep)
	switch rep.Code / 100 {
	case 2:
	case 4, 5:
		return nil, replyError(s.host, r, "end of DATA")
	default:
		return nil, fail("4.5.0", nil, "host %s sent an unexpected reply while sending end of data -- message may be sent more than once: %s", s.host, replyText(r))
	}
	res := &Result{Target: s.target, Code: rep.Code, Text: printable.Line(r.Message, reply.MaxReply)}
	if validEnhanced(r.EnhancedCode) {
		res.Enhanced = fmt.Sprintf("%d.%d.%d", r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2])
	}
	return res, nil
}

// mailFrom is the MAIL FROM command, with the parameters the server
// understands and the message needs.
func mailFrom(ext map[string]string, msg *Message) string {
	var b strings.Builder
	fmt.Fprintf(&b, "MAIL FROM:<%s>", msg.Sender)
	if _, ok := ext["8BITMIME"]; ok {
		b.WriteString(" BODY=8BITMIME")
	}
	if _, ok := ext["SIZE"]; ok && msg.Size > 0 {
		fmt.Fprintf(&b, " SIZE=%d", msg.Size)
	}
	if needsSMTPUTF8(msg) {
		b.WriteString(" SMTPUTF8")
	}
	return b.String()
}

func rcptTo(rcpt string) string { return "RCPT TO:<" + rcpt + ">" }

type rejection struct {
	rcpt  string
	reply *smtp.SMTPError
}

// rcptError reports rejected recipients. With one recipient it is Postfix's
// own wording; with several, every rejected one is named, and the failure
// is temporary if any rejection was.
func rcptError(host string, rejected []rejection, total int) *Error {
	first := replyError(host, rejected[0].reply, "RCPT TO")
	if len(rejected) == 1 && total == 1 {
		return first
	}
	for _, r := range rejected {
		if e := replyError(host, r.reply, "RCPT TO"); e.Temporary() {
			first = e
			break
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "host %s rejected %d of %d recipients, nothing was sent:", host, len(rejected), total)
	for i, r := range rejected {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " <%s>: %s", r.rcpt, replyText(r.reply))
	}
	b.WriteString(" (in reply to RCPT TO command)")
	return &Error{Status: first.Status, Msg: b.String(), Reply: first.Reply, Err: first.Err}
}

func needsSMTPUTF8(msg *Message) bool {
	for _, a := range append([]string{msg.Sender}, msg.Recipients...) {
		for i := 0; i < len(a); i++ {
			if a[i] >= 0x80 {
				return true
			}
		}
	}
	return false
}
