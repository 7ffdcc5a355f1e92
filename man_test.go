package main

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/urfave/cli/v2"
)

// The man page is generated from the command definitions, and checked here
// against them: when a command or flag changes, regenerate it with
//
//	go generate
//
// which runs this test with -update-man. There is no hidden command in the
// binary for it, and no exported function: the generator is the test.
//
//go:generate go test -run ^TestManPage$ -update-man .

var updateMan = flag.Bool("update-man", false, "rewrite onionmx.8 from the command definitions")

const manFile = "onionmx.8"

// manPage renders onionmx(8) from the command definitions: a synopsis line
// per command, a description, every command with its flags, value names
// and defaults, the exit statuses from each command's description, and
// the sections that are prose.
func manPage() (string, error) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	var b strings.Builder
	b.WriteString("% onionmx 8\n\n# NAME\n\nonionmx - " + app.Usage + "\n\n# SYNOPSIS\n\n")
	commands := manCommands(app.Commands)
	for _, cmd := range commands {
		b.WriteString("**onionmx " + cmd.Name + "** " + manSynopsis(cmd) + "\n\n")
	}
	b.WriteString("**onionmx --version**\n\n")
	b.WriteString("# DESCRIPTION\n\n" + manDescription)
	b.WriteString("\n# COMMANDS\n")
	for _, cmd := range commands {
		b.WriteString("\n## " + cmd.Name + "\n\n" + cmd.Usage + ".\n")
		for _, f := range cmd.VisibleFlags() {
			b.WriteString("\n" + manFlag(f) + "\n")
		}
	}
	b.WriteString("\n# EXIT STATUS\n")
	for _, cmd := range commands {
		if cmd.Description == "" {
			continue
		}
		// Each command's own description, which says its exit statuses,
		// as it is laid out for the terminal: a preformatted block.
		b.WriteString("\n**" + cmd.Name + "**:\n\n")
		for _, line := range strings.Split(strings.TrimRight(cmd.Description, "\n"), "\n") {
			b.WriteString("    " + line + "\n")
		}
	}
	b.WriteString(manRest)
	return string(md2man.Render([]byte(b.String()))), nil
}

// manCommands lists the visible commands, a command with subcommands
// ("setup") as its subcommands, each named with its parent's name
// ("setup postfix").
func manCommands(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, cmd := range cmds {
		switch {
		case cmd.Hidden:
		case len(cmd.Subcommands) > 0:
			for _, sub := range manCommands(cmd.Subcommands) {
				named := *sub
				named.Name = cmd.Name + " " + sub.Name
				out = append(out, &named)
			}
		default:
			out = append(out, cmd)
		}
	}
	return out
}

// manSynopsis is a command's synopsis after its name, from its UsageText
// (when it has one) or its ArgsUsage.
func manSynopsis(cmd *cli.Command) string {
	if u, ok := strings.CutPrefix(cmd.UsageText, "onionmx "+cmd.Name+" "); ok {
		return manWords(u)
	}
	return manWords(strings.TrimSpace("[OPTIONS] " + cmd.ArgsUsage))
}

// manWords sets upper-case words (placeholders) in italics.
func manWords(s string) string {
	words := strings.Fields(s)
	for i, w := range words {
		core := strings.Trim(w, "[]|.")
		if core != "" && core != "--" && strings.ToUpper(core) == core && strings.IndexFunc(core, func(r rune) bool { return r >= 'A' && r <= 'Z' }) >= 0 {
			words[i] = strings.Replace(w, core, "*"+core+"*", 1)
		}
	}
	return strings.Join(words, " ")
}

// unquoteUsage splits a flag's usage as urfave/cli does: the first word in
// back quotes is the value's name, and the quotes go.
func unquoteUsage(usage string) (name, text string) {
	before, rest, ok := strings.Cut(usage, "`")
	if !ok {
		return "", usage
	}
	name, after, ok := strings.Cut(rest, "`")
	if !ok {
		return "", usage
	}
	return name, before + name + after
}

// manFlag renders one flag: "**--name**, **-n** *VALUE*: usage (default: x)",
// the default only when it says something.
func manFlag(f cli.Flag) string {
	var names []string
	for _, n := range f.Names() {
		dash := "--"
		if len(n) == 1 {
			dash = "-"
		}
		names = append(names, "**"+dash+n+"**")
	}
	line := strings.Join(names, ", ")
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return line
	}
	value, usage := unquoteUsage(df.GetUsage())
	if df.TakesValue() {
		if value == "" {
			value = "VALUE"
		}
		line += " *" + value + "*"
	}
	usage = strings.ReplaceAll(usage, "*", "\\*")
	line += ": " + usage
	if def := df.GetDefaultText(); df.TakesValue() && def != "" && def != "0" && def != `""` {
		line += " (default: " + strings.Trim(def, `"`) + ")"
	}
	return line
}

const manDescription = `onionmx delivers mail between mail servers over Tor onion services.
Postfix runs **onionmx deliver** as a pipe(8) transport, once per message,
and asks **onionmx socketmap** (spawned by spawn(8)) or **onionmx tcptable**
which recipient domains have an onion route: a static map entry, a .onion
domain, or SRV records under _onion-mx._tcp.DOMAIN. **onionmx lookup** shows
people what Postfix is told and why, **onionmx srv-record** prints the SRV
record a receiving domain publishes, and **onionmx check** is a monitoring
plugin for the onion MXs and the local Tor. **onionmx setup postfix** adds
the services and main.cf lines to an existing Postfix with postconf(1), and
takes them out again with **--remove**.

Only v3 onion addresses are ever dialled, through Tor's SocksPort, never the
clear net. Routes from a nexthop in brackets, a .onion domain or a static map
make no DNS query. SRV queries go to the system's resolvers, the **--dns**
server, or with **--dns-via-tor** as DNS over TCP through Tor to one
resolver; with **--dnssec require** SRV records count only when the
resolver sets the AD bit, which is worth what the path to the resolver is
worth: run a validating resolver (unbound) on this machine.
`

const manRest = `
# FILES

*/etc/postfix/onionmx-setup.state*
: what **onionmx setup postfix** changed in that configuration directory (the
directory of **-c**), and copies of main.cf and master.cf as they were before:
what **--remove** restores. Deleted by **--remove**.

*/etc/resolv.conf*
: the system's resolvers for SRV queries without **--dns** or **--dns-via-tor**: its
nameserver lines and the options timeout, attempts, use-vc and trust-ad. A
resolver's AD bit counts for **--dnssec require** when it runs on this machine
or trust-ad is set.

# SEE ALSO

pipe(8), spawn(8), socketmap_table(5), tcp_table(5), transport(5), postconf(1),
postmap(1), tor(1), resolv.conf(5), unbound(8)
`

// TestManPage fails when onionmx.8 is not what the command definitions
// make of it.
func TestManPage(t *testing.T) {
	got, err := manPage()
	if err != nil {
		t.Fatal(err)
	}
	if *updateMan {
		if err := os.WriteFile(manFile, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(manFile)
	if err != nil {
		t.Fatalf("%v (generate it with go generate)", err)
	}
	if string(want) != got {
		t.Errorf("%s is out of date with the command definitions: regenerate it with go generate", manFile)
	}
}
