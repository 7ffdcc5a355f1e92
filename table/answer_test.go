package table

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/onionmx/onionmx/lookup"
)

func TestParseKey(t *testing.T) {
	for _, tc := range []struct {
		key     string
		domain  string
		address bool
		noRoute bool
		err     string
	}{
		{key: "example.org", domain: "example.org"},
		{key: "Example.ORG.", domain: "example.org"},
		{key: "bob@example.org", domain: "example.org", address: true},
		{key: "Bob+ext@Example.ORG", domain: "example.org", address: true},
		// Postfix's internal form of "john smith"@... and "a@b"@...
		{key: "john smith@example.org", domain: "example.org", address: true},
		{key: "a@b@example.org", domain: "example.org", address: true},
		{key: "@example.org", domain: "example.org", address: true},
		{key: "bob@bücher.example", domain: "xn--bcher-kva.example", address: true},
		{key: "*", noRoute: true},
		{key: ".example.org", noRoute: true},
		{key: "[192.0.2.1]", noRoute: true},
		{key: "bob@[192.0.2.1]", address: true, noRoute: true},
		{key: "bob@[ipv6:2001:db8::1]", address: true, noRoute: true},
		{key: "192.0.2.1", noRoute: true},
		{key: "", err: "empty key"},
		{key: "bob@", err: "empty domain"},
		{key: "bob@.example.org", err: "empty label"},
		{key: "bob@exa mple.org", err: "contains ' '"},
		{key: "exa mple.org", err: "contains ' '"},
		{key: "bob@example.org\x00", err: "control character 0x00"},
		{key: "bob\t@example.org", err: "control character 0x09"},
		{key: "bob@example.org\n", err: "control character 0x0a"},
		{key: "bob@exam!ple.org", err: "contains '!'"},
		{key: "bob@" + strings.Repeat("a", 64) + ".org", err: "longer than 63"},
		{key: strings.Repeat("a", MaxKeyLen) + "@example.org", err: "at most 4096"},
		{key: "..", err: "empty domain"},
		{key: ".", err: "empty domain"},
	} {
		k, err := ParseKey(tc.key)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseKey(%q) = %+v, %v; want error with %q", tc.key, k, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseKey(%q): %v", tc.key, err)
			continue
		}
		if k.Domain != tc.domain || k.Address != tc.address || (k.NoRoute != "") != tc.noRoute {
			t.Errorf("ParseKey(%q) = %+v", tc.key, k)
		}
	}
}

func TestLookup(t *testing.T) {
	f := newFixture(t)
	srvName := func(d string) []string { return []string{lookup.SRVService + d + "."} }
	for _, tc := range []struct {
		key     string
		class   Class
		result  string // for Found
		reason  string // substring, for the others
		queried []string
	}{
		// SRV with one usable target: that target, bracketed.
		{key: "bob@single.example", class: Found, result: "onionmx:[" + f.o1 + "]:25", queried: srvName("single.example")},
		{key: "single.example", class: Found, result: "onionmx:[" + f.o1 + "]:25", queried: srvName("single.example")},
		{key: "Bob+Ext@SINGLE.example", class: Found, result: "onionmx:[" + f.o1 + "]:25", queried: srvName("single.example")},
		{key: "john smith@single.example", class: Found, result: "onionmx:[" + f.o1 + "]:25", queried: srvName("single.example")},
		// Several targets: the empty nexthop, for deliver to fail over.
		{key: "carol@multi.example", class: Found, result: "onionmx:", queried: srvName("multi.example")},
		// One usable target among unusable ones.
		{key: "x@mixed.example", class: Found, result: "onionmx:[" + f.o1 + "]:25", queried: srvName("mixed.example")},
		// Static map and onion domains: no DNS query at all.
		{key: "dave@pinned.example", class: Found, result: "onionmx:[" + f.o3 + "]:2525"},
		{key: "x@deep.sub.example", class: Found, result: "onionmx:[" + f.o2 + "]:25"},
		{key: "hank@" + f.o1, class: Found, result: "onionmx:[" + f.o1 + "]:25"},
		{key: "hank@" + strings.ToUpper(f.o1) + ".", class: Found, result: "onionmx:[" + f.o1 + "]:25"},
		{key: f.o2, class: Found, result: "onionmx:[" + f.o2 + "]:25"},
		{key: "x@mail." + f.o2, class: Found, result: "onionmx:[mail." + f.o2 + "]:25"},
		// Unusable ones go to onionmx all the same, which bounces them:
		// never to a transport that would ask DNS.
		{key: "x@" + v2Onion, class: Found, result: "onionmx:"},
		{key: "x@junk.onion", class: Found, result: "onionmx:"},
		// Our own domains: no query.
		{key: "frank@self.example", class: NotFound, reason: "--self"},
		{key: "frank@a.ours.example", class: NotFound, reason: "--self"},
		// Keys that never have a route: no query.
		{key: "*", class: NotFound, reason: "wildcard"},
		{key: ".single.example", class: NotFound, reason: "parent-domain"},
		{key: "bob@[192.0.2.1]", class: NotFound, reason: "address literal"},
		// No route.
		{key: "erin@nxdomain.example", class: NotFound, reason: "no such record", queried: srvName("nxdomain.example")},
		{key: "x@nodata.example", class: NotFound, reason: "no records", queried: srvName("nodata.example")},
		{key: "x@dot.example", class: NotFound, reason: "no usable onion target", queried: srvName("dot.example")},
		{key: "x@clear.example", class: NotFound, reason: "no usable onion target", queried: srvName("clear.example")},
		// Unknown answers: TEMP, never NOTFOUND (which would send the mail
		// over the clear net).
		{key: "gina@servfail.example", class: Temp, reason: "cannot find onion route", queried: srvName("servfail.example")},
		{key: "gina@slow.example", class: Temp, reason: "cannot find onion route", queried: srvName("slow.example")},
		// Malformed keys.
		{key: "bob@exa mple.org", class: Perm, reason: "contains ' '"},
		{key: "bob@single.example\x00", class: Perm, reason: "control character"},
		{key: "", class: Perm, reason: "empty key"},
	} {
		ans := f.a.Lookup(context.Background(), tc.key)
		if ans.Class != tc.class {
			t.Errorf("%q: %v (%s), want %v", tc.key, ans.Class, ans.Reason, tc.class)
		} else if tc.class == Found && ans.Result != tc.result {
			t.Errorf("%q: result %q, want %q", tc.key, ans.Result, tc.result)
		} else if tc.class != Found && !strings.Contains(ans.Reason, tc.reason) {
			t.Errorf("%q: reason %q, want it to contain %q", tc.key, ans.Reason, tc.reason)
		}
		if q := f.queried(); !slices.Equal(q, tc.queried) {
			t.Errorf("%q: DNS queries %q, want %q", tc.key, q, tc.queried)
		}
	}
}

func TestLookupMultiOrder(t *testing.T) {
	f := newFixture(t)
	ans := f.a.Lookup(context.Background(), "carol@multi.example")
	if ans.Class != Found || len(ans.Route.Targets) != 2 {
		t.Fatalf("%+v", ans)
	}
	if got := ans.Route.Targets[0].Host; got != f.o2 {
		t.Errorf("first target %s, want the priority-0 one %s", got, f.o2)
	}
	if got := ans.Route.Targets[1]; got.Host != f.o1 || got.Port != 2525 {
		t.Errorf("second target %v, want %s:2525", got, f.o1)
	}
}

func TestLookupTransport(t *testing.T) {
	f := newFixture(t)
	f.a.Transport = "smtptor"
	ans := f.a.Lookup(context.Background(), "bob@pinned.example")
	if want := "smtptor:[" + f.o3 + "]:2525"; ans.Result != want {
		t.Errorf("result %q, want %q", ans.Result, want)
	}
}

func TestCheckTransport(t *testing.T) {
	for _, ok := range []string{"onionmx", "smtptor", "onion-mx_2.x"} {
		if err := CheckTransport(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a:b", "a b", "a\x00", strings.Repeat("a", 101)} {
		if err := CheckTransport(bad); err == nil || strings.Contains(err.Error(), "--") {
			t.Errorf("%q: %v, want an error that names no flag", bad, err)
		}
	}
}

func TestParseSelf(t *testing.T) {
	for in, want := range map[string]string{"Example.ORG": "example.org", ".Example.org.": ".example.org", "bücher.example": "xn--bcher-kva.example"} {
		if got, err := ParseSelf(in); err != nil || got != want {
			t.Errorf("ParseSelf(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", ".", "a b", "a@b"} {
		if _, err := ParseSelf(bad); err == nil || strings.Contains(err.Error(), "--") {
			t.Errorf("ParseSelf(%q): %v, want an error that names no flag", bad, err)
		}
	}
}

func TestExplain(t *testing.T) {
	f := newFixture(t)
	explain := func(key string) string {
		var b strings.Builder
		f.a.Lookup(context.Background(), key).Explain(&b)
		return b.String()
	}
	for _, tc := range []struct {
		key  string
		want string
	}{
		{"single.example", "single.example\tonionmx:[" + f.o1 + "]:25\t# DNS SRV _onion-mx._tcp.single.example. prio 0 weight 5\n"},
		{"bob@pinned.example", "# bob@pinned.example: Postfix asks for the address; the answer is that of its domain\n" +
			"pinned.example\tonionmx:[" + f.o3 + "]:2525\t# static map "},
		{f.o1, f.o1 + "\tonionmx:[" + f.o1 + "]:25\t# onion domain\n"},
		{"multi.example", "multi.example\tonionmx:\t# DNS SRV _onion-mx._tcp.multi.example.: 2 targets; " +
			"the empty nexthop makes deliver look them up again and try them in this order (equal priorities drawn by weight each time)\n" +
			"#multi.example\tonionmx:[" + f.o2 + "]:25\t# 1: prio 0 weight 5\n" +
			"#multi.example\tonionmx:[" + f.o1 + "]:2525\t# 2: prio 10 weight 0\n"},
		{"mixed.example", "mixed.example\tonionmx:[" + f.o1 + "]:25\t# DNS SRV _onion-mx._tcp.mixed.example. prio 1 weight 2\n" +
			"#\tskipped " + v2Onion + ":25 (prio 0 weight 1): v2 onion address (retired since Tor 0.4.6)\n" +
			"#\tskipped mx.mixed.example:25 (prio 2 weight 3): not a .onion name (onionmx never dials the clear net)\n"},
		{"clear.example", "# clear.example: NOTFOUND, Postfix uses its next table or its default transport: " +
			"no onion route for clear.example: DNS SRV _onion-mx._tcp.clear.example.: no usable onion target\n" +
			"#\tskipped mx.clear.example:25 (prio 0 weight 0): not a .onion name (onionmx never dials the clear net)\n"},
		{"dot.example", "#\tskipped . (prio 0 weight 0): service decidedly not available (RFC 2782)\n"},
		{"nxdomain.example", "# nxdomain.example: NOTFOUND, Postfix uses its next table or its default transport: " +
			"no onion route for nxdomain.example: DNS SRV _onion-mx._tcp.nxdomain.example.: no such record\n"},
		{"servfail.example", "# servfail.example: TEMP, Postfix defers the mail: cannot find onion route for servfail.example: "},
		{"self.example", "# self.example: NOTFOUND, Postfix uses its next table or its default transport: self.example is one of our own domains (--self)\n"},
	} {
		got := explain(tc.key)
		if !strings.HasPrefix(got, tc.want) && !strings.HasSuffix(got, tc.want) {
			t.Errorf("Explain(%q):\n%s\nwant it to start or end with:\n%s", tc.key, got, tc.want)
		}
	}
}
