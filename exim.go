package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/onionmx/onionmx/deliver"
)

// "onionmx deliver --exim" is deliver as Exim's pipe transport runs it
// (exim4.conf.example). Exim 4.96 fails a delivery whose command has a
// tainted argument, and the sender is tainted; so the sender and the route
// the router found come from the transport's environment option:
// ONIONMX_SENDER, Exim's return path ($return_path, empty for a bounce),
// and ONIONMX_NEXTHOP. The recipients are the arguments, $pipe_addresses,
// which Exim exempts from the taint check.
//
// The return path, not the SENDER variable the pipe transport sets: that
// one is $sender_address, the message's sender, whichever errors_to a
// router set. An alias list sets errors_to to its owner; with SENDER, the
// remote's bounces would go to whoever wrote to the list, naming the
// members, where Exim's smtp transport sends them to the owner.
//
// Exim defers a pipe delivery only on the statuses in temp_errors (75:73 by
// default) and bounces on every other, 78 (EX_CONFIG) included; it reads
// no status code in the output. So under --exim a usage or configuration
// error exits 75.

// eximEnv is what deliver --exim takes from its environment.
type eximEnv struct {
	sender  string // the return path; "" is the null sender
	nexthop string // as Postfix's ${nexthop}: "" is the recipients' domain
}

// eximEnviron reads ONIONMX_SENDER and ONIONMX_NEXTHOP with lookup
// (os.LookupEnv). Both must be set. A missing ONIONMX_SENDER is a
// transport without the environment option, or one written for an older
// example; SENDER does not stand in for it (see above). An empty
// ONIONMX_NEXTHOP is the recipients' domain (the lookup server's
// "onionmx:" answer), but a missing one is a transport without the
// environment option, whose route would be lost: a domain pinned in the
// static map would be looked up in DNS instead.
func eximEnviron(lookup func(string) (string, bool)) (*eximEnv, error) {
	sender, ok := lookup("ONIONMX_SENDER")
	if !ok {
		return nil, deliver.ConfigError(errors.New("--exim: no ONIONMX_SENDER in the environment: the transport's environment option must pass Exim's return path (see exim4.conf.example)"))
	}
	nexthop, ok := lookup("ONIONMX_NEXTHOP")
	if !ok {
		return nil, deliver.ConfigError(errors.New("--exim: no ONIONMX_NEXTHOP in the environment: the transport's environment option must pass the route the router found (see exim4.conf.example)"))
	}
	for _, v := range []struct{ name, value string }{{"ONIONMX_SENDER", sender}, {"ONIONMX_NEXTHOP", nexthop}} {
		if strings.ContainsAny(v.value, "\r\n\x00") {
			return nil, deliver.ConfigError(fmt.Errorf("--exim: %s %q contains a control character", v.name, v.value))
		}
	}
	// The lookup server gives every onion of a route with its port. A
	// member without one is an environment option that split the route
	// at its colons, the list's default separator: "[x.onion]:2525"
	// became ONIONMX_NEXTHOP=[x.onion], which is port 25.
	for _, m := range strings.FieldsFunc(nexthop, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
		if strings.HasSuffix(m, "]") {
			return nil, deliver.ConfigError(fmt.Errorf("--exim: ONIONMX_NEXTHOP %q has no port, which the lookup server's answer always has: the transport's environment option split it at its colons (start it with <;)", nexthop))
		}
	}
	return &eximEnv{sender: sender, nexthop: nexthop}, nil
}

// underExim reports whether any argument asks for --exim (or -exim, or
// with a value). Every argument is looked at, not only the parsed flags,
// so that an error before or while the flags are parsed (an unknown flag,
// a missing command) exits 75 too. Taking another command line for an
// Exim one costs nothing: Postfix's pipe(8) defers on 75 as on 78.
func underExim(args []string) bool {
	for _, a := range args[1:] {
		name, _, _ := strings.Cut(a, "=")
		if name == "--exim" || name == "-exim" {
			return true
		}
	}
	return false
}

// eximBatch checks that the recipients, $pipe_addresses, share one domain.
// The route in ONIONMX_NEXTHOP is the router's answer for the first
// address's domain, and a transport with batch_max above 1 gets the
// addresses of one message batched whatever their domains, unless one of
// its options uses $domain (Exim's deliver.c): a recipient of another
// domain would go to the first one's onion. Exim lowercases domains to
// compare them; $pipe_addresses keeps the case they came with.
func eximBatch(rcpts []string) error {
	domain := func(r string) string { return strings.TrimSuffix(r[strings.LastIndexByte(r, '@')+1:], ".") }
	for _, r := range rcpts[1:] {
		if first, d := domain(rcpts[0]), domain(r); !strings.EqualFold(first, d) {
			return deliver.ConfigError(fmt.Errorf("--exim: recipients in %s and %s: the route in ONIONMX_NEXTHOP is one domain's (Exim batched several domains: set batch_max = 1, or batch_id = $domain, in the transport)", first, d))
		}
	}
	return nil
}
