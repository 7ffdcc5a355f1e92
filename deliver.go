package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/parent"
	"github.com/onionmx/onionmx/tor"
)

// "onionmx deliver" is the pipe(8) transport (package deliver): one message
// on stdin, one line of output, one sysexits status.

// deliverStatus is the exit status table, for the command's help and the
// man page.
const deliverStatus = `Exit status, with the one line of output (on stdout when delivered, on stderr
otherwise). pipe(8) defers on 75 and on output that starts with 4.x.y; it
bounces on everything else but 0.
  0                 delivered: "<onion>: <the remote's reply>"
  75 EX_TEMPFAIL    4.x.y: Tor or DNS trouble, a 4xx reply, a lost connection,
                    a malformed or oversized reply (4.5.0), an interruption by
                    a signal, or standard input ending because pipe(8) died
                    (4.3.0); deferred, tried again later
  78 EX_CONFIG      4.3.5: a usage or configuration error (a bad flag, a bad
                    static map or map entry, a nexthop that is not a usable
                    onion); deferred, never bounced
  67 EX_NOUSER      5.1.1: the remote rejected the recipient
  68 EX_NOHOST      5.4.4: no onion route; 5.1.2: the recipient's .onion domain
                    is not a usable v3 onion address, or Tor says it is invalid
  69 EX_UNAVAILABLE 5.x.y: any other 5xx reply; 5.3.4 too large for the server;
                    5.4.6 a mail loop
  65 EX_DATAERR     5.6.7: SMTPUTF8 needed and not offered
  77 EX_NOPERM      5.7.0: the onion needs Tor client authorization
With --exim, as Exim's pipe transport, 78 is 75: Exim defers only on the
statuses in its temp_errors, by default 75 and 73, and bounces on the others.`

func deliverCommand() *cli.Command {
	return &cli.Command{
		Name:        "deliver",
		Usage:       "deliver one message from stdin to an onion MX (a Postfix pipe(8) transport)",
		UsageText:   "onionmx deliver -f SENDER [--nexthop NEXTHOP] [OPTIONS] [--] RECIPIENT...",
		ArgsUsage:   "[--] RECIPIENT...",
		Description: deliverStatus,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "sender", Aliases: []string{"f"}, Usage: "envelope sender `ADDR`, required; empty is the null sender"},
			&cli.StringFlag{Name: "nexthop", Usage: "Postfix's ${nexthop}, the `NEXTHOP`: \"[x.onion]:port\", \"[x.onion]\", \"x.onion\", a list of those, or a mail domain; empty: the recipients' domain"},
			socksFlag,
			&cli.StringFlag{Name: "helo", EnvVars: []string{"ONIONMX_HELO"}, Usage: "EHLO `NAME`; ONIONMX_HELO in the environment gives it too, as master.cf can (pipe(8)'s argv cannot take $myhostname); default: this host's fully qualified name, formed as Postfix forms myhostname"},
			mapFlag,
			transportFlag,
			dnsFlag,
			dnssecFlag,
			dnsViaTorFlag,
			&cli.Int64Flag{Name: "size", Usage: "message size in `BYTES` (Postfix ${size}), for the SIZE extension"},
			durationFlag("timeout", deliver.DefaultTimeout, "`DURATION` of the whole delivery (keep it below Postfix's command_time_limit, 1000s)"),
			durationFlag("connect-timeout", deliver.DefaultConnectTimeout, "`DURATION` of the SOCKS connect, including Tor's onion rendezvous"),
			&cli.StringFlag{Name: "tls", Value: "none", Usage: "STARTTLS: none, may (when offered, certificate not verified) or require"},
			&cli.BoolFlag{Name: "no-chunking", Usage: "never send the message with BDAT (RFC 3030 CHUNKING), even to one recipient: a reply lost after BDAT LAST leaves the message perhaps delivered (see README)"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "SMTP transcript on stderr"},
			&cli.BoolFlag{Name: "exim", Usage: "run as Exim's pipe transport (exim4.conf.example): the sender (Exim's return path) from ONIONMX_SENDER and the route from ONIONMX_NEXTHOP in the environment, the recipients from $pipe_addresses; every usage or configuration error exits 75, which Exim defers, never 78, which it bounces"},
		},
		Action: runDeliver,
	}
}

func runDeliver(c *cli.Context) error {
	client, msg, guessed, err := deliverRequest(c)
	if err != nil {
		return err
	}
	nexthop := c.String("nexthop")
	if c.Bool("exim") {
		var env *eximEnv
		if env, err = eximEnviron(os.LookupEnv); err != nil {
			return err
		}
		if err := eximBatch(msg.Recipients); err != nil {
			return err
		}
		msg.Sender, nexthop, msg.RefuseFromLine = env.sender, env.nexthop, true
	}
	var orphaned <-chan struct{}
	if f, ok := msg.Body.(*os.File); ok && f == os.Stdin {
		// pipe(8) writes the message; trust its end only if pipe(8)
		// did not die in the middle of it.
		in, piped, restore := messageInput(f)
		defer restore()
		msg.Body = parent.Guard(in)
		// And once pipe(8) is gone (postfix stop), nobody will read the
		// outcome: Postfix delivers the message again later, so a
		// delivery that goes on can only make a second copy. pipe(8)
		// gives the message on a pipe; a file is a run by hand ("<
		// message.eml &"), whose shell may exit while the outcome goes
		// on to where it sent it.
		if piped {
			orphaned = parent.Exited()
		}
	}
	res, err := client.Deliver(interruptible(c.Context, orphaned), nexthop, msg)
	if err != nil {
		var ce *tor.ConnectError
		if errors.As(err, &ce) && ce.Kind == tor.NotSOCKS {
			e := deliver.AsError(err)
			e.Msg += " (check --socks)"
			return e
		}
		if e := deliver.AsError(err); guessed && e.Reply != nil {
			// The remote refused something, maybe for our name: say it
			// where the administrator will see it, in the line Postfix
			// logs.
			e.Msg += fmt.Sprintf(" (note: the EHLO name %s is a guess, this host's name has no domain; give --helo, e.g. Postfix's $myhostname)", client.Helo)
			return e
		}
		return err
	}
	fmt.Fprintln(c.App.Writer, truncate(res.Summary()))
	return nil
}

// deliverRequest reads deliver's command line: the client, the message
// (its body the command's input) and whether the EHLO name is a guess.
// Every error is a configuration error: deferred, never bounced.
func deliverRequest(c *cli.Context) (_ *deliver.Client, _ *deliver.Message, guessed bool, _ error) {
	// Checked here rather than with Required, which prints the help text
	// before the error: under pipe(8) the output is one line.
	exim := c.Bool("exim")
	switch {
	case exim && (c.IsSet("sender") || c.IsSet("nexthop")):
		return nil, nil, false, deliver.ConfigError(errors.New("--exim: the sender and the route come from the environment (ONIONMX_SENDER, ONIONMX_NEXTHOP), not from --sender or --nexthop"))
	case !exim && !c.IsSet("sender"):
		return nil, nil, false, deliver.ConfigError(errors.New("--sender is required (an empty value is the null sender)"))
	}
	rcpts := c.Args().Slice()
	if len(rcpts) == 0 {
		if exim {
			return nil, nil, false, deliver.ConfigError(errors.New("--exim: no recipients given (end the command with -- $pipe_addresses)"))
		}
		return nil, nil, false, deliver.ConfigError(errors.New("no recipients given"))
	}
	sender := c.String("sender")
	for _, a := range append([]string{sender}, rcpts...) {
		if strings.ContainsAny(a, "\r\n\x00") {
			return nil, nil, false, deliver.ConfigError(fmt.Errorf("address %q contains a control character", a))
		}
	}
	if c.Int64("size") < 0 {
		return nil, nil, false, deliver.ConfigError(errors.New("--size must not be negative"))
	}
	timeout, connectTimeout := duration(c, "timeout"), duration(c, "connect-timeout")
	if timeout <= 0 || connectTimeout <= 0 {
		return nil, nil, false, deliver.ConfigError(errors.New("--timeout and --connect-timeout must be positive"))
	}
	dialer, err := socksDialer(c)
	if err != nil {
		return nil, nil, false, deliver.ConfigError(err)
	}
	tlsMode, err := deliver.ParseTLSMode(c.String("tls"))
	if err != nil {
		return nil, nil, false, deliver.ConfigError(err)
	}
	resolver, err := newResolver(c)
	if err != nil {
		return nil, nil, false, err
	}
	helo, guessed := heloName(c)
	if err := checkHelo(helo); err != nil {
		return nil, nil, false, deliver.ConfigError(err)
	}
	client := &deliver.Client{
		Dialer:         dialer,
		Resolver:       resolver,
		Helo:           helo,
		TLS:            tlsMode,
		NoChunking:     c.Bool("no-chunking"),
		Timeout:        timeout,
		ConnectTimeout: connectTimeout,
	}
	if c.Bool("verbose") {
		client.Transcript = c.App.ErrWriter
	}
	msg := &deliver.Message{Sender: sender, Recipients: rcpts, Size: c.Int64("size"), Body: c.App.Reader}
	return client, msg, guessed, nil
}

// signals are the signals deliver catches, from the start of the process
// (catchSignals) or from interruptible.
var signals chan os.Signal

// catchSignals catches SIGTERM, SIGHUP, SIGINT and SIGQUIT for deliver,
// and ignores SIGPIPE: writing the outcome to a pipe(8) that is gone must
// not kill it. They stay caught until the process exits: a second signal
// is ignored, and none kills it (Go's default action would exit with
// status 2 or by the signal, and pipe(8) bounces on 2).
func catchSignals() {
	if signals != nil {
		return
	}
	signals = make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT)
	signal.Ignore(syscall.SIGPIPE)
}

// interruptible returns a context that the first caught signal cancels,
// the signal's name as the cause, or the closing of orphaned (the parent
// exited; nil never closes): deliver then stops before the final dot, or
// waits for the reply after it, and the outcome is one 4.x.y line and
// exit 75. A signal that came earlier cancels it at once.
func interruptible(ctx context.Context, orphaned <-chan struct{}) context.Context {
	catchSignals()
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case s := <-signals:
			cancel(errors.New(unix.SignalName(s.(syscall.Signal))))
		case <-orphaned:
			cancel(errors.New("the parent process, pipe(8), exited"))
		}
	}()
	return ctx
}
