package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/check"
)

// "onionmx check" is a monitoring plugin (package check). It speaks the
// monitoring systems' language, not Postfix's: its output goes to stdout,
// starts with "ONIONMX <STATUS> - ", and its exit status is 0 OK, 1
// WARNING, 2 CRITICAL or 3 UNKNOWN, usage errors included. So it reports
// everything itself and returns only the status to run.

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "check onion MXs through Tor without sending mail: a monitoring plugin (Nagios, Icinga, Sensu, check_mk)",
		ArgsUsage: "TARGET...",
		Description: "Each TARGET is \"[x.onion]:port\", \"x.onion\" or a mail domain, resolved as deliver\n" +
			"resolves it (every target of its route is checked). All are checked at once:\n" +
			"connect through Tor, greeting, EHLO, QUIT; the time is from the connect to the\n" +
			"end of the reply to EHLO. Flags go before the targets.\n\n" +
			"Exit status and first line (ONIONMX <STATUS> - ... | performance data):\n" +
			"  0 OK        every target answered within --warn, and none relays: with\n" +
			"              --relay-test, each refused RCPT TO a foreign domain as relaying\n" +
			"  1 WARNING   some targets failed, or answered slower than --warn; or all failed\n" +
			"              but an SMTP server answered (Tor works); or a relay test proved nothing\n" +
			"              (RCPT TO deferred, or refused for another reason than relaying)\n" +
			"  2 CRITICAL  the SocksPort does not answer SOCKS5, or no target answered through\n" +
			"              Tor (failed on the way, or slower than --crit): the local Tor is the\n" +
			"              common factor, restart it; or --relay-test found an open relay\n" +
			"  3 UNKNOWN   usage or configuration error; no target has a route",
		Flags: []cli.Flag{
			socksFlag,
			&cli.StringFlag{Name: "helo", Usage: "EHLO `NAME` (default: this host's fully qualified name)"},
			durationFlag("timeout", check.DefaultTimeout, "`DURATION` of the whole check; keep it below the monitoring system's own timeout (often 60s)"),
			durationFlag("warn", check.DefaultWarn, "a target slower than this `DURATION` is a WARNING"),
			durationFlag("crit", check.DefaultCrit, "a target slower than this `DURATION` counts as failed"),
			&cli.BoolFlag{Name: "relay-test", Usage: "after EHLO, MAIL FROM and RCPT TO <" + check.ProbeAddress + ">: CRITICAL if accepted (an open relay), OK only if refused as relaying; point it at your own onion"},
			&cli.StringFlag{Name: "probe-sender", Usage: "the relay test's MAIL FROM `ADDRESS` (default: the recipient, " + check.ProbeAddress + "); one the receiver's sender restrictions accept, or <> for the null sender"},
			mapFlag,
			dnsFlag,
			dnssecFlag,
			dnsViaTorFlag,
		},
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			if herr, ok := askedForHelp(c, err, "check"); ok {
				return herr
			}
			return checkUnknown(c, err.Error())
		},
		Action: runCheck,
	}
}

// checkUnknown reports a check that could not run: UNKNOWN, exit 3.
func checkUnknown(c *cli.Context, msg string) error {
	check.WriteUnknown(c.App.Writer, msg)
	return cli.Exit("", int(check.Unknown))
}

func runCheck(c *cli.Context) (err error) {
	defer func() {
		// A panic would otherwise exit 75, which monitoring systems do not
		// know: report it as UNKNOWN.
		if p := recover(); p != nil {
			err = checkUnknown(c, fmt.Sprintf("internal error: panic: %v", p))
		}
	}()
	timeout, warn, crit := duration(c, "timeout"), duration(c, "warn"), duration(c, "crit")
	switch {
	case timeout <= 0 || warn <= 0 || crit <= 0:
		return checkUnknown(c, "--timeout, --warn and --crit must be positive")
	case warn > crit:
		return checkUnknown(c, fmt.Sprintf("--warn %s is more than --crit %s", warn, crit))
	}
	var sender string
	if c.IsSet("probe-sender") {
		if !c.Bool("relay-test") {
			return checkUnknown(c, "--probe-sender is the sender of the relay test: it needs --relay-test")
		}
		if sender, err = check.ParseProbeSender(c.String("probe-sender")); err != nil {
			return checkUnknown(c, flagError("probe-sender", c.String("probe-sender"), err).Error())
		}
	}
	targets, err := check.ParseTargets(c.Args().Slice())
	if err != nil {
		return checkUnknown(c, err.Error())
	}
	dialer, err := socksDialer(c)
	if err != nil {
		return checkUnknown(c, err.Error())
	}
	resolver, err := newResolver(c)
	if err != nil {
		return checkUnknown(c, err.Error())
	}
	helo, _ := heloName(c)
	if err := checkHelo(helo); err != nil {
		return checkUnknown(c, err.Error())
	}
	checker := &check.Checker{
		SOCKS:       dialer,
		Resolver:    resolver,
		Helo:        helo,
		Timeout:     timeout,
		Warn:        warn,
		Crit:        crit,
		RelayTest:   c.Bool("relay-test"),
		ProbeSender: sender,
	}
	report, err := checker.Run(c.Context, targets)
	if err != nil {
		return checkUnknown(c, err.Error())
	}
	report.Write(c.App.Writer)
	if report.Status == check.OK {
		return nil
	}
	return cli.Exit("", int(report.Status))
}
