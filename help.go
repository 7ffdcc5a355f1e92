package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
)

// Help is for a person. Under pipe(8) a run that prints help or the
// version would exit 0, which Postfix takes for a delivery, and its output
// would not start with a status code: a master.cf with a stray --help
// would lose every message. So help — the help command, --help and -h
// anywhere, --version, no command at all — is shown only when standard
// input is not what pipe(8) and spawn(8) give a command, a pipe or a
// socket; there it is a usage error (4.3.5, exit 78) like any other.
//
// urfave/cli answers its own help and version flags before any command
// runs; onionmx has none of its own (cli.HelpFlag is nil): the flag
// package reports --help and -h as flag.ErrHelp, which the usage-error
// handlers pass to askedForHelp, and --version is an app flag that the
// app's action reads.

// underMailer reports whether r, the standard input, is a pipe or a
// socket: what pipe(8) and spawn(8) give. A terminal, /dev/null or a file
// means a person, or a person's script.
func underMailer(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&(os.ModeNamedPipe|os.ModeSocket) != 0
}

// refuseHelp is the usage error for help asked under a mailer.
func refuseHelp(what string) error {
	return deliver.ConfigError(fmt.Errorf("%s shows help, which is for a person: with standard input a pipe, as under pipe(8), it is a usage error (run it at a terminal)", what))
}

// mailerRuns are the commands that Postfix runs: deliver under pipe(8),
// the lookup servers under spawn(8); and "", onionmx itself, where a
// master.cf may have lost the command word. The others are for people and
// monitoring systems, and show their help whatever their input.
var mailerRuns = map[string]bool{"": true, "deliver": true, "socketmap": true, "tcptable": true}

// showHelp shows the help of a command ("": of onionmx), unless a mailer
// may be running it.
func showHelp(c *cli.Context, what, command string) error {
	if mailerRuns[command] && underMailer(c.App.Reader) {
		return refuseHelp(what)
	}
	if command == "" {
		return cli.ShowAppHelp(c)
	}
	if c.App.Command(command) == nil {
		return deliver.ConfigError(fmt.Errorf("no command %q (onionmx help lists the commands)", command))
	}
	return cli.ShowCommandHelp(c, command)
}

// helpCommand is "onionmx help [COMMAND]", in place of urfave/cli's.
func helpCommand() *cli.Command {
	return &cli.Command{
		Name:      "help",
		Usage:     "show the help of onionmx, or of a command",
		UsageText: "onionmx help [COMMAND]",
		ArgsUsage: "[COMMAND]",
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return deliver.ConfigError(errors.New("help takes one command at the most"))
			}
			if underMailer(c.App.Reader) {
				return refuseHelp("help")
			}
			return showHelp(c, "help", c.Args().First())
		},
	}
}

// askedForHelp answers a usage error that is --help or -h with the help
// of command ("": of onionmx), and reports whether it was one.
func askedForHelp(c *cli.Context, err error, command string) (error, bool) {
	if !errors.Is(err, flag.ErrHelp) {
		return nil, false
	}
	return showHelp(c, "--help", command), true
}
