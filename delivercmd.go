package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
)

// "onionmx deliver" is the pipe(8) transport (package deliver): one message
// on stdin, one line of output, one sysexits status.

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
			transportFlag,
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
