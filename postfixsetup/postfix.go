package postfixsetup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// commandTimeout bounds each Postfix command. postconf and postmap answer
// in milliseconds; only "postfix reload" waits on the master, and a
// Postfix that does not answer within this is better reported than waited
// for by a person at a terminal.
const commandTimeout = 60 * time.Second

// Postfix runs Postfix's own commands against one configuration
// directory: postconf to read and change main.cf and master.cf, postmap
// for the static map and for asking the lookup service, postfix for
// status and reload.
type Postfix struct {
	Dir string // the configuration directory, as postconf -c takes it
	// Bin is the directory of postconf, postmap and postfix; empty: found
	// on PATH, else /usr/sbin, where Debian puts them and where a root
	// shell without sbin on PATH would miss them.
	Bin string
	// Warn, if set, gets what the commands said on stderr and still
	// succeeded: postconf's warnings about the configuration (an unused
	// parameter), each once.
	Warn io.Writer

	warned map[string]bool
}

func (p *Postfix) warn(stderr string) {
	if p.Warn == nil {
		return
	}
	for _, line := range strings.Split(stderr, "\n") {
		if line = strings.TrimSpace(line); line != "" && !p.warned[line] {
			if p.warned == nil {
				p.warned = map[string]bool{}
			}
			p.warned[line] = true
			fmt.Fprintln(p.Warn, line)
		}
	}
}

// CommandError is a Postfix command that failed: its command line and what
// it said.
type CommandError struct {
	Args   []string
	Output string
	Err    error
}

func (e *CommandError) Error() string {
	out := strings.Join(strings.Fields(e.Output), " ")
	if out == "" {
		return fmt.Sprintf("%s: %v", ShellQuote(e.Args), e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", ShellQuote(e.Args), e.Err, out)
}

func (e *CommandError) Unwrap() error { return e.Err }

func (p *Postfix) path(name string) string {
	if p.Bin != "" {
		return filepath.Join(p.Bin, name)
	}
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	return filepath.Join("/usr/sbin", name)
}

// Available reports whether postconf can be found.
func (p *Postfix) Available() bool {
	_, err := exec.LookPath(p.path("postconf"))
	return err == nil
}

// command is the command line of a Postfix command against Dir, as it is
// shown to people: the program's name, not its path.
func (p *Postfix) command(name string, args ...string) []string {
	return append([]string{name, "-c", p.Dir}, args...)
}

// run runs a command line from command (in dir, if not empty) and returns
// its standard output; its standard error is part of the error.
func (p *Postfix) run(ctx context.Context, dir string, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.path(argv[0]), argv[1:]...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &CommandError{Args: argv, Output: stderr.String() + stdout.String(), Err: err}
	}
	p.warn(stderr.String())
	return stdout.String(), nil
}

// Param returns a main.cf parameter as main.cf sets it, and whether it
// sets it at all (postconf -n: not Postfix's default).
func (p *Postfix) Param(ctx context.Context, name string) (value string, set bool, err error) {
	out, err := p.run(ctx, "", p.command("postconf", "-n", name))
	if err != nil {
		return "", false, err
	}
	line := strings.TrimRight(out, "\n")
	if line == "" {
		return "", false, nil
	}
	v, ok := strings.CutPrefix(line, name+" =")
	if !ok {
		return "", false, fmt.Errorf("postconf -n %s answered %q", name, line)
	}
	return strings.TrimPrefix(v, " "), true, nil
}

// Effective returns a parameter's value as Postfix uses it (default or
// set), with $names expanded: postconf -xh.
func (p *Postfix) Effective(ctx context.Context, name string) (string, error) {
	out, err := p.run(ctx, "", p.command("postconf", "-xh", name))
	return strings.TrimRight(out, "\n"), err
}

// Services returns master.cf's entries as postconf -M prints them, each
// on one line, by "name/type". One postconf run answers for every
// service setup and remove look at. (postconf -M name/type warns about
// an entry it does not find: all are listed instead.)
func (p *Postfix) Services(ctx context.Context) (map[string]string, error) {
	out, err := p.run(ctx, "", p.command("postconf", "-M"))
	if err != nil {
		return nil, err
	}
	entries := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			if _, dup := entries[f[0]+"/"+f[1]]; !dup {
				entries[f[0]+"/"+f[1]] = line
			}
		}
	}
	return entries, nil
}

// Service returns a master.cf entry ("name/type") as postconf -M prints
// it, on one line, or "" when master.cf has none.
func (p *Postfix) Service(ctx context.Context, service string) (string, error) {
	entries, err := p.Services(ctx)
	return entries[service], err
}

// Overrides returns the master.cf services that override the main.cf
// parameter name with -o, "name/type" to the value (postconf -P), and
// each one's command (the eighth field of postconf -M).
func (p *Postfix) Overrides(ctx context.Context, name string) (values, commands map[string]string, err error) {
	out, err := p.run(ctx, "", p.command("postconf", "-P"))
	if err != nil {
		return nil, nil, err
	}
	values = map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		key, v, ok := strings.Cut(line, " = ")
		if !ok {
			continue
		}
		if i := strings.LastIndexByte(key, '/'); i > 0 && key[i+1:] == name {
			values[key[:i]] = v
		}
	}
	if len(values) == 0 {
		return nil, nil, nil
	}
	entries, err := p.Services(ctx)
	if err != nil {
		return nil, nil, err
	}
	commands = map[string]string{}
	for svc, line := range entries {
		if f := strings.Fields(line); len(f) >= 8 {
			commands[svc] = f[7]
		}
	}
	return values, commands, nil
}

// MainParam reads a parameter's last setting in main.cf. It is for the
// parameters of a service (NAME_time_limit): postconf ignores those until
// master.cf has the service, and setup must see them before it adds the
// service. Values are as postconf -n prints them: continuation lines
// joined by one space.
func (p *Postfix) MainParam(name string) (Value, error) {
	b, err := os.ReadFile(filepath.Join(p.Dir, "main.cf"))
	if err != nil {
		return Value{}, err
	}
	var v Value
	in := false // in name's logical line
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "" || strings.HasPrefix(trimmed, "#"):
			continue
		case line[0] == ' ' || line[0] == '\t':
			if in {
				v.Value = strings.TrimSpace(v.Value + " " + trimmed)
			}
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		in = ok && strings.TrimSpace(key) == name
		if in {
			v = Value{Set: true, Value: strings.TrimSpace(val)}
		}
	}
	return v, nil
}

// Running reports whether the Postfix instance of Dir runs.
func (p *Postfix) Running(ctx context.Context) bool {
	_, err := p.run(ctx, "", p.command("postfix", "status"))
	return err == nil
}

// Query asks a table through Postfix, as trivial-rewrite would, from the
// queue directory (where a socketmap's private/... socket is), and returns
// the answer; found is false when the table has no entry.
func (p *Postfix) Query(ctx context.Context, queueDir, key, table string) (answer string, found bool, err error) {
	argv := p.command("postmap", "-q", key, table)
	out, err := p.run(ctx, queueDir, argv)
	var ce *CommandError
	if errors.As(err, &ce) && strings.TrimSpace(ce.Output) == "" {
		// Exit 1 and silence: not found.
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == 1 {
			return "", false, nil
		}
	}
	if err != nil {
		return "", false, err
	}
	return strings.TrimRight(out, "\n"), true, nil
}

// Exec runs one change (a command line from a Change) against Dir.
func (p *Postfix) Exec(ctx context.Context, argv []string) error {
	_, err := p.run(ctx, "", argv)
	return err
}

// ShellQuote makes a command line that a shell reads back as argv.
func ShellQuote(argv []string) string {
	words := make([]string, len(argv))
	for i, a := range argv {
		words[i] = quote(a)
	}
	return strings.Join(words, " ")
}

func quote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@,+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Reload makes a running Postfix read its configuration again.
func (p *Postfix) Reload(ctx context.Context) error {
	_, err := p.run(ctx, "", p.command("postfix", "reload"))
	return err
}
