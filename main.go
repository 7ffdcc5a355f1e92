// Command onionmx delivers mail between mail servers over Tor onion
// services. It runs under Postfix: "onionmx deliver" is a pipe(8)
// transport that delivers one message per run.
//
// Under pipe(8), the exit status and the one line of output are the whole
// interface: 0 means delivered, 75 or output starting with "4." means try
// again later, and anything else bounces the message. So every error,
// including a bad flag, a bad configuration and a panic, ends here as one
// line that starts with an RFC 3463 status code, and one sysexits status.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/lookup"
)

// maxOutput bounds the one line of output. Postfix keeps 4096 bytes of a
// command's output; the line stays well below that.
const maxOutput = 1000

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run runs the command line and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) (status int) {
	defer func() {
		if r := recover(); r != nil {
			status = report(stderr, deliver.Internal(fmt.Errorf("panic: %v", r)))
			if os.Getenv("ONIONMX_DEBUG") != "" {
				stderr.Write(debug.Stack())
			}
		}
	}()
	err := newApp(stdin, stdout, stderr).Run(args)
	if err == nil {
		return deliver.ExOK
	}
	return report(stderr, err)
}

// report writes the one line for err and returns its exit status.
func report(w io.Writer, err error) int {
	var exit cli.ExitCoder
	if errors.As(err, &exit) && !isDeliverError(err) {
		// A command that exits with its own status (lookup, check) has
		// already said what it had to.
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(w, truncate(msg))
		}
		return exit.ExitCode()
	}
	e := deliver.AsError(err)
	fmt.Fprintln(w, truncate(e.Error()))
	return e.Exit
}

func isDeliverError(err error) bool {
	var e *deliver.Error
	return errors.As(err, &e)
}

// truncate keeps the output one short line.
func truncate(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > maxOutput {
		s = s[:maxOutput-3] + "..."
	}
	return s
}

// usageError makes a usage error defer rather than bounce (4.3.5, EX_CONFIG).
func usageError(_ *cli.Context, err error, _ bool) error {
	return deliver.ConfigError(err)
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                      "onionmx",
		Usage:                     "deliver mail between mail servers over Tor onion services",
		Reader:                    stdin,
		Writer:                    stdout,
		ErrWriter:                 stderr,
		HideHelpCommand:           true,
		DisableSliceFlagSeparator: true,
		OnUsageError:              usageError,
		// The exit status is decided once, in run.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			deliverCommand(),
			lookupCommand(),
			socketmapCommand(),
			tcptableCommand(),
			srvRecordCommand(),
			checkCommand(),
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return deliver.ConfigError(fmt.Errorf("unknown command %q", c.Args().First()))
			}
			cli.ShowAppHelp(c)
			return deliver.ConfigError(errors.New("no command given"))
		},
	}
	for _, cmd := range app.Commands {
		if cmd.OnUsageError == nil { // check reports its own, as a monitoring plugin
			cmd.OnUsageError = usageError
		}
	}
	return app
}

// Flags shared by the commands that resolve routes.
var (
	mapFlag = &cli.StringSliceFlag{Name: "map", Usage: "static map `FILE` (Postfix transport text, or the community YAML if it ends in .yml/.yaml); may be repeated, first match wins"}
	dnsFlag = &cli.StringFlag{Name: "dns", Usage: "DNS server `HOST:PORT` for SRV lookups (default: the system's resolvers)"}
)

func deliverCommand() *cli.Command {
	return &cli.Command{
		Name:      "deliver",
		Usage:     "deliver one message from stdin to an onion MX (a Postfix pipe(8) transport)",
		ArgsUsage: "[--] RECIPIENT...",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "sender", Aliases: []string{"f"}, Usage: "envelope sender `ADDR`, required; empty is the null sender"},
			&cli.StringFlag{Name: "nexthop", Usage: "Postfix ${nexthop}: \"[x.onion]:port\", \"[x.onion]\", \"x.onion\" or a mail domain; empty: the recipients' domain"},
			socksFlag,
			&cli.StringFlag{Name: "helo", Usage: "EHLO `NAME` (default: this host's fully qualified name)"},
			mapFlag,
			dnsFlag,
			dnssecFlag,
			dnsViaTorFlag,
			&cli.Int64Flag{Name: "size", Usage: "message size in `BYTES` (Postfix ${size}), for the SIZE extension"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "deadline for the whole delivery (keep it below Postfix's command_time_limit, 1000s)"},
			&cli.DurationFlag{Name: "connect-timeout", Value: deliver.DefaultConnectTimeout, Usage: "deadline for the SOCKS connect, including Tor's onion rendezvous"},
			&cli.StringFlag{Name: "tls", Value: "none", Usage: "STARTTLS: none, may (when offered, certificate not verified) or require"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "SMTP transcript on stderr"},
		},
		Action: runDeliver,
	}
}

func runDeliver(c *cli.Context) error {
	// Checked here rather than with Required, which prints the help text
	// before the error: under pipe(8) the output is one line.
	if !c.IsSet("sender") {
		return deliver.ConfigError(errors.New("--sender is required (an empty value is the null sender)"))
	}
	rcpts := c.Args().Slice()
	if len(rcpts) == 0 {
		return deliver.ConfigError(errors.New("no recipients given"))
	}
	sender := c.String("sender")
	for _, a := range append([]string{sender}, rcpts...) {
		if strings.ContainsAny(a, "\r\n\x00") {
			return deliver.ConfigError(fmt.Errorf("address %q contains a control character", a))
		}
	}
	if c.Int64("size") < 0 {
		return deliver.ConfigError(errors.New("--size must not be negative"))
	}
	timeout, connectTimeout := c.Duration("timeout"), c.Duration("connect-timeout")
	if timeout <= 0 || connectTimeout <= 0 {
		return deliver.ConfigError(errors.New("--timeout and --connect-timeout must be positive"))
	}
	dialer, err := deliver.ParseSOCKS(c.String("socks"))
	if err != nil {
		return deliver.ConfigError(err)
	}
	tlsMode, err := deliver.ParseTLSMode(c.String("tls"))
	if err != nil {
		return deliver.ConfigError(err)
	}
	resolver, err := newResolver(c)
	if err != nil {
		return err
	}
	helo := heloName(c)
	client := &deliver.Client{
		Dialer:         dialer,
		Resolver:       resolver,
		Helo:           helo,
		TLS:            tlsMode,
		ConnectTimeout: connectTimeout,
	}
	if c.Bool("verbose") {
		client.Transcript = c.App.ErrWriter
	}
	ctx, cancel := context.WithTimeout(c.Context, timeout)
	defer cancel()
	res, err := client.Deliver(ctx, c.String("nexthop"), &deliver.Message{
		Sender:     sender,
		Recipients: rcpts,
		Size:       c.Int64("size"),
		Body:       c.App.Reader,
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, truncate(fmt.Sprintf("%s (delivered to %s)", res.Reply, res.Target.Addr())))
	return nil
}

// heloName returns --helo, or this host's fully qualified name.
func heloName(c *cli.Context) string {
	if h := c.String("helo"); h != "" {
		return h
	}
	return deliver.Hostname()
}

// newResolver builds the route resolver from --map and the DNS flags
// (newDNSClient). A map that cannot be read or parsed is a configuration
// error.
func newResolver(c *cli.Context) (*lookup.Resolver, error) {
	r := &lookup.Resolver{}
	for _, path := range c.StringSlice("map") {
		m, err := lookup.LoadMap(path)
		if err != nil {
			return nil, deliver.ConfigError(err)
		}
		r.Maps = append(r.Maps, m)
	}
	dns, err := newDNSClient(c)
	if err != nil {
		return nil, err
	}
	r.DNS = dns
	return r, nil
}
