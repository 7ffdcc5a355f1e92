// Package table answers Postfix's table lookups for transport_maps, so that
// Postfix sends a message to the onionmx transport only when the recipient
// domain has an onion route, and to its default transport otherwise. It
// speaks two of Postfix's client/server table protocols, socketmap_table(5)
// and tcp_table(5), on one connection (stdin/stdout under spawn(8)) or on a
// listener, and explains its answers to people ("onionmx lookup").
//
// Routes come from package lookup, the code that "onionmx deliver" uses, so
// routing and delivery cannot disagree. One lookup goes like this:
//
//  1. Parse the key. Postfix asks a socketmap or tcp table only for the
//     full recipient address (both are pattern tables to Postfix: no
//     domain or parent-domain keys), so an address is answered for its
//     domain; a bare domain, as "postmap -q" may ask, is answered too.
//     Keys that never have a route — the "*" wildcard that trivial-rewrite
//     asks every 30 seconds, a parent-domain key ".example.org", an address
//     literal — are NOTFOUND without any lookup. Keys that cannot be an
//     address (control characters, a domain that is not a domain name,
//     longer than MaxKeyLen) are PERM — unless their domain ends in
//     ".onion" (step 3).
//  2. A --self domain is NOTFOUND: our own mail never goes over Tor.
//  3. A .onion domain, a subdomain of one, and any key whose domain merely
//     ends in ".onion" always go to onionmx, without any DNS query: a
//     usable v3 onion as a route, anything else as "<transport>:" (an empty
//     nexthop), which deliver bounces with the reason. NOTFOUND or PERM
//     would let Postfix's smtp(8) look the name up in DNS (RFC 7686
//     forbids it) and try the clear net.
//  4. Resolve the domain with the shared lookup.Resolver: a static-map
//     entry without any DNS query, otherwise the SRV records of
//     _onion-mx._tcp.<domain>., within Timeout.
//  5. A route is OK "<transport>:<nexthop>" (see Answerer.Result for the
//     nexthop); no route (NXDOMAIN, no records, no usable target) and a
//     domain the static map routes to another transport
//     (*lookup.ElsewhereError) are NOTFOUND; an unknown answer (SERVFAIL,
//     timeout) and a bad static-map entry (*lookup.MapError, a
//     configuration error, "FILE:LINE: ...") are TEMP, so that Postfix
//     defers the mail instead of sending it over the clear net.
package table

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/onionmx/onionmx/lookup"
)

// DefaultTimeout bounds the route lookup for one key. Go's resolver follows
// resolv.conf: 5 s per attempt, 2 attempts, up to 3 name servers (the
// defaults and MAXNS of resolv.conf(5)) make 30 s. It stays well below the
// 100 s I/O timeout of Postfix's socketmap and tcp table clients, so that
// Postfix gets a TEMP rather than a broken connection.
const DefaultTimeout = 30 * time.Second

// MaxKeyLen bounds a key. An address is at most 64 + 1 + 255 octets by
// RFC 5321 section 4.5.3.1; Postfix accepts longer local parts, so the bound
// is generous, but it keeps junk from reaching the resolver.
const MaxKeyLen = 4096

// Class is the kind of an answer, in socketmap_table(5)'s terms.
type Class int

const (
	// Found: the key has an onion route (socketmap OK, tcp_table 200).
	Found Class = iota
	// NotFound: the key has no onion route; Postfix uses the next table
	// or its default transport (socketmap NOTFOUND, tcp_table 500).
	NotFound
	// Temp: the answer is unknown for now; Postfix defers the mail
	// (socketmap TEMP, tcp_table 400).
	Temp
	// Perm: the request is malformed (socketmap PERM, tcp_table 500).
	Perm
)

func (c Class) String() string {
	switch c {
	case Found:
		return "OK"
	case NotFound:
		return "NOTFOUND"
	case Temp:
		return "TEMP"
	case Perm:
		return "PERM"
	}
	return fmt.Sprintf("Class(%d)", int(c))
}

// Answer is the answer to one key.
type Answer struct {
	Key   Key
	Class Class
	// Result is the transport-map value for Found: "onionmx:[x.onion]:25"
	// or "onionmx:".
	Result string
	// Reason says why, in one line: the route's source for Found, what was
	// looked up otherwise.
	Reason string
	// Route is the route for Found; nil for a .onion domain that onionmx
	// cannot use and bounces (see Routed).
	Route *lookup.Route
	// Err is the lookup failure behind NotFound and Temp, and behind a
	// Found for a .onion domain that onionmx bounces, when there was one
	// (a *lookup.Error, *lookup.MapError or *lookup.ElsewhereError).
	Err error
	// SRV are the records DNS returned, when DNS was asked (for Explain).
	SRV []*net.SRV
}

// Key is a lookup key, parsed.
type Key struct {
	// Raw is the key as asked.
	Raw string
	// Address is set when the key is a mail address; Domain is then its
	// domain.
	Address bool
	// Domain is the normalized domain to resolve; empty when NoRoute is
	// set.
	Domain string
	// NoRoute, when set, says why the key never has a route.
	NoRoute string
	// Onion is set when the key's domain is in .onion (RFC 7686), even
	// when it is not a domain name at all: such a key always goes to
	// onionmx, never to a transport that would look it up in DNS.
	Onion bool
	// Invalid, for an Onion key, says why its domain is not a domain name;
	// Domain is then empty.
	Invalid string
}

// unbracket removes the brackets of an address literal, "[x]".
func unbracket(s string) string {
	if len(s) >= 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}

// ParseKey parses a key as Postfix sends it: a full address ("user@domain",
// the local part possibly with spaces or "@" from an unquoted quoted local
// part), or a domain. It returns an error for keys that cannot be either.
func ParseKey(raw string) (Key, error) {
	k := Key{Raw: raw}
	switch {
	case raw == "":
		return k, errors.New("empty key")
	case len(raw) > MaxKeyLen:
		return k, fmt.Errorf("key is %d bytes long, at most %d are allowed", len(raw), MaxKeyLen)
	}
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c < ' ' || c == 0x7f {
			return k, fmt.Errorf("key contains control character 0x%02x", c)
		}
	}
	if raw == "*" {
		// trivial-rewrite asks for the wildcard entry every 30 seconds; an
		// error here would defer all mail.
		k.NoRoute = "the wildcard key: onionmx routes by domain"
		return k, nil
	}
	domain := raw
	if i := strings.LastIndexByte(raw, '@'); i >= 0 {
		k.Address = true
		domain = raw[i+1:]
		if domain == "" {
			return k, errors.New("address has an empty domain")
		}
	}
	if lookup.LooksOnion(domain) {
		// A .onion name, or junk that ends in one: never NOTFOUND or PERM,
		// which would let Postfix's smtp(8) look it up in DNS.
		k.Onion = true
		d, err := lookup.NormalizeDomain(unbracket(domain))
		if err != nil {
			k.Invalid = err.Error()
			return k, nil
		}
		k.Domain = d
		return k, nil
	}
	switch {
	case strings.HasPrefix(domain, ".") && !k.Address && len(domain) > 1:
		if _, err := lookup.NormalizeDomain(domain[1:]); err != nil {
			return k, fmt.Errorf("parent-domain key: %w", err)
		}
		k.NoRoute = "a parent-domain key: onionmx answers for whole domains"
		return k, nil
	case strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]"):
		k.NoRoute = "an address literal: onionmx routes only onion domains"
		return k, nil
	case net.ParseIP(domain) != nil:
		k.NoRoute = "an IP address: onionmx routes only onion domains"
		return k, nil
	}
	d, err := lookup.NormalizeDomain(domain)
	if err != nil {
		return k, err
	}
	k.Domain = d
	return k, nil
}

// Answerer answers keys. Its methods are safe for concurrent use.
type Answerer struct {
	// Resolver finds routes; the same configuration as "onionmx deliver".
	// Required. Its Rand, if set, must be safe for concurrent use (a
	// *rand.Rand is not): leave it nil.
	Resolver *lookup.Resolver
	// Transport is the master.cf service name the answers name, "onionmx".
	Transport string
	// Self are our own domains, normalized: never routed. An entry
	// ".example.org" covers the subdomains of example.org.
	Self []string
	// Timeout bounds the route lookup of one key; 0 means DefaultTimeout.
	Timeout time.Duration
}

// Lookup answers one key.
func (a *Answerer) Lookup(ctx context.Context, raw string) Answer {
	k, err := ParseKey(raw)
	ans := Answer{Key: k}
	if err != nil {
		ans.Class, ans.Reason = Perm, err.Error()
		return ans
	}
	if k.NoRoute != "" {
		ans.Class, ans.Reason = NotFound, k.NoRoute
		return ans
	}
	if k.Domain != "" && a.isSelf(k.Domain) {
		ans.Class, ans.Reason = NotFound, k.Domain+" is one of our own domains (--self)"
		return ans
	}
	if k.Invalid != "" {
		return a.bounce(ans, k.Invalid)
	}

	ctx, cancel := context.WithTimeout(ctx, cmp.Or(a.Timeout, DefaultTimeout))
	defer cancel()
	// A copy of the resolver per lookup, to keep the SRV records it saw.
	r := *a.Resolver
	var rec *recorder
	if r.DNS != nil {
		rec = &recorder{SRVResolver: r.DNS}
		r.DNS = rec
	}
	route, err := r.Resolve(ctx, lookup.Nexthop{Host: k.Domain})
	if rec != nil {
		ans.SRV = rec.records
	}
	if err != nil {
		ans.Err = err
		ans.Reason = err.Error()
		var (
			le *lookup.Error
			ee *lookup.ElsewhereError
		)
		switch {
		case errors.As(err, &ee):
			// The map that Postfix reads too routes it: Postfix's own
			// copy of the entry applies.
			ans.Class = NotFound
		case errors.As(err, &le) && !le.Temporary && k.Onion:
			reason := err.Error()
			if len(le.Skipped) > 0 {
				host := le.Skipped[0].Target
				if h, _, err := net.SplitHostPort(host); err == nil {
					host = h
				}
				reason = host + ": " + le.Skipped[0].Reason
			}
			return a.bounce(ans, reason)
		case errors.As(err, &le) && !le.Temporary:
			ans.Class = NotFound
		default:
			// An unknown answer, a bad static-map entry (*lookup.MapError,
			// "FILE:LINE: ..."): the mail waits.
			ans.Class = Temp
		}
		return ans
	}
	ans.Class, ans.Route = Found, route
	ans.Result = a.Result(route)
	ans.Reason = route.Source
	return ans
}

// bounce answers a .onion domain that onionmx cannot use: it goes to
// onionmx all the same, with an empty nexthop (Postfix passes the domain),
// and deliver bounces it with the reason. Anything else would hand it to a
// transport that looks the name up in DNS and tries the clear net.
func (a *Answerer) bounce(ans Answer, reason string) Answer {
	ans.Class, ans.Result = Found, a.Transport+":"
	ans.Reason = "goes to " + a.Transport + ", which bounces it: " + reason
	return ans
}

// Routed reports whether the answer is a route: Found, and not a .onion
// domain that onionmx bounces.
func (ans Answer) Routed() bool { return ans.Class == Found && ans.Route != nil }

// Result returns the transport-map value for a route: the transport and a
// nexthop that lets "onionmx deliver" fail over exactly as the route says.
//
//   - One usable target (a static-map entry, a .onion domain, an SRV
//     record set with one usable target): that target, "[x.onion]:port".
//     The brackets tell deliver to use it with no lookup, so a pinned
//     route never leaks to DNS, deliver needs no copy of the maps, and
//     domains on one onion share one Postfix destination queue.
//   - Several targets (SRV): an empty nexthop, which Postfix replaces with
//     the recipient domain; deliver then resolves the SRV records itself
//     and tries every target in RFC 2782 order, with a fresh weighted draw
//     for each delivery.
func (a *Answerer) Result(route *lookup.Route) string {
	if len(route.Targets) == 1 {
		return a.Transport + ":" + route.Targets[0].Nexthop()
	}
	if strings.HasPrefix(route.Source, "static map ") {
		// Several onions of a map entry: all of them, in order, as a
		// Postfix 3.5 nexthop list, so that deliver needs no copy of the
		// map and makes no DNS query.
		var b strings.Builder
		b.WriteString(a.Transport + ":")
		for i, t := range route.Targets {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(t.Nexthop())
		}
		return b.String()
	}
	return a.Transport + ":"
}

func (a *Answerer) isSelf(domain string) bool {
	for _, s := range a.Self {
		if s == domain || strings.HasPrefix(s, ".") && strings.HasSuffix(domain, s) {
			return true
		}
	}
	return false
}

// ParseSelf normalizes one of our own domains: a domain, or ".domain"
// for its subdomains.
func ParseSelf(s string) (string, error) {
	parent := strings.HasPrefix(s, ".")
	d, err := lookup.NormalizeDomain(strings.TrimPrefix(s, "."))
	if err != nil {
		return "", err
	}
	if parent {
		d = "." + d
	}
	return d, nil
}

// maxTransportLen bounds a transport name, so that an answer always fits a
// reply (a tcp_table reply line has 4096 bytes).
const maxTransportLen = 100

// ErrTransportChars is CheckTransport's error for a name with a character
// that master.cf does not allow; its others are about the name's length,
// where the name is not worth repeating.
var ErrTransportChars = errors.New("a master.cf service name has only letters, digits, '-', '_' and '.'")

// CheckTransport checks onionmx's transport name: a master.cf service name.
func CheckTransport(name string) error {
	if name == "" {
		return errors.New("empty transport name")
	}
	if len(name) > maxTransportLen {
		return fmt.Errorf("name longer than %d characters", maxTransportLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
		if !ok {
			return ErrTransportChars
		}
	}
	return nil
}

// recorder keeps the SRV records a lookup returned.
type recorder struct {
	lookup.SRVResolver
	records []*net.SRV
}

func (r *recorder) LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
	cname, srvs, err := r.SRVResolver.LookupSRV(ctx, service, proto, name)
	r.records = append(r.records, srvs...)
	return cname, srvs, err
}
