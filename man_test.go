package main

import (
	"flag"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/cpuguy83/go-md2man/v2/md2man"
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

// manPage renders onionmx(8): urfave/cli's page for the app (name,
// synopsis, every command with its flags and defaults), a description, and
// the sections its template lacks, exit statuses first.
func manPage() (string, error) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	app.Description = manDescription
	md, err := app.ToMarkdown()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("% onionmx 8\n\n")
	b.WriteString(md)
	b.WriteString("\n# EXIT STATUS\n\n")
	b.WriteString(manDeliverStatus)
	for _, cmd := range app.Commands {
		if cmd.Hidden || cmd.Description == "" {
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

const manDescription = `onionmx delivers mail between mail servers over Tor onion services.
Postfix runs **onionmx deliver** as a pipe(8) transport, once per message,
and asks **onionmx socketmap** (spawned by spawn(8)) or **onionmx tcptable**
which recipient domains have an onion route: a static map entry, a .onion
domain, or SRV records under _onion-mx._tcp.DOMAIN. **onionmx lookup** shows
people what Postfix is told and why, **onionmx srv-record** prints the SRV
record a receiving domain publishes, and **onionmx check** is a monitoring
plugin for the onion MXs and the local Tor.

Only v3 onion addresses are ever dialled, through Tor's SocksPort, never the
clear net. Routes from a nexthop in brackets, a .onion domain or a static map
make no DNS query. SRV queries go to the system's resolvers, the **--dns**
server, or with **--dns-via-tor** as DNS over TCP through Tor to one
resolver; with **--dnssec require** SRV records count only when the
resolver sets the AD bit, which is worth what the path to the resolver is
worth: run a validating resolver (unbound) on this machine.
`

const manDeliverStatus = `**deliver**: one line of output, starting with an RFC 3463 status code.
0 delivered (the remote's reply on stdout); 75 (EX_TEMPFAIL) with 4.x.y: Postfix
defers and tries again (Tor or DNS trouble, 4xx replies, lost connections);
78 (EX_CONFIG) with 4.3.5: a usage or configuration error, deferred too;
67, 68, 69, 65 or 77 with 5.x.y: Postfix bounces the message (unknown user,
no onion route, 5xx replies, SMTPUTF8 needed, client authorization).
`

const manRest = `
# FILES

*/etc/resolv.conf*
: the system's resolvers for SRV queries without **--dns** or **--dns-via-tor**: its
nameserver lines and the options timeout, attempts, use-vc and trust-ad. A
resolver's AD bit counts for **--dnssec require** when it runs on this machine
or trust-ad is set.

# SEE ALSO

pipe(8), spawn(8), socketmap_table(5), tcp_table(5), transport(5), tor(1),
resolv.conf(5), unbound(8)
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
