package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/postfixsetup"
	"github.com/onionmx/onionmx/table"
)

// "onionmx setup postfix" wires onionmx into an existing Postfix with
// postconf, and --remove takes it out again (package postfixsetup). It is
// run by a person: its errors are "onionmx: error: ...".

// setupCommand is "onionmx setup", whose subcommands set up a mail server.
func setupCommand() *cli.Command {
	return &cli.Command{
		Name:        "setup",
		Usage:       "wire onionmx into a mail server: onionmx setup postfix",
		ArgsUsage:   "postfix [OPTIONS]",
		Subcommands: []*cli.Command{setupPostfixCommand()},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return badConfig(fmt.Errorf("no setup for %q (onionmx setup postfix)", c.Args().First()))
			}
			return cli.ShowCommandHelp(c.Lineage()[1], "setup")
		},
	}
}

func setupPostfixCommand() *cli.Command {
	return &cli.Command{
		Name:  "postfix",
		Usage: "add onionmx's two services, its main.cf lines and an empty static map to an existing Postfix with postconf, check Tor and the lookup, or --remove them",
		Description: "Changes go through postconf (-M, -MX, -e, -X) and postmap; main.cf and master.cf are never\n" +
			"edited as text. A setting that exists and is not onionmx's is refused, not overwritten:\n" +
			"an existing transport_maps needs --prepend-transport-maps, a service of the same name\n" +
			"another --service. What setup changed is recorded in onionmx-setup.state in the\n" +
			"configuration directory; --remove puts back exactly that and, when nobody else changed\n" +
			"the files since, leaves main.cf and master.cf byte for byte as they were. A second run\n" +
			"changes nothing. Then it checks that Tor's SocksPort answers SOCKS5 with ExtendedErrors\n" +
			"and, when Postfix runs (it is reloaded after a change), that the lookup service\n" +
			"answers through Postfix (postmap -q).\n\n" +
			"Exit status: 0 set up, removed or nothing to do (problems the checks found are said,\n" +
			"\"problem: ...\"); 1 a Postfix command failed; 75 another setup is running on the same\n" +
			"directory; 78 a usage error, or a setting refused (\"onionmx: error: ...\").",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config-directory", Aliases: []string{"c"}, Value: "/etc/postfix", Usage: "the Postfix configuration directory `DIR`, as postconf -c takes it"},
			&cli.BoolFlag{Name: "dry-run", Usage: "print the commands that would change the configuration, and change nothing"},
			&cli.BoolFlag{Name: "remove", Usage: "undo what setup did, as its state file records it"},
			&cli.BoolFlag{Name: "prepend-transport-maps", Usage: "with a transport_maps already set, put onionmx's tables before its tables instead of refusing"},
			&cli.StringFlag{Name: "service", Value: "onionmx", Usage: "the pipe service's `NAME` (the transport); the lookup service is NAME-lookup"},
			&cli.StringFlag{Name: "user", Value: "onionmx", Usage: "the services' user= `ACCOUNT`: neither root nor the mail owner (useradd --system --no-create-home onionmx)"},
			&cli.StringFlag{Name: "binary", Usage: "the onionmx `PATH` the services run (default: this onionmx)"},
			&cli.StringFlag{Name: "map", Usage: "the static map `FILE`, created empty if missing, postmapped (default: DIR/onionmx_transport)"},
			socksFlag,
			&cli.StringSliceFlag{Name: "self", Usage: "our own `DOMAIN`, never routed over Tor (\".example.org\": its subdomains); may be repeated"},
			dnsFlag,
			dnssecFlag,
			dnsViaTorFlag,
			&cli.BoolFlag{Name: "no-reload", Usage: "do not reload a running Postfix after a change (nor check the lookup through it)"},
		},
		HideHelp:        true,
		HideHelpCommand: true,
		OnUsageError: func(c *cli.Context, err error, _ bool) error {
			if errors.Is(err, flag.ErrHelp) {
				return cli.ShowCommandHelp(c.Lineage()[1], "postfix")
			}
			return byHandError(badConfig(err))
		},
		Action: runSetupPostfix,
	}
}

func runSetupPostfix(c *cli.Context) error {
	if c.Args().Present() {
		return byHandError(badConfig(fmt.Errorf("unexpected argument %q (flags only)", c.Args().First())))
	}
	dir := filepath.Clean(c.String("config-directory"))
	if !filepath.IsAbs(dir) {
		return byHandError(badConfig(fmt.Errorf("--config-directory %q: want an absolute path", c.String("config-directory"))))
	}
	if _, err := os.Stat(filepath.Join(dir, "main.cf")); err != nil {
		return byHandError(badConfig(fmt.Errorf("--config-directory %s: not a Postfix configuration directory: %w", dir, err)))
	}
	p := &postfixsetup.Postfix{Dir: dir, Warn: c.App.ErrWriter}
	if !p.Available() {
		return byHandError(badConfig(errors.New("postconf not found: is Postfix installed?")))
	}
	state := filepath.Join(dir, postfixsetup.StateFile)
	w := c.App.Writer
	if c.Bool("remove") {
		return setupRemove(c, p, state, c.Bool("dry-run"))
	}
	o, err := setupOptions(c, p)
	if err != nil {
		return byHandError(err)
	}
	res, err := postfixsetup.Setup(c.Context, p, state, o, c.Bool("dry-run"))
	if err != nil {
		return setupError(err)
	}
	changed := printChanges(w, dir, res, c.Bool("dry-run"), "onionmx is set up")
	// Reloaded before the checks, which may wait on Tor for seconds: until
	// the master reads master.cf again, main.cf names services it does not
	// run, and a trivial-rewrite started meanwhile defers every message.
	reloaded := false
	switch {
	case !changed || !p.Running(c.Context):
	case c.Bool("no-reload"):
		fmt.Fprintf(w, "note: Postfix (%s) runs and was not reloaded (--no-reload): until postfix -c %s reload, main.cf names services it does not run, and mail to onion routes waits\n", dir, postfixsetup.ShellQuote([]string{dir}))
	default:
		if err := p.Reload(c.Context); err != nil {
			return setupError(err)
		}
		fmt.Fprintf(w, "reloaded Postfix (%s)\n", dir)
		reloaded = true
	}
	var found []postfixsetup.Finding
	if u, err := user.Lookup(o.User); err == nil {
		found = append(found, postfixsetup.Finding{Text: fmt.Sprintf("user= account %s exists (uid %s)", o.User, u.Uid)})
	}
	socks, _ := socksDialer(c) // checked by setupOptions
	torFound := postfixsetup.CheckTor(c.Context, socks)
	found = append(found, torFound...)
	// Whether the services' account may open a unix SocksPort that
	// answers (root, running this, always may).
	if socks.Network == "unix" && !torFound[0].Problem {
		found = append(found, postfixsetup.CheckSocketAccess(socks.Addr, o.User))
	}
	if !c.Bool("dry-run") && !c.Bool("no-reload") {
		found = append(found, postfixsetup.CheckLookup(c.Context, p, o.Service, reloaded))
	}
	for _, f := range found {
		fmt.Fprintln(w, f)
	}
	return nil
}

// printChanges says what setup or remove did (dry: would do), or, when
// nothing, that it is done already, and reports whether it changed
// anything.
func printChanges(w io.Writer, dir string, res *postfixsetup.Result, dry bool, done string) bool {
	switch {
	case len(res.Changes) == 0:
		fmt.Fprintf(w, "onionmx setup postfix: nothing to change in %s: %s\n", dir, done)
	case dry:
		fmt.Fprintf(w, "onionmx setup postfix: dry run, nothing changed; these commands would change %s:\n", dir)
	default:
		fmt.Fprintf(w, "onionmx setup postfix: changed %s:\n", dir)
	}
	for _, ch := range res.Changes {
		fmt.Fprintf(w, "  %s\n", ch)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	return len(res.Changes) > 0 && !dry
}

func setupRemove(c *cli.Context, p *postfixsetup.Postfix, state string, dry bool) error {
	res, err := postfixsetup.Remove(c.Context, p, state, dry)
	if errors.Is(err, postfixsetup.ErrNotSetUp) {
		// Nothing of setup's to undo; but entries made by hand under the
		// same name are not setup's to remove either.
		name := c.String("service")
		entries, serr := p.Services(c.Context)
		for _, s := range []string{name + "/unix", postfixsetup.LookupService(name) + "/unix"} {
			if serr == nil && entries[s] != "" {
				return byHandError(badConfig(fmt.Errorf("%v; master.cf has a service %s that setup did not make: remove it by hand (postconf -c %s -MX %s)", err, s, p.Dir, s)))
			}
		}
		fmt.Fprintf(c.App.Writer, "onionmx setup postfix: %v\n", err)
		return nil
	}
	if err != nil {
		return setupError(err)
	}
	changed := printChanges(c.App.Writer, p.Dir, res, dry, "setup's settings are undone already")
	if changed && !c.Bool("no-reload") && p.Running(c.Context) {
		if err := p.Reload(c.Context); err != nil {
			return setupError(err)
		}
		fmt.Fprintf(c.App.Writer, "reloaded Postfix (%s)\n", p.Dir)
	}
	return nil
}

// setupOptions checks the flags and turns them into the services' command
// lines. Every value goes into a master.cf argv=, where white space would
// split it and pipe(8) and spawn(8) would expand a "$".
func setupOptions(c *cli.Context, p *postfixsetup.Postfix) (*postfixsetup.Options, error) {
	o := &postfixsetup.Options{
		Service:              c.String("service"),
		User:                 c.String("user"),
		Binary:               c.String("binary"),
		Map:                  c.String("map"),
		PrependTransportMaps: c.Bool("prepend-transport-maps"),
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, badConfig(fmt.Errorf("cannot tell where this onionmx is (%v): give --binary", err))
		}
		// "go run" builds into a temporary directory and deletes the
		// binary when it exits: services that ran it would bounce every
		// message.
		if temporaryBuild(exe) {
			return nil, badConfig(fmt.Errorf("this onionmx is %s, a temporary build (go run) that is gone when it exits: install onionmx and run that, or give --binary", exe))
		}
		o.Binary = exe
	}
	if o.Map == "" {
		o.Map = filepath.Join(p.Dir, "onionmx_transport")
	}
	for _, f := range []string{"service", "user", "binary", "map", "socks", "dns", "dnssec", "dns-via-tor"} {
		if v := c.String(f); strings.ContainsAny(v, " \t\n\r$") {
			return nil, badConfig(flagError(f, v, errors.New("white space or \"$\" cannot stand in a master.cf command line")))
		}
	}
	if err := table.CheckTransport(o.Service); err != nil || strings.ContainsAny(o.Service, "/=") {
		return nil, badConfig(fmt.Errorf("--service %q: not a master.cf service name", o.Service))
	}
	if !filepath.IsAbs(o.Binary) {
		return nil, badConfig(flagError("binary", o.Binary, errors.New("want an absolute path")))
	}
	if fi, err := os.Stat(o.Binary); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o001 == 0 {
		return nil, badConfig(flagError("binary", o.Binary, errors.New("not a file that every user may run (the services run it as --user)")))
	}
	if !filepath.IsAbs(o.Map) {
		return nil, badConfig(flagError("map", o.Map, errors.New("want an absolute path")))
	}
	if fi, err := os.Stat(filepath.Dir(o.Map)); err != nil || !fi.IsDir() {
		return nil, badConfig(flagError("map", o.Map, fmt.Errorf("no directory %s", filepath.Dir(o.Map))))
	}
	if _, err := user.Lookup(o.User); err != nil {
		return nil, badConfig(fmt.Errorf("--user %s: no such account (useradd --system --no-create-home %s, or give another --user)", o.User, o.User))
	}
	if err := postfixsetup.CheckRun(o.Binary, o.User); err != nil {
		return nil, badConfig(flagError("binary", o.Binary, err))
	}
	if err := postfixsetup.CheckRead(o.Map, o.User); err != nil {
		return nil, badConfig(flagError("map", o.Map, err))
	}
	owner, err := p.Effective(c.Context, "mail_owner")
	if err != nil {
		return nil, err
	}
	if o.User == "root" || o.User == owner {
		return nil, badConfig(fmt.Errorf("--user %s: pipe(8) and spawn(8) refuse root and the mail owner (%s); use an account of onionmx's own", o.User, owner))
	}
	socks, err := socksDialer(c)
	if err != nil {
		return nil, badConfig(err)
	}
	// The DNS flags, checked as deliver and socketmap will check them.
	if _, err := newDNSClient(c); err != nil {
		return nil, err
	}
	var dnsFlags []string
	for _, f := range []string{"dns", "dnssec", "dns-via-tor"} {
		if c.IsSet(f) {
			dnsFlags = append(dnsFlags, "--"+f, c.String(f))
		}
	}
	o.DeliverFlags = append([]string{"--socks", socks.String()}, dnsFlags...)
	if o.Service != "onionmx" {
		o.LookupFlags = append(o.LookupFlags, "--transport", o.Service)
	}
	for _, s := range c.StringSlice("self") {
		if strings.ContainsAny(s, " \t$") {
			return nil, badConfig(flagError("self", s, errors.New("white space or \"$\" cannot stand in a master.cf command line")))
		}
		if _, err := table.ParseSelf(s); err != nil {
			return nil, badConfig(flagError("self", s, err))
		}
		o.LookupFlags = append(o.LookupFlags, "--self", s)
	}
	o.LookupFlags = append(o.LookupFlags, "--map", o.Map)
	o.LookupFlags = append(o.LookupFlags, dnsFlags...)
	if c.IsSet("dns-via-tor") {
		o.LookupFlags = append(o.LookupFlags, "--socks", socks.String())
	}
	return o, nil
}

// temporaryBuild reports whether exe is a binary that "go run" or
// "go test" built in its temporary directory, $GOTMPDIR/go-buildNNN.
func temporaryBuild(exe string) bool {
	for _, dir := range strings.Split(filepath.Dir(exe), string(filepath.Separator)) {
		if n, ok := strings.CutPrefix(dir, "go-build"); ok && n != "" && strings.Trim(n, "0123456789") == "" {
			return true
		}
	}
	return false
}

// byHandError makes a configError say "onionmx: error: ...".
func byHandError(err error) error {
	var cfg *configError
	if errors.As(err, &cfg) {
		cfg.byHand = true
	}
	return err
}

// setupError turns what postfixsetup returns into the command's exit:
// refusals are configuration errors (78), a busy directory a temporary
// failure (75), a failed Postfix command 1.
func setupError(err error) error {
	var conflict *postfixsetup.ConflictError
	var changed *postfixsetup.ChangedError
	var queued *postfixsetup.QueueError
	switch {
	case errors.As(err, &conflict), errors.As(err, &changed), errors.As(err, &queued), errors.Is(err, postfixsetup.ErrNotSetUp):
		return byHandError(badConfig(err))
	case errors.Is(err, postfixsetup.ErrBusy):
		return cli.Exit("onionmx: error: "+err.Error(), deliver.ExTempFail)
	}
	return cli.Exit("onionmx: error: "+err.Error(), 1)
}
