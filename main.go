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
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
)

// maxOutput bounds the one line of output. Postfix keeps 4096 bytes of a
// command's output; the line stays well below that.
const maxOutput = 1000

func main() {
	if isDeliver(os.Args) {
		// Before anything else: a signal while the flags are parsed or
		// the maps loaded must not kill deliver (SIGQUIT exits with 2,
		// which pipe(8) bounces).
		catchSignals()
	}
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// isDeliver reports whether the command line runs deliver: its first word
// that is not a flag.
func isDeliver(args []string) bool {
	for _, a := range args[1:] {
		if !strings.HasPrefix(a, "-") {
			return a == "deliver"
		}
	}
	return false
}

// run runs the command line and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) (status int) {
	if underExim(args) {
		// Exim bounces on 78 (exim.go). Deferred first, so it runs last,
		// after a panic was recovered.
		defer func() {
			if status == deliver.ExConfig {
				status = deliver.ExTempFail
			}
		}()
	}
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
	var cfg *configError
	if errors.As(err, &cfg) {
		if cfg.byHand {
			fmt.Fprintln(w, truncate("onionmx: error: "+cfg.Error()))
			return deliver.ExConfig
		}
		err = deliver.ConfigError(cfg.err)
	}
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
	return e.Exit()
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

// A configError is a bad flag, argument or configuration. Under Postfix
// (deliver, socketmap, tcptable) it defers rather than bounces: 4.3.5 and
// EX_CONFIG. The commands that people run by hand (byHand) say it as
// "onionmx: error: ...", also with EX_CONFIG.
type configError struct {
	err    error
	byHand bool
}

func (e *configError) Error() string { return e.err.Error() }
func (e *configError) Unwrap() error { return e.err }

func badConfig(err error) error { return &configError{err: err} }

// flagError is a bad value of a flag: the library says what is wrong with
// the value, the command names the flag.
func flagError(flag, value string, err error) error {
	return fmt.Errorf("--%s %q: %w", flag, value, err)
}

// byHand makes cmd, a command for people, answer its usage and
// configuration errors as "onionmx: error: ...", not in pipe(8)'s 4.3.5
// language.
func byHand(cmd *cli.Command) *cli.Command {
	mark := func(err error) error {
		var cfg *configError
		if errors.As(err, &cfg) {
			cfg.byHand = true
		}
		return err
	}
	action, onUsage := cmd.Action, cmd.OnUsageError
	if onUsage == nil {
		onUsage = usageError
	}
	cmd.Action = func(c *cli.Context) error { return mark(action(c)) }
	cmd.OnUsageError = func(c *cli.Context, err error, sub bool) error { return mark(onUsage(c, err, sub)) }
	return cmd
}

// usageError makes a usage error a configError; --help and -h show help,
// where that is safe (help.go).
func usageError(c *cli.Context, err error, _ bool) error {
	name := ""
	if c.Command != nil && c.Command.Name != c.App.Name {
		name = c.Command.Name
	}
	if herr, ok := askedForHelp(c, err, name); ok {
		return herr
	}
	return badConfig(err)
}

// version is the release, stamped in at build time with
// -ldflags "-X main.version=1.2.3"; without it, the module's version and
// the revision it was built from, as Go records them.
var version string

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = "+modified"
			}
		}
	}
	if rev != "" {
		v += " " + rev[:min(len(rev), 12)] + modified
	}
	return v + " " + bi.GoVersion
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	// No help flag of urfave/cli's, which would answer before any command
	// runs (help.go).
	cli.HelpFlag = nil
	app := &cli.App{
		Name:                      "onionmx",
		Usage:                     "deliver mail between mail servers over Tor onion services",
		HideVersion:               true,
		HideHelpCommand:           true,
		Flags:                     []cli.Flag{&cli.BoolFlag{Name: "version", Usage: "print the version"}},
		Reader:                    stdin,
		Writer:                    stdout,
		ErrWriter:                 stderr,
		DisableSliceFlagSeparator: true,
		OnUsageError:              usageError,
		// The exit status is decided once, in run.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			deliverCommand(),
			byHand(lookupCommand()),
			socketmapCommand(),
			tcptableCommand(),
			byHand(srvRecordCommand()),
			checkCommand(),
			byHand(setupCommand()),
			helpCommand(),
		},
		Action: func(c *cli.Context) error {
			switch {
			case c.Bool("version"):
				if underMailer(c.App.Reader) {
					return deliver.ConfigError(errors.New("--version is for a person: with standard input a pipe, as under pipe(8), it is a usage error (run it at a terminal)"))
				}
				// Worked out here, not for every delivery.
				fmt.Fprintf(c.App.Writer, "onionmx version %s\n", versionString())
				return nil
			case c.Args().Present():
				return deliver.ConfigError(fmt.Errorf("unknown command %q (onionmx help lists the commands)", c.Args().First()))
			case underMailer(c.App.Reader):
				// A command word forgotten in master.cf: one status line.
				return deliver.ConfigError(errors.New("no command given (onionmx help lists the commands)"))
			}
			return cli.ShowAppHelp(c)
		},
	}
	for _, cmd := range app.Commands {
		if cmd.OnUsageError == nil { // check and byHand's commands have their own
			cmd.OnUsageError = usageError
		}
		// "help" after a command is an argument (a recipient, a domain),
		// never a request for help.
		cmd.HideHelp, cmd.HideHelpCommand = true, true
	}
	return app
}
