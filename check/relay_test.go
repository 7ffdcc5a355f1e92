package check

import (
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// relayCheck runs the relay test against a scripted server that answers
// MAIL FROM with mail and RCPT TO with rcpt.
func relayCheck(t *testing.T, c func(*Checker), mail, rcpt string) (*Report, string, *scripted) {
	t.Helper()
	o := oniontest.New()
	srv := &scripted{mail: mail, rcpt: rcpt}
	socks := fakeTor(t, map[string]sockstest.Response{o: {Handle: srv.handle}})
	ch := checker(socks)
	ch.RelayTest = true
	if c != nil {
		c(ch)
	}
	r, out := run(t, ch, "["+o+"]:25")
	return r, out, srv
}

// The replies of real servers to RCPT TO a foreign domain from a stranger.
// Only a refusal to relay passes: any other refusal (the sender, the
// mailbox, the client, a policy) says nothing about relaying, and a server
// that relays for other senders or clients would give it too.
func TestRelayRefusalWordings(t *testing.T) {
	const p = "<probe@onionmx-relay-test.invalid>"
	relay := []struct{ source, reply string }{
		{"Postfix reject_unauth_destination", "554 5.7.1 " + p + ": Relay access denied"},
		{"Postfix, relay_domains_reject_code = 550", "550 5.7.1 " + p + ": Relay access denied"},
		{"Exim's default configure (acl_check_rcpt)", "550 relay not permitted"},
		{"Exim, older configurations", "550 relaying to " + p + " prohibited by administrator"},
		{"Sendmail check_rcpt", "550 5.7.1 " + p + "... Relaying denied"},
		{"Sendmail, with AUTH", "550 5.7.1 " + p + "... Relaying denied. Proper authentication required."},
		{"Sendmail, no reverse DNS", "550 5.7.1 " + p + "... Relaying denied. IP name lookup failed [127.0.0.1]"},
		{"Exchange 2013 and later", "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"},
		{"Exchange Online", "550 5.7.64 TenantAttribution; Relay Access Denied"},
		{"Exchange 2003 to 2010, IIS SMTP", "550 5.7.1 Unable to relay for probe@onionmx-relay-test.invalid"},
		{"qmail-smtpd rcpthosts", "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"},
		{"chasquid", "503 5.7.1 Relay not allowed"},
		{"Stalwart", "550 5.1.2 Relay not allowed."},
		{"Courier", "513 Relaying denied."},
		{"Ipswitch IMail", "571 probe@onionmx-relay-test.invalid prohibited. We do not relay"},
		{"a multi-line refusal", "550-5.7.1 Relaying denied\r\n550 5.7.1 See https://mx.example/policy"},
	}
	other := []struct{ source, reply, hint string }{
		// The case of issue 9: Postfix's smtpd_delay_reject = yes gives the
		// sender's rejection at RCPT TO.
		{"Postfix reject_unknown_sender_domain (unknown_address_reject_code = 550)",
			"550 5.1.8 " + p + ": Sender address rejected: Domain not found", "the sender was refused"},
		{"Postfix check_sender_access REJECT", "554 5.7.1 " + p + ": Sender address rejected: Access denied", "the sender was refused"},
		{"Postfix reject_unknown_recipient_domain", "550 5.1.2 " + p + ": Recipient address rejected: Domain not found", "only a refusal to relay"},
		{"Postfix reject_unlisted_recipient, relay domains", "550 5.1.1 " + p + ": Recipient address rejected: User unknown in relay recipient table", "only a refusal to relay"},
		{"Postfix permit_auth_destination, reject", "554 5.7.1 " + p + ": Recipient address rejected: Access denied", "only a refusal to relay"},
		{"Postfix reject_rbl_client", "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using relays.ordb.org", "only a refusal to relay"},
		{"Postfix reject_unknown_client_hostname", "550 5.7.1 Client host rejected: cannot find your hostname, [127.0.0.1]", "only a refusal to relay"},
		{"Postfix reject_non_fqdn_helo_hostname, a HELO name that reads relay", "504 5.5.2 <relay>: Helo command rejected: need fully-qualified hostname", "only a refusal to relay"},
		{"a sender address that reads relay", "554 5.7.1 <relay@example.org>: Sender address rejected: Access denied", "the sender was refused"},
		{"Postfix check_sender_access, an administrator's words", "554 5.7.1 " + p + ": Sender address rejected: no relaying for this sender", "the sender was refused"},
		{"Postfix check_client_access, an administrator's words", "554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: no relaying from Tor", "only a refusal to relay"},
		{"OpenSMTPD, no matching rule: the same words as an unknown user", "550 Invalid recipient", "only a refusal to relay"},
		{"maddy's default configuration: the code of an unknown mailbox", "550 5.1.1 User not local", "only a refusal to relay"},
		{"Exchange Online directory-based edge blocking", "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", "only a refusal to relay"},
		{"a content or spam policy", "550 5.7.1 Message rejected as spam by Content Filtering", "only a refusal to relay"},
		{"a bare code", "550", "only a refusal to relay"},
	}
	for _, tc := range relay {
		t.Run(tc.source, func(t *testing.T) {
			r, out, _ := relayCheck(t, nil, "250 2.1.0 Ok", tc.reply)
			if r.Status != OK || r.Results[0].Relay != RelayRejected {
				t.Fatalf("status %v, relay %v; want OK, passed", r.Status, r.Results[0].Relay)
			}
			first, _, _ := strings.Cut(tc.reply, "\r\n")
			if first[3] == '-' {
				first = first[:3] + " " + first[4:]
			}
			if !strings.Contains(out, "; relay test passed: RCPT TO:<probe@onionmx-relay-test.invalid> rejected: "+first) {
				t.Errorf("the reply is not quoted:\n%s", out)
			}
		})
	}
	for _, tc := range other {
		t.Run(tc.source, func(t *testing.T) {
			r, out, _ := relayCheck(t, nil, "250 2.1.0 Ok", tc.reply)
			if r.Status != Warning || r.Results[0].Relay != RelayInconclusive {
				t.Fatalf("status %v, relay %v; want WARNING, inconclusive", r.Status, r.Results[0].Relay)
			}
			summary, _ := checkFormat(t, out, Warning, 1)
			if !strings.HasSuffix(summary, "; relay test inconclusive: ["+r.Results[0].Target.Host+"]:25") {
				t.Errorf("summary %q", summary)
			}
			want := "; relay test inconclusive: RCPT TO:<probe@onionmx-relay-test.invalid> refused, but not as relaying: " + tc.reply
			if !strings.Contains(out, want) || !strings.Contains(out, tc.hint) {
				t.Errorf("no %q and %q in:\n%s", want, tc.hint, out)
			}
		})
	}
}

// Issue 9, case 11: an open relay whose RCPT TO reply rejects the probe's
// sender (Postfix's smtpd_delay_reject) must not pass.
func TestRelayTestSenderRejectedAtRcpt(t *testing.T) {
	o := oniontest.New()
	sink := smtptest.New(t)
	sink.SetHooks(noMail(t, smtptest.Hooks{Rcpt: func(*smtp.Conn, string) error {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 8},
			Message: "<probe@onionmx-relay-test.invalid>: Sender address rejected: Domain not found"}
	}}))
	c := checker(fakeTor(t, map[string]sockstest.Response{o: {Dial: sink.Addr}}))
	c.RelayTest = true
	r, out := run(t, c, o)
	if r.Status != Warning || r.Results[0].Relay != RelayInconclusive {
		t.Fatalf("status %v, relay %v; want WARNING and inconclusive", r.Status, r.Results[0].Relay)
	}
	checkFormat(t, out, Warning, 1)
	if want := o + ": OK - EHLO answered in "; !strings.Contains(out, want) {
		t.Errorf("no %q in:\n%s", want, out)
	}
	if want := "; relay test inconclusive: RCPT TO:<probe@onionmx-relay-test.invalid> refused, but not as relaying: 550 5.1.8 <probe@onionmx-relay-test.invalid>: Sender address rejected: Domain not found (the sender was refused"; !strings.Contains(out, want) {
		t.Errorf("no %q in:\n%s", want, out)
	}
}

// With a sender the receiver accepts, the relay test gets to the relay
// check: the sink below refuses senders in a domain without DNS (as
// reject_unknown_sender_domain does, at RCPT TO), and relaying for anyone.
func TestProbeSender(t *testing.T) {
	o := oniontest.New()
	sink := smtptest.New(t)
	var mu sync.Mutex
	var from []string
	sink.SetHooks(noMail(t, smtptest.Hooks{
		Mail: func(_ *smtp.Conn, f string) error {
			mu.Lock()
			defer mu.Unlock()
			from = append(from, f)
			return nil
		},
		Rcpt: func(*smtp.Conn, string) error {
			mu.Lock()
			defer mu.Unlock()
			if f := from[len(from)-1]; strings.HasSuffix(f, ".invalid") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 8}, Message: "<" + f + ">: Sender address rejected: Domain not found"}
			}
			return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<probe@onionmx-relay-test.invalid>: Relay access denied"}
		},
	}))
	c := checker(fakeTor(t, map[string]sockstest.Response{o: {Dial: sink.Addr}}))
	c.RelayTest = true

	r, _ := run(t, c, o)
	if r.Status != Warning {
		t.Errorf("default sender: status %v, want WARNING", r.Status)
	}
	for _, sender := range []string{"postmaster@example.org", NullSender} {
		c.ProbeSender = sender
		r, out := run(t, c, o)
		if r.Status != OK || r.Results[0].Relay != RelayRejected {
			t.Errorf("sender %s: status %v, relay %v; want OK, passed", sender, r.Status, r.Results[0].Relay)
		}
		if want := "; relay test passed: RCPT TO:<probe@onionmx-relay-test.invalid> rejected: 554 5.7.1 <probe@onionmx-relay-test.invalid>: Relay access denied\n"; !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"probe@onionmx-relay-test.invalid", "postmaster@example.org", ""}; strings.Join(from, " ") != strings.Join(want, " ") {
		t.Errorf("MAIL FROM %q, want %q", from, want)
	}
}

// The sender is named where MAIL FROM is refused.
func TestProbeSenderRefused(t *testing.T) {
	r, out, srv := relayCheck(t, func(c *Checker) { c.ProbeSender = NullSender }, "550 5.7.1 No bounces here", "250 2.1.5 Ok")
	if r.Status != Warning || r.Results[0].Relay != RelayInconclusive {
		t.Fatalf("status %v, relay %v", r.Status, r.Results[0].Relay)
	}
	if want := "; relay test inconclusive: MAIL FROM:<> not accepted (550 5.7.1 No bounces here), so RCPT TO was not tried: give a sender it accepts with --probe-sender\n"; !strings.Contains(out, want) {
		t.Errorf("no %q in:\n%s", want, out)
	}
	if got := srv.commands(); len(got) != 4 || got[1] != "MAIL FROM:<> BODY=8BITMIME" {
		t.Errorf("commands %q", got)
	}
}

func TestParseProbeSender(t *testing.T) {
	for in, want := range map[string]string{
		"postmaster@example.org":     "postmaster@example.org",
		"<postmaster@example.org>":   "postmaster@example.org",
		"<>":                         NullSender,
		"a+tag@mail.example-1.org":   "a+tag@mail.example-1.org",
		"\"odd\"@example.org":        "\"odd\"@example.org",
		"probe@onionmx-test.invalid": "probe@onionmx-test.invalid",
	} {
		if got, err := ParseProbeSender(in); err != nil || got != want {
			t.Errorf("ParseProbeSender(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"":                                       "want an address user@domain, or <> for the null sender",
		"postmaster":                             "want an address user@domain, or <> for the null sender",
		"@example.org":                           "want an address user@domain, or <> for the null sender",
		"postmaster@":                            "want an address user@domain, or <> for the null sender",
		"<<>>":                                   "want an address user@domain, or <> for the null sender",
		"a@b@":                                   "want an address user@domain, or <> for the null sender",
		"postmaster@localhost":                   "the domain is not fully qualified (reject_non_fqdn_sender refuses it)",
		"postmaster@example.org.":                "the domain is not a domain name",
		"postmaster@[127.0.0.1]":                 "the domain is not a domain name",
		"postmaster@-x.example.org":              "the domain is not a domain name",
		"a b@example.org":                        "a space",
		"a@example.org\r\nRCPT":                  "a control character",
		"a\x00@example.org":                      "a control character",
		"ä@example.org":                          "not ASCII",
		strings.Repeat("a", 65) + "@example.org": "the local part is longer than 64 characters",
	} {
		_, err := ParseProbeSender(in)
		if err == nil || strings.Contains(err.Error(), "--") || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseProbeSender(%q): %v, want %q", in, err, want)
		}
	}
}

// Postfix's reject_unknown_sender_domain defers by default
// (unknown_address_reject_code = 450): inconclusive, and the hint names
// the sender.
func TestRelayTestSenderDeferred(t *testing.T) {
	const reply = "450 4.1.8 <probe@onionmx-relay-test.invalid>: Sender address rejected: Domain not found"
	r, out, _ := relayCheck(t, nil, "250 2.1.0 Ok", reply)
	if r.Status != Warning || r.Results[0].Relay != RelayInconclusive {
		t.Fatalf("status %v, relay %v", r.Status, r.Results[0].Relay)
	}
	if want := "; relay test inconclusive: RCPT TO:<probe@onionmx-relay-test.invalid> deferred, not rejected: " + reply + " (the sender was refused: give one it accepts with --probe-sender)\n"; !strings.Contains(out, want) {
		t.Errorf("no %q in:\n%s", want, out)
	}
}
