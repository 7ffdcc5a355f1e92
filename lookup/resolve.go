// Package lookup finds where mail for a destination goes over Tor: it parses
// Postfix's nexthop, validates v3 onion addresses, reads static maps and
// looks up the _onion-mx._tcp SRV records of mail domains.
//
// Resolution follows these rules, in order:
//
//  1. A nexthop in brackets ("[x.onion]:port") is that host: no lookups.
//  2. A nexthop (or, with none, the recipients' domain) in .onion is that
//     onion: no lookups. Onion names never reach a DNS resolver (RFC 7686).
//  3. Otherwise it is a mail domain: the static maps are asked first, and
//     when one answers no DNS query is made, so pinned routes do not leak:
//     its onion targets in order, or a *MapError for a bad entry (a
//     configuration error: a typo in an onion, a clear-net host for
//     onionmx's transport), or an *ElsewhereError for another transport's
//     entry in a map shared with Postfix. An entry of onionmx's transport
//     with an empty nexthop, and a domain that no map knows, go on to DNS:
//     the SRV records of "_onion-mx._tcp.<domain>.", fully qualified so
//     that no search-domain queries leak, ordered by RFC 2782 priority and
//     weight.
//  4. Only v3 onion addresses are usable targets. v2 addresses, bad
//     checksums, names outside .onion (onionmx never dials the clear net)
//     and the RFC 2782 "." target are skipped, each with a reason.
//  5. With DNSSEC required (dns.Client.DNSSEC), SRV records count only when
//     the resolver set the AD bit; unauthenticated records are no route.
//
// A domain without a usable route is a permanent *Error; an unknown answer
// (SERVFAIL, timeout) is a temporary one, so that mail is deferred and never
// sent over the clear net instead.
//
// dns.Client sends the SRV queries: over UDP and TCP to the system's
// resolvers or a given server, or as DNS over TCP through Tor's SocksPort.
package lookup

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/onionmx/onionmx/dns"
)

// SRVService is the owner-name prefix the onionmx community publishes its
// records under: "_onion-mx._tcp.<domain>. IN SRV prio weight port x.onion."
const SRVService = "_onion-mx._tcp."

// SRVResolver looks up SRV records, with Go's *net.Resolver conventions: a
// *net.DNSError with IsNotFound for a name that does not exist, any other
// error for an unknown answer. *dns.Client implements it, and so does
// *net.Resolver; tests pass their own.
type SRVResolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

// Target is one onion service to deliver to.
type Target struct {
	Host string // "<56 base32>.onion", lower case, no trailing dot
	Port uint16
}

// Addr returns "host:port", the form a SOCKS CONNECT takes.
func (t Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port))) }

// Nexthop returns the target in Postfix's nexthop notation, "[host]:port".
func (t Target) Nexthop() string { return "[" + t.Host + "]:" + strconv.Itoa(int(t.Port)) }

// Skipped is a candidate target that is not used, and why.
type Skipped struct {
	Target string // as published: host or host:port
	Reason string
}

// Route is the result of a resolution: the targets to try, in order.
type Route struct {
	// Domain is the destination that was resolved: the nexthop host or the
	// recipients' domain.
	Domain string
	// Source says where the targets come from: "nexthop", "onion domain",
	// "static map FILE:LINE" or "DNS SRV _onion-mx._tcp.DOMAIN.".
	Source string
	// Targets are the usable targets in the order to try them; never empty
	// when Resolve returns no error.
	Targets []Target
	// Skipped are the candidates that are not usable.
	Skipped []Skipped
}

// Error is a failure to find a route.
type Error struct {
	Domain string
	// Temporary is set when the answer is unknown (DNS failure): the mail
	// must be deferred. Otherwise the domain has no onion route.
	Temporary bool
	// Looked says what was looked up, for the administrator.
	Looked  string
	Skipped []Skipped
	Err     error
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Temporary {
		fmt.Fprintf(&b, "cannot find onion route for %s: %s", e.Domain, e.Looked)
	} else {
		fmt.Fprintf(&b, "no onion route for %s: %s", e.Domain, e.Looked)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	for _, s := range e.Skipped {
		fmt.Fprintf(&b, "; skipped %s: %s", s.Target, s.Reason)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Resolver resolves destinations to routes.
type Resolver struct {
	// Maps are the static maps, asked in order; the first match wins.
	Maps []*Map
	// DNS looks up SRV records. With nil, a domain that no map knows has no
	// route.
	DNS SRVResolver
	// Rand shuffles SRV targets of equal priority by weight; nil uses the
	// global source.
	Rand *rand.Rand
}

// Resolve returns the route for a nexthop (a domain: the recipients'
// domain). Its errors are:
//
//   - *Error: no route (permanent), or an unknown answer (Temporary);
//   - *MapError: the domain hits a bad static-map entry, a configuration
//     error ("FILE:LINE: ..."); no DNS query;
//   - *ElsewhereError: a static map routes the domain to another
//     transport; no DNS query.
func (r *Resolver) Resolve(ctx context.Context, nh Nexthop) (*Route, error) {
	route := &Route{Domain: nh.Host}
	switch {
	case nh.Literal:
		route.Source = "nexthop"
		route.add(nh.Host, nh.Port)
	case IsOnion(nh.Host):
		route.Source = "onion domain"
		route.add(nh.Host, nh.Port)
	default:
		if nh.Port != 0 {
			return nil, &Error{Domain: nh.Host, Looked: "nexthop " + nh.String(),
				Err: errors.New("a port is meaningful only with an onion or a bracketed nexthop")}
		}
		found, err := r.fromMaps(route)
		if err != nil {
			return nil, err
		}
		if !found {
			if err := r.fromSRV(ctx, route); err != nil {
				return nil, err
			}
		}
	}
	if len(route.Targets) == 0 {
		return nil, &Error{Domain: route.Domain, Looked: route.Source, Skipped: route.Skipped,
			Err: errors.New("no usable onion target")}
	}
	return route, nil
}

// add appends host:port to the targets when it is a usable v3 onion, and
// to the skipped ones otherwise.
func (route *Route) add(host string, port uint16) {
	if port == 0 {
		port = DefaultPort
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if err := CheckOnion(host); err != nil {
		reason := err.Error()
		if errors.Is(err, ErrNotOnion) {
			reason = "not a .onion name (onionmx never dials the clear net)"
		}
		route.Skipped = append(route.Skipped, Skipped{Target: net.JoinHostPort(host, strconv.Itoa(int(port))), Reason: reason})
		return
	}
	route.Targets = append(route.Targets, Target{Host: host, Port: port})
}

// fromMaps adds the targets of the first map that knows the domain, in
// order, and reports whether one did. An entry with an empty nexthop sends
// the domain on to its SRV records. A bad entry is its *MapError, an entry
// for another transport an *ElsewhereError: no DNS query either way.
func (r *Resolver) fromMaps(route *Route) (bool, error) {
	for _, m := range r.Maps {
		e, ok := m.Find(route.Domain)
		if !ok {
			continue
		}
		switch e.Kind {
		case EntryBad:
			return true, e.Problem
		case EntryElsewhere:
			return true, &ElsewhereError{File: e.File, Line: e.Line, Domain: route.Domain, Key: e.Key,
				Transport: e.Transport, Value: e.Value, Ours: m.Transport}
		}
		if len(e.Nexthops) == 0 {
			return false, nil
		}
		route.Source = fmt.Sprintf("static map %s:%d", e.File, e.Line)
		for _, nh := range e.Nexthops {
			route.add(nh.Host, nh.Port)
		}
		return true, nil
	}
	return false, nil
}

func (r *Resolver) fromSRV(ctx context.Context, route *Route) error {
	name := SRVService + route.Domain + "."
	route.Source = "DNS SRV " + name
	if r.DNS == nil {
		return &Error{Domain: route.Domain, Looked: "static maps (DNS not used)"}
	}
	_, srvs, err := r.DNS.LookupSRV(ctx, "", "", name)
	if errors.Is(err, dns.ErrNotAuthenticated) {
		// Whatever came with it does not count: the records may be forged.
		// Keep the reason without Go's "lookup NAME on SERVER" prefix.
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			err = fmt.Errorf("%w%s", dns.ErrNotAuthenticated, strings.TrimPrefix(dnsErr.Err, dns.ErrNotAuthenticated.Error()))
		}
		return &Error{Domain: route.Domain, Looked: route.Source, Err: err}
	}
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) {
			if dnsErr.IsNotFound {
				return &Error{Domain: route.Domain, Looked: route.Source, Err: errors.New("no such record")}
			}
			// Go's message names resolv.conf's server even when a custom
			// Dial sent the query elsewhere (--dns); keep only the cause.
			err = errors.New(dnsErr.Err)
		}
		// Go's resolver returns the records it could parse together with
		// an error for those it could not; use what parsed.
		if len(srvs) == 0 {
			return &Error{Domain: route.Domain, Temporary: true, Looked: route.Source, Err: err}
		}
	}
	if len(srvs) == 0 {
		return &Error{Domain: route.Domain, Looked: route.Source, Err: errors.New("no records")}
	}
	for _, s := range OrderSRV(srvs, r.Rand) {
		if s.Target == "." || s.Target == "" {
			route.Skipped = append(route.Skipped, Skipped{Target: ".", Reason: "service decidedly not available (RFC 2782)"})
			continue
		}
		if s.Port == 0 {
			route.Skipped = append(route.Skipped, Skipped{Target: s.Target, Reason: "port 0"})
			continue
		}
		route.add(s.Target, s.Port)
	}
	return nil
}

// OrderSRV returns the records in the order RFC 2782 says to try them: by
// ascending priority, and within a priority by a random draw weighted by
// weight (records of weight 0 get a small chance). rnd may be nil.
func OrderSRV(records []*net.SRV, rnd *rand.Rand) []*net.SRV {
	intN := rand.IntN
	if rnd != nil {
		intN = rnd.IntN
	}
	in := slices.Clone(records)
	slices.SortStableFunc(in, func(a, b *net.SRV) int { return cmp.Compare(a.Priority, b.Priority) })
	out := make([]*net.SRV, 0, len(in))
	for len(in) > 0 {
		n := 1
		for n < len(in) && in[n].Priority == in[0].Priority {
			n++
		}
		group := in[:n]
		for len(group) > 0 {
			// RFC 2782: weight-0 records first, then a running sum; pick the
			// first whose sum reaches a random number in [0, total].
			slices.SortStableFunc(group, func(a, b *net.SRV) int {
				return cmp.Compare(min(a.Weight, 1), min(b.Weight, 1))
			})
			total := 0
			for _, s := range group {
				total += int(s.Weight)
			}
			pick := intN(total + 1)
			i, sum := 0, 0
			for ; i < len(group)-1; i++ {
				sum += int(group[i].Weight)
				if sum >= pick {
					break
				}
			}
			out = append(out, group[i])
			group = slices.Delete(group, i, i+1)
		}
		in = in[n:]
	}
	return out
}

// ParseNexthopList parses a Postfix 3.5 nexthop list: nexthops separated
// by commas or white space. The lookup servers answer one for a static-map
// entry with several onions ("[a.onion]:25,[b.onion]:2525"), so that
// deliver tries them in order with no lookup and no copy of the map
// (deliver resolves each member, and judges the list as configuration). A
// single nexthop is a list of one.
func ParseNexthopList(s string) ([]Nexthop, error) {
	parts := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || isMapSpace(r) })
	if len(parts) == 0 {
		return nil, errors.New("empty nexthop")
	}
	nhs := make([]Nexthop, 0, len(parts))
	for _, p := range parts {
		nh, err := ParseNexthop(p)
		if err != nil {
			return nil, err
		}
		nhs = append(nhs, nh)
	}
	return nhs, nil
}
