package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/lookupd"
)

// Commands that tell Postfix which domains have an onion route: "lookup"
// for people, "socketmap" and "tcptable" for transport_maps (package
// lookupd).

// routeFlags are the flags of the three commands; --map and the DNS flags
// are those of deliver, so that routing and delivery see the same routes.
// --socks is used only with --dns-via-tor.
func routeFlags() []cli.Flag {
	return []cli.Flag{
		mapFlag,
		dnsFlag,
		dnssecFlag,
		dnsViaTorFlag,
		socksFlag,
		transportFlag,
		&cli.StringSliceFlag{Name: "self", Usage: "our own `DOMAIN`, never routed over Tor (\".example.org\": its subdomains); may be repeated"},
	}
}

func serverFlags() []cli.Flag {
	return append(routeFlags(),
		&cli.StringFlag{Name: "listen", Usage: "serve on `unix:/path or HOST:PORT` instead of stdin/stdout (spawn(8))"})
}

func lookupCommand() *cli.Command {
	return &cli.Command{
		Name:      "lookup",
		Usage:     "print, as transport-map lines, what Postfix is told for each domain or address, and why",
		ArgsUsage: "DOMAIN|ADDRESS...",
		Description: "Exit status: 0 when every argument has an onion route, 1 when some have none,\n" +
			"75 when an answer is unknown (DNS failure), 78 for a usage or configuration error.",
		Flags:  routeFlags(),
		Action: runLookup,
	}
}

func socketmapCommand() *cli.Command {
	return &cli.Command{
		Name:   "socketmap",
		Usage:  "answer Postfix socketmap_table(5) lookups for transport_maps, on stdin/stdout (spawn(8)) or --listen",
		Flags:  serverFlags(),
		Action: func(c *cli.Context) error { return runServer(c, lookupd.Socketmap) },
	}
}

func tcptableCommand() *cli.Command {
	return &cli.Command{
		Name:   "tcptable",
		Usage:  "answer Postfix tcp_table(5) lookups for transport_maps, on stdin/stdout (spawn(8)) or --listen",
		Flags:  serverFlags(),
		Action: func(c *cli.Context) error { return runServer(c, lookupd.TCPTable) },
	}
}

// newAnswerer builds the answerer from the flags; errors are configuration
// errors.
func newAnswerer(c *cli.Context) (*lookupd.Answerer, error) {
	a := &lookupd.Answerer{Transport: c.String("transport")}
	if err := lookupd.CheckTransport(a.Transport); err != nil {
		return nil, deliver.ConfigError(err)
	}
	for _, s := range c.StringSlice("self") {
		d, err := lookupd.ParseSelf(s)
		if err != nil {
			return nil, deliver.ConfigError(err)
		}
		a.Self = append(a.Self, d)
	}
	r, err := newResolver(c)
	if err != nil {
		return nil, err
	}
	a.Resolver = r
	return a, nil
}

func runLookup(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) == 0 {
		return deliver.ConfigError(errors.New("no domain or address given"))
	}
	for _, arg := range args {
		if _, err := lookupd.ParseKey(arg); err != nil {
			return deliver.ConfigError(fmt.Errorf("%q: %v", arg, err))
		}
	}
	a, err := newAnswerer(c)
	if err != nil {
		return err
	}
	var none, unknown bool
	for _, arg := range args {
		ans := a.Lookup(c.Context, arg)
		ans.Explain(c.App.Writer)
		switch ans.Class {
		case lookupd.Temp:
			unknown = true
		case lookupd.NotFound, lookupd.Perm:
			none = true
		}
	}
	switch {
	case unknown:
		return cli.Exit("", deliver.ExTempFail)
	case none:
		return cli.Exit("", 1)
	}
	return nil
}

func runServer(c *cli.Context, proto lookupd.Protocol) error {
	if c.Args().Present() {
		return deliver.ConfigError(fmt.Errorf("unexpected argument %q", c.Args().First()))
	}
	a, cfgErr := newAnswerer(c)
	srv := &lookupd.Server{Answerer: a, Protocol: proto}
	addr := c.String("listen")
	if addr == "" {
		// Under spawn(8), stdin, stdout and stderr are all the client's
		// socket: nothing may be printed. A broken configuration is told
		// to Postfix in the protocol (TEMP, so the mail waits), which logs
		// it; the exit status goes to spawn's log.
		conn := lookupd.StdioConn(c.App.Reader, c.App.Writer)
		defer conn.Close()
		if cfgErr != nil {
			srv.Fail = fmt.Errorf("configuration error: %s", deliver.AsError(cfgErr).Msg)
			srv.ServeConn(c.Context, conn)
			return cli.Exit("", deliver.ExConfig)
		}
		if err := srv.ServeConn(c.Context, conn); err != nil {
			return cli.Exit("", 1)
		}
		return nil
	}
	if cfgErr != nil {
		return cfgErr
	}
	l, err := listen(addr)
	if err != nil {
		return deliver.ConfigError(err)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv.Log = func(format string, args ...any) {
		fmt.Fprintf(c.App.ErrWriter, "onionmx %s: %s\n", proto, fmt.Sprintf(format, args...))
	}
	if err := srv.Serve(ctx, l); err != nil {
		return deliver.Internal(fmt.Errorf("serving on %s: %w", addr, err))
	}
	return nil
}

// listen parses --listen, "unix:/path" or "HOST:PORT", and listens there.
// A socket file left behind by a server that is gone is replaced.
func listen(addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, "unix:")
	if !ok {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--listen %q: want unix:/path or HOST:PORT", addr)
		}
		return net.Listen("tcp", addr)
	}
	if !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("--listen %q: want unix:/absolute/path", addr)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("--listen %q: a server is already listening there", addr)
		}
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	// Postfix connects as its mail owner; who may reach the socket is
	// decided by the directory it is in (private/ is Postfix's alone).
	if err := os.Chmod(path, 0o666); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
