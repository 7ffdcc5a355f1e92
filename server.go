package main

import (
	"errors"
	"fmt"
	"log/syslog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/printable"
	"github.com/onionmx/onionmx/table"
)

// How the lookup servers, socketmap and tcptable, run: on stdin/stdout
// under spawn(8), or on --listen.

// serverCommand is the command of a lookup-table server: socketmap or
// tcptable.
func serverCommand(proto table.Protocol, usage string) *cli.Command {
	return &cli.Command{
		Name:   proto.String(),
		Usage:  usage,
		Flags:  serverFlags(),
		Action: func(c *cli.Context) error { return runServer(c, proto) },
	}
}

func serverFlags() []cli.Flag {
	return append(routeFlags(),
		&cli.StringFlag{Name: "listen", Usage: "serve on `unix:/path or HOST:PORT` instead of stdin/stdout (spawn(8)); tcptable: HOST:PORT only"})
}

// newAnswerer builds the answerer of lookup, socketmap and tcptable from
// the flags; errors are configErrors.
func newAnswerer(c *cli.Context) (*table.Answerer, error) {
	a := &table.Answerer{Transport: c.String("transport")}
	if err := table.CheckTransport(a.Transport); err != nil {
		if errors.Is(err, table.ErrTransportChars) {
			return nil, badConfig(flagError("transport", a.Transport, err))
		}
		return nil, badConfig(fmt.Errorf("--transport: %w", err))
	}
	for _, s := range c.StringSlice("self") {
		d, err := table.ParseSelf(s)
		if err != nil {
			return nil, badConfig(flagError("self", s, err))
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

// underSpawn reports whether stdout and stderr are the same socket, as
// spawn(8) connects them (stdin too) to the client: then nothing but the
// protocol may be written.
func underSpawn(c *cli.Context) bool {
	out, ok1 := c.App.Writer.(*os.File)
	errw, ok2 := c.App.ErrWriter.(*os.File)
	return ok1 && ok2 && table.SameSocket(out, errw)
}

// syslogf logs one line to syslog with the mail facility, where Postfix
// logs, for a server under spawn(8), which has nowhere else to say it. It
// does nothing when syslog cannot be reached.
func syslogf(proto table.Protocol, format string, args ...any) {
	w, err := syslog.New(syslog.LOG_MAIL|syslog.LOG_ERR, "onionmx/"+proto.String())
	if err != nil {
		return
	}
	defer w.Close()
	w.Err(printable.Line(fmt.Sprintf(format, args...), maxOutput))
}

func runServer(c *cli.Context, proto table.Protocol) error {
	if c.Args().Present() {
		return badConfig(fmt.Errorf("unexpected argument %q", c.Args().First()))
	}
	addr := c.String("listen")
	if proto == table.TCPTable && strings.HasPrefix(addr, "unix:") {
		return badConfig(fmt.Errorf("--listen %q: Postfix's tcp tables connect over TCP only (tcp_table(5)): listen on HOST:PORT, or serve a unix socket with onionmx socketmap", addr))
	}
	a, cfgErr := newAnswerer(c)
	srv := &table.Server{Answerer: a, Protocol: proto}
	logf := func(format string, args ...any) {
		fmt.Fprintf(c.App.ErrWriter, "onionmx %s: %s\n", proto, printable.Line(fmt.Sprintf(format, args...), maxOutput))
	}
	if addr == "" {
		// Under spawn(8), stdin, stdout and stderr are all the client's
		// socket: nothing may be printed. A broken configuration is told
		// to Postfix in the protocol (TEMP, so the mail waits), which logs
		// it, and so are bad map entries, for their domains; the exit
		// status goes to spawn's log, and a failure to syslog. On a pipe
		// or a terminal, stderr is free: problems and failures are said
		// there, in one line each.
		spawned := underSpawn(c)
		conn := table.StdioConn(c.App.Reader, c.App.Writer)
		defer conn.Close()
		if cfgErr != nil {
			srv.Fail = fmt.Errorf("configuration error: %s", cfgErr)
			srv.ServeConn(c.Context, conn)
			if spawned {
				syslogf(proto, "configuration error: %s", cfgErr)
				return cli.Exit("", deliver.ExConfig)
			}
			return cfgErr
		}
		if !spawned {
			for _, p := range mapProblems(a) {
				logf("map problem: %v", p)
			}
		}
		if err := srv.ServeConn(c.Context, conn); err != nil {
			if spawned {
				syslogf(proto, "%v", err)
				return cli.Exit("", 1)
			}
			return cli.Exit(fmt.Sprintf("onionmx %s: %s", proto, printable.Line(err.Error(), maxOutput)), 1)
		}
		return nil
	}
	if cfgErr != nil {
		return cfgErr
	}
	l, err := listen(addr)
	if err != nil {
		return badConfig(err)
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	for _, p := range mapProblems(a) {
		logf("map problem: %v", p)
	}
	srv.Log = logf
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
