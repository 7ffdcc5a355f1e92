// Package check is onionmx's health check: what an operator puts in a
// monitoring system (Nagios, Icinga, Sensu, check_mk: the monitoring-plugin
// conventions) and in a timer that restarts Tor. It never sends mail, and
// its verdict tells trouble with the local Tor from trouble at the remote
// end.
//
// A check goes through these steps:
//
//  1. Probe the SocksPort: connect, offer the SOCKS5 authentication methods
//     and hang up on the answer, before any CONNECT, so that Tor builds no
//     circuit for it. If nothing answers, or what answers is not SOCKS5,
//     the local Tor is down: CRITICAL, and no target is tried.
//  2. Resolve each target as deliver does (package lookup): a bracketed
//     nexthop or an onion name needs no lookup; a mail domain goes through
//     the static maps, then its SRV records, and every usable target of
//     its route is checked.
//  3. For all targets at once: connect through Tor, read the greeting and
//     say EHLO (HELO when EHLO is not understood). The time from the start
//     of the connect to the end of the reply to EHLO is the target's time.
//  4. With the relay test: MAIL FROM the probe's sender (ProbeAddress, or
//     Checker.ProbeSender), RCPT TO a foreign address (ProbeAddress), then
//     RSET. Never DATA.
//  5. QUIT.
//  6. The verdict, below.
//
// One deadline (Checker.Timeout) bounds the whole check, resolution
// included: it is enforced by closing the connections, since go-smtp
// clears its own deadlines after each command.
//
// Every reply is read through an internal/reply.Reader, in bounded memory
// whatever a remote sends: a reply line longer than reply.MaxLine (2048)
// octets, a reply longer than reply.MaxReply (64 KiB), a line that is not a
// reply line, or a continuation line with another code breaks the protocol.
// The connection is then closed without another command, and the target
// counts as refused by the remote ("not SMTP: the server sent a reply line
// longer than 2048 bytes ..."), never as a failure on the way: Tor
// carried the bytes. A reply code with no text ("250" CRLF, which RFC
// 5321's grammar allows) is accepted everywhere.
//
// Only a refusal to relay passes the relay test. A 5xx reply to RCPT TO is
// one when both
//
//   - its text names relaying: the word "relay", "relaying" or "relayed"
//     (qmail: "rcpthosts"), as a word of its own; addresses (in angle
//     brackets or with an "@") and host names ("relays.ordb.org") are not
//     read;
//   - its enhanced status code, if it has one (at the start of the text, or
//     qmail's "(#5.7.1)" at its end), is 5.7.1, 5.7.54, 5.7.64 or 5.1.2.
//     Any other code names another cause: 5.1.8 the sender, 5.1.1 the
//     mailbox, 5.5.x the syntax, 5.4.x the routing.
//
// and it is not what Postfix says of a restriction on the sender, the
// client or the HELO name ("Sender address rejected: ...", "Client host
// rejected: ...", "Helo command rejected: ..."), whose words an
// administrator may write ("REJECT no relaying for you").
//
// That takes in Postfix's reject_unauth_destination ("554 5.7.1 <...>:
// Relay access denied"), Exim ("550 relay not permitted"), Sendmail ("550
// 5.7.1 <...>... Relaying denied"), Exchange ("550 5.7.54 SMTP; Unable to
// relay recipient in non-accepted domain", "550 5.7.64 TenantAttribution;
// Relay Access Denied", earlier "550 5.7.1 Unable to relay"), qmail ("553
// sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"),
// chasquid ("503 5.7.1 Relay not allowed"), Stalwart ("550 5.1.2 Relay not
// allowed.") and Courier ("513 Relaying denied."). Any other refusal is
// inconclusive: a sender rejection (Postfix's smtpd_delay_reject = yes
// gives it at RCPT TO: "550 5.1.8 <...>: Sender address rejected: Domain
// not found"), an unknown mailbox, a rejected client, a policy. An open
// relay gives those too, to this sender or this client, and would relay
// for another. OpenSMTPD's "550 Invalid recipient" is inconclusive for the
// same reason: it is also its answer to an unknown local user.
//
// The verdict, from worst to best:
//
//   - CRITICAL: the SocksPort does not answer SOCKS5; or a target accepted
//     the foreign recipient of the relay test (an open relay); or no target
//     answered through Tor: every target that was tried failed on the way
//     (a SOCKS error, a timeout, a lost connection, or an answer slower than
//     Crit) and none was refused by its SMTP server. The local Tor is then
//     the common factor: restart it.
//   - UNKNOWN: nothing could be checked: no target has a route (DNS failed,
//     no SRV record), or the SocksPort's socket may not be opened (a
//     permission problem, which restarting Tor does not fix).
//   - WARNING: some targets failed; or all failed but at least one SMTP
//     server answered with an error or broke the protocol (Tor works: the
//     remotes refuse); or an answer took longer than Warn; or the relay
//     test proved nothing (a 4xx reply, a rejected MAIL FROM, a refusal
//     for another reason than relaying, a reply that breaks the protocol).
//   - OK: every target answered EHLO within Warn, and, with the relay
//     test, each refused to relay.
package check

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/reply"
	"github.com/onionmx/onionmx/internal/timeout"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

// Defaults of the command's flags.
const (
	// DefaultTimeout bounds a whole check. Nagios (service_check_timeout),
	// Icinga 2 (a CheckCommand's timeout) and NRPE (command_timeout) all
	// kill a plugin after 60 seconds and report only that it was killed;
	// 50 s leaves the plugin time to say what it found. A cold onion
	// connection (descriptor, introduction, rendezvous) takes seconds to
	// tens of seconds; Tor itself gives up after its SocksTimeout, 2
	// minutes.
	DefaultTimeout = 50 * time.Second
	// DefaultWarn: slower than this, a target is a WARNING. A warm circuit
	// answers in well under a second, a cold one in a few seconds to about
	// twenty.
	DefaultWarn = 20 * time.Second
	// DefaultCrit: slower than this, a target counts as failed.
	DefaultCrit = 40 * time.Second
	// DefaultProbeTimeout bounds the SocksPort probe. Tor answers the
	// SOCKS5 method negotiation at once, without any network traffic: ten
	// seconds of silence mean a stuck process.
	DefaultProbeTimeout = 10 * time.Second
)

// quitTimeout bounds the wait for the reply to QUIT: the check is over by
// then, and nothing the server says can change it.
const quitTimeout = 5 * time.Second

// ProbeAddress is the recipient of the relay test, and its sender unless
// Checker.ProbeSender says otherwise. The .invalid top-level domain (RFC
// 2606) is nobody's, so it is foreign to every server, and mail to it can
// never be delivered, even by an open relay.
const ProbeAddress = "probe@onionmx-relay-test.invalid"

// Status is a monitoring plugin's result, and its exit status.
type Status int

// The monitoring-plugin statuses, in their exit status order.
const (
	OK Status = iota
	Warning
	Critical
	Unknown
)

func (s Status) String() string {
	switch s {
	case OK:
		return "OK"
	case Warning:
		return "WARNING"
	case Critical:
		return "CRITICAL"
	}
	return "UNKNOWN"
}

// Checker checks onion MXs through Tor. Zero durations mean the defaults.
type Checker struct {
	// SOCKS is Tor's SocksPort.
	SOCKS *tor.SOCKSDialer
	// Resolver resolves mail domains to onion targets, as for deliver.
	Resolver *lookup.Resolver
	// Helo is the name to send in EHLO.
	Helo string
	// Timeout bounds the whole check; Warn and Crit are the thresholds for
	// a target's time.
	Timeout, Warn, Crit time.Duration
	// RelayTest, when set, makes sure that each target refuses to relay.
	RelayTest bool
	// ProbeSender is the relay test's sender (see ParseProbeSender):
	// ProbeAddress when empty, NullSender for MAIL FROM:<>.
	ProbeSender string
	// ProbeTimeout bounds the SocksPort probe.
	ProbeTimeout time.Duration
}

// Outcome is how far the check of a target got.
type Outcome int

const (
	// Answered: the target answered EHLO (see Result.Elapsed for how fast).
	Answered Outcome = iota
	// NoRoute: the argument has no usable onion route; nothing was tried.
	NoRoute
	// Transit: Tor could not connect, or the connection timed out or was
	// lost before the reply to EHLO. The fault may be local or remote.
	Transit
	// Refused: the remote SMTP server answered, with an error or with
	// something that is not SMTP or beyond the limits of a reply; or Tor's
	// reply shows that the onion service itself answered, or that the
	// address is wrong (remoteSide). Tor works.
	Refused
	// Internal: the check itself failed (a bug).
	Internal
)

// Relay is the result of the relay test.
type Relay int

const (
	RelayUntested     Relay = iota
	RelayRejected           // a refusal to relay the foreign RCPT TO: not a relay
	RelayOpen               // a 2xx to the foreign RCPT TO: an open relay
	RelayInconclusive       // a 4xx, another refusal, a rejected MAIL FROM, a lost connection
)

// Result is the check of one target.
type Result struct {
	// Label names the target in the output and the performance data: the
	// argument, followed by "/[x.onion]:port" when a domain has several
	// targets.
	Label string
	// Arg is the argument the target comes from.
	Arg string
	// Target is the onion checked; zero with NoRoute.
	Target lookup.Target
	// Source says where the target comes from (lookup.Route.Source).
	Source  string
	Outcome Outcome
	// Connect is the time the SOCKS connect took, Tor's rendezvous
	// included; Elapsed the time from the start of the connect to the end
	// of the reply to EHLO. Both are set when the target answered.
	Connect, Elapsed time.Duration
	// Greeting is the first line of the server's greeting, if one came.
	Greeting string
	// Detail says why the target failed, on one line.
	Detail string
	Relay  Relay
	// RelayDetail is the reply that decided the relay test.
	RelayDetail string
}

// Report is the outcome of a check.
type Report struct {
	Status Status
	// Summary is the text of the status line.
	Summary string
	// SOCKS is the SocksPort's address; Probe why it failed, if it did.
	SOCKS   string
	Probe   error
	Results []Result
	// The thresholds, for the performance data.
	Warn, Crit, Timeout time.Duration
	// RelayTest is set when the targets were tested for open relaying.
	RelayTest bool
}

// ParseTargets parses the TARGET arguments: "[x.onion]:port", "x.onion",
// "x.onion:port" or a mail domain, as deliver's --nexthop. Repeated targets
// are checked once.
func ParseTargets(args []string) ([]string, error) {
	if len(args) == 0 {
		return nil, errors.New("no target given")
	}
	var out []string
	seen := map[string]bool{}
	for _, a := range args {
		if len(a) > 0 && a[0] == '-' {
			return nil, fmt.Errorf("%q: flags go before the targets", a)
		}
		nh, err := lookup.ParseNexthop(a)
		if err != nil {
			return nil, fmt.Errorf("target %q: %v", a, err)
		}
		switch {
		case nh.Literal || lookup.IsOnion(nh.Host):
			// Named by hand: a typo is a usage error, not a failed target.
			if err := lookup.CheckOnion(nh.Host); err != nil {
				return nil, fmt.Errorf("target %q: %v", a, err)
			}
		case nh.Port != 0:
			return nil, fmt.Errorf("target %q: a port goes with an onion or a bracketed nexthop, not with a mail domain", a)
		}
		if key := nh.String(); !seen[key] {
			seen[key] = true
			out = append(out, a)
		}
	}
	return out, nil
}

func (c *Checker) duration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Run checks the targets (see ParseTargets). Its error is a usage error;
// everything else is in the report.
func (c *Checker) Run(ctx context.Context, targets []string) (*Report, error) {
	targets, err := ParseTargets(targets)
	if err != nil {
		return nil, err
	}
	timeout := c.duration(c.Timeout, DefaultTimeout)
	r := &Report{
		SOCKS:     c.SOCKS.String(),
		Warn:      c.duration(c.Warn, DefaultWarn),
		Crit:      c.duration(c.Crit, DefaultCrit),
		Timeout:   timeout,
		RelayTest: c.RelayTest,
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	r.Probe = c.SOCKS.Probe(ctx, min(c.duration(c.ProbeTimeout, DefaultProbeTimeout), timeout))
	if r.Probe == nil {
		results := make([][]Result, len(targets))
		var wg sync.WaitGroup
		for i, t := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				results[i] = c.checkArg(ctx, t)
			}()
		}
		wg.Wait()
		for _, rs := range results {
			r.Results = append(r.Results, rs...)
		}
	} else {
		for _, t := range targets {
			r.Results = append(r.Results, Result{Label: t, Arg: t, Outcome: NotTried})
		}
	}
	r.Status, r.Summary = verdict(r)
	return r, nil
}

// checkArg resolves one argument and checks its targets at once.
func (c *Checker) checkArg(ctx context.Context, a string) (results []Result) {
	defer func() {
		if p := recover(); p != nil {
			results = []Result{{Label: a, Arg: a, Outcome: Internal, Detail: fmt.Sprintf("internal error: panic: %v", p)}}
		}
	}()
	nh, err := lookup.ParseNexthop(a)
	if err != nil { // ParseTargets checked it
		return []Result{{Label: a, Arg: a, Outcome: Internal, Detail: err.Error()}}
	}
	route, err := c.Resolver.Resolve(ctx, nh)
	if err != nil {
		return []Result{{Label: a, Arg: a, Outcome: NoRoute, Detail: err.Error()}}
	}
	results = make([]Result, len(route.Targets))
	var wg sync.WaitGroup
	for i, t := range route.Targets {
		label := a
		if len(route.Targets) > 1 {
			label = a + "/" + t.Nexthop()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					results[i] = Result{Outcome: Internal, Detail: fmt.Sprintf("internal error: panic: %v", p)}
				}
				results[i].Label, results[i].Arg, results[i].Target, results[i].Source = label, a, t, route.Source
			}()
			results[i] = c.checkTarget(ctx, t)
		}()
	}
	wg.Wait()
	return results
}

// checkTarget connects to one target, reads the greeting, says EHLO, runs
// the relay test if asked to, and says QUIT.
func (c *Checker) checkTarget(ctx context.Context, t lookup.Target) (res Result) {
	start := time.Now()
	raw, err := c.SOCKS.DialContext(ctx, "tcp", t.Addr())
	if err != nil {
		ce := tor.Classify(c.SOCKS.String(), t.Addr(), err, ctx.Err())
		res.Outcome = Transit
		if ce.Remote() {
			res.Outcome = Refused
		}
		res.Detail = ce.Error()
		if expired(ctx) {
			res.Detail += fmt.Sprintf(" (after %s, --timeout)", seconds(time.Since(start)))
		}
		return res
	}
	res.Connect = time.Since(start)
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()

	conn := newWatchConn(raw)
	client := smtp.NewClient(conn)
	// The check's deadline closes the connection before this expires.
	client.CommandTimeout = c.duration(c.Timeout, DefaultTimeout)
	err = client.Hello(c.Helo)
	res.Elapsed = time.Since(start)
	res.Greeting = conn.greeting()
	if err != nil {
		res.Outcome, res.Detail = helloError(ctx, conn, err, res.Elapsed)
		if res.Outcome == Refused {
			conn.quit(0)
		}
		return res
	}
	res.Outcome = Answered
	if c.RelayTest {
		res.Relay, res.RelayDetail = relayTest(client, conn, c.sender())
	}
	conn.quit(quitTimeout)
	return res
}

// helloError says why the greeting or EHLO failed. Before EHLO was sent,
// the failure is the greeting's.
func helloError(ctx context.Context, conn *watchConn, err error, elapsed time.Duration) (Outcome, string) {
	phase, cmd := "waiting for the greeting", "the greeting"
	if conn.wrote {
		phase, cmd = "waiting for the reply to "+conn.cmd, conn.cmd
	}
	var r *smtp.SMTPError
	var perr textproto.ProtocolError
	var rerr *reply.Error
	switch {
	case !conn.wrote && conn.lines > 0 && !isReplyLine(conn.first):
		return Refused, fmt.Sprintf("not SMTP: the server sent %q", clean(conn.first))
	case errors.As(err, &rerr):
		return Refused, conn.brokenDetail(rerr)
	case errors.As(err, &r) && !conn.wrote:
		return Refused, "the server refused to talk: " + replyLine(r)
	case errors.As(err, &r):
		return Refused, conn.cmd + " rejected: " + replyLine(r)
	case errors.As(err, &perr):
		return Refused, fmt.Sprintf("not SMTP: %s", perr)
	case expired(ctx):
		return Transit, fmt.Sprintf("timed out after %s (--timeout) %s", seconds(elapsed), phase)
	case timeout.Is(err):
		return Transit, fmt.Sprintf("timed out after %s %s", seconds(elapsed), phase)
	}
	return Transit, fmt.Sprintf("connection lost after %s %s: %v (%s never came)", seconds(elapsed), phase, err, cmd)
}

// expired reports whether the check's deadline has passed. The SOCKS dial
// may give up on the connection's deadline just before the context says so.
func expired(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// replyLine rebuilds a reply on one line: code, enhanced code, text.
func replyLine(r *smtp.SMTPError) string {
	s := strconv.Itoa(r.Code)
	if ec := r.EnhancedCode; ec != smtp.NoEnhancedCode && ec[0] > 0 {
		s += fmt.Sprintf(" %d.%d.%d", ec[0], ec[1], ec[2])
	}
	if r.Message != "" {
		s += " " + r.Message
	}
	return clean(s)
}
