package table

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/lookup"
)

// flipped returns onion with one character of its key changed: a typo.
func flipped(onion string) string {
	b := []byte(onion)
	if b[10] == 'q' {
		b[10] = 'r'
	} else {
		b[10] = 'q'
	}
	return string(b)
}

// withMap returns the fixture's answerer with a static map of text instead
// of the fixture's, and the map's path. Every domain in the map also has an
// SRV record, which must never be asked for.
func withMap(t *testing.T, f *fixture, text string) (*Answerer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "transport")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := lookup.LoadMap(path)
	if err != nil {
		t.Fatalf("a map that Postfix accepts does not load: %v", err)
	}
	for _, line := range strings.Split(text, "\n") {
		if k, _, ok := strings.Cut(line, " "); ok && !strings.ContainsAny(k, "*@#") {
			f.dns.SetSRV(lookup.SRVService+strings.TrimPrefix(k, ".")+".", dnstest.SRV{Port: 25, Target: f.o1})
		}
	}
	a := *f.a
	r := *a.Resolver
	r.Maps = []*lookup.Map{m}
	a.Resolver = &r
	return &a, path
}

type lookupCase struct {
	key    string
	class  Class
	result string // for Found
	reason string // a prefix for TEMP, a substring for the others
}

// checkLookups checks the answers and that none asked DNS.
func checkLookups(t *testing.T, f *fixture, a *Answerer, cases []lookupCase) {
	t.Helper()
	f.queried()
	for _, tc := range cases {
		ans := a.Lookup(context.Background(), tc.key)
		switch {
		case ans.Class != tc.class:
			t.Errorf("%q: %v (%s %s), want %v", tc.key, ans.Class, ans.Result, ans.Reason, tc.class)
		case tc.class == Found && ans.Result != tc.result:
			t.Errorf("%q: result %q, want %q", tc.key, ans.Result, tc.result)
		case tc.class == Temp && !strings.HasPrefix(ans.Reason, tc.reason):
			t.Errorf("%q: reason %q, want it to start with %q", tc.key, ans.Reason, tc.reason)
		case !strings.Contains(ans.Reason, tc.reason):
			t.Errorf("%q: reason %q, want it to contain %q", tc.key, ans.Reason, tc.reason)
		}
		if q := f.queried(); len(q) != 0 {
			t.Errorf("%q: DNS queries %q, want none", tc.key, q)
		}
	}
}

// TestLookupUnusableOnion: every .onion domain goes to onionmx, usable or
// not: NOTFOUND would give it to Postfix's smtp(8), which looks the name up
// in DNS (RFC 7686 forbids it) and tries the clear net. deliver bounces
// the unusable ones, with the reason. No DNS query, ever.
func TestLookupUnusableOnion(t *testing.T) {
	f := newFixture(t)
	bounce := "goes to onionmx, which bounces it: "
	checkLookups(t, f, f.a, []lookupCase{
		{key: "x@" + f.o1, class: Found, result: "onionmx:[" + f.o1 + "]:25"},
		{key: "x@" + v2Onion, class: Found, result: "onionmx:", reason: bounce + v2Onion + ": v2 onion address"},
		{key: "x@mail." + v2Onion, class: Found, result: "onionmx:", reason: "v2 onion address"},
		{key: "x@" + flipped(f.o1), class: Found, result: "onionmx:", reason: "checksum mismatch (typo?)"},
		{key: "X@" + strings.ToUpper(flipped(f.o1)) + ".", class: Found, result: "onionmx:", reason: "checksum mismatch"},
		{key: "x@junk.onion", class: Found, result: "onionmx:", reason: "4 characters"},
		{key: "x@onion", class: Found, result: "onionmx:", reason: bounce},
		{key: "x@a_b." + f.o1, class: Found, result: "onionmx:", reason: "subdomain label"},
		{key: v2Onion, class: Found, result: "onionmx:", reason: "v2"},
		// Keys whose domain is not even a domain name, but in .onion.
		{key: "u@bad_name!.onion", class: Found, result: "onionmx:", reason: bounce + `domain "bad_name!.onion" contains '!'`},
		{key: "u@x..onion", class: Found, result: "onionmx:", reason: "empty label"},
		{key: "u@.onion", class: Found, result: "onionmx:", reason: "empty label"},
		{key: "u@x.ONION..", class: Found, result: "onionmx:", reason: "empty label"},
		{key: "u@" + strings.Repeat("a", 70) + ".onion", class: Found, result: "onionmx:", reason: "longer than 63"},
		{key: "u@[" + v2Onion + "]", class: Found, result: "onionmx:", reason: "v2"},
		{key: "u@[" + f.o2 + "]", class: Found, result: "onionmx:[" + f.o2 + "]:25"},
		// Unicode that IDNA maps to ".onion", as Postfix's smtp(8) maps it
		// before its DNS lookup: full-width letters and stops, the
		// ideographic full stop.
		{key: "u@foo.ｏｎｉｏｎ", class: Found, result: "onionmx:", reason: bounce},
		{key: "u@foo。onion", class: Found, result: "onionmx:", reason: bounce},
		{key: "u@foo．ONION", class: Found, result: "onionmx:", reason: bounce},
		{key: "u@bad_x!．onion", class: Found, result: "onionmx:", reason: bounce},
		{key: "u@" + strings.Replace(f.o1, ".onion", "。onion", 1), class: Found, result: "onionmx:[" + f.o1 + "]:25"},
		// Not in .onion.
		{key: "u@bad_name!.example", class: Perm, reason: "contains '!'"},
		{key: "u@[192.0.2.1]", class: NotFound, reason: "address literal"},
	})
	// Our own onion stays ours.
	a := *f.a
	a.Self = []string{v2Onion, ".onion"}
	checkLookups(t, f, &a, []lookupCase{
		{key: "x@" + v2Onion, class: NotFound, reason: "--self"},
		{key: "x@" + f.o1, class: NotFound, reason: "--self"},
	})
}

// TestLookupMapProblems: a static-map entry that pins a domain to an
// unusable onion, or gives onionmx's transport a clear-net host, is a
// configuration error: TEMP with the file and line, never NOTFOUND (the
// pinned domain's mail would leave over the clear net), and no DNS query.
func TestLookupMapProblems(t *testing.T) {
	f := newFixture(t)
	text := "good.example onionmx:[" + f.o1 + "]\n" +
		"typo.example onionmx:[" + flipped(f.o2) + "]:25\n" +
		"v2.example smtptor:[" + v2Onion + "]\n" +
		"clear.example onionmx:[mx.clear.example]\n" +
		".parent.example [" + v2Onion + "]\n" +
		"port.example onionmx:[" + f.o1 + "]:0\n" +
		"lonely.example\n" +
		"list.example onionmx:[" + f.o1 + "], [" + f.o2 + "]:2525\n"
	a, path := withMap(t, f, text)
	checkLookups(t, f, a, []lookupCase{
		{key: "x@good.example", class: Found, result: "onionmx:[" + f.o1 + "]:25"},
		{key: "x@typo.example", class: Temp, reason: path + ":2: typo.example: nexthop [" + flipped(f.o2) + "]:25: onion address checksum mismatch (typo?)"},
		{key: "x@v2.example", class: Temp, reason: path + ":3: v2.example: "},
		{key: "x@clear.example", class: Temp, reason: path + ":4: clear.example: nexthop [mx.clear.example] is not a .onion name"},
		{key: "x@a.parent.example", class: Temp, reason: path + ":5: .parent.example: "},
		{key: "x@port.example", class: Temp, reason: path + ":6: port.example: "},
		{key: "x@lonely.example", class: Temp, reason: path + ":7: lonely.example: no value"},
		// Several onions: one answer that names them all, in order.
		{key: "x@list.example", class: Found, result: "onionmx:[" + f.o1 + "]:25,[" + f.o2 + "]:2525"},
	})

	for _, proto := range []Protocol{Socketmap, TCPTable} {
		addr, _ := serve(t, &Server{Answerer: a, Protocol: proto})
		c := dial(t, addr)
		if proto == Socketmap {
			c.send(netstring("onionmx x@typo.example"))
			if got := c.netstring(); !strings.HasPrefix(got, "TEMP "+path+":2: typo.example: ") {
				t.Errorf("socketmap: %q", got)
			}
		} else {
			c.send("get x@typo.example\n")
			if got := c.line(); !strings.HasPrefix(got, "400 "+encodeTCP(path, 1000)+":2:%20typo.example:%20") {
				t.Errorf("tcptable: %q", got)
			}
		}
	}
}

// TestLookupSharedMap: the static map is the admin's transport map, which
// Postfix reads too. It loads; a domain routed to another transport is
// NOTFOUND (Postfix's own copy of the entry applies), the "*" and address
// keys change nothing, and none of it asks DNS.
func TestLookupSharedMap(t *testing.T) {
	f := newFixture(t)
	text := "* smtp:[relay.example]:587\n" +
		"bob@pinned.example smtp:[relay.example]\n" +
		"bob+ext@relay.example onionmx:[" + f.o1 + "]\n" +
		"gone.example error:text with spaces\n" +
		"relay.example smtp:[relay]:587\n" +
		"list.example relay:a, b\n" +
		"null.example :\n" +
		".sub.example :[" + f.o2 + "]\n" +
		"pinned.example smtptor:[" + f.o3 + "]:2525\n" +
		"srv.example onionmx:\n"
	a, path := withMap(t, f, text)
	f.dns.SetSRV("_onion-mx._tcp.srv.example.", dnstest.SRV{Port: 25, Target: f.o1})
	checkLookups(t, f, a, []lookupCase{
		{key: "x@gone.example", class: NotFound, reason: path + ":4: gone.example is routed to transport \"error\""},
		{key: "x@relay.example", class: NotFound, reason: path + ":5: relay.example is routed to transport \"smtp\""},
		{key: "bob+ext@relay.example", class: NotFound, reason: ":5: "},
		{key: "x@list.example", class: NotFound, reason: "transport \"relay\""},
		{key: "x@null.example", class: NotFound, reason: "default routing"},
		{key: "x@a.sub.example", class: Found, result: "onionmx:[" + f.o2 + "]:25"},
		{key: "bob@pinned.example", class: Found, result: "onionmx:[" + f.o3 + "]:2525"},
		{key: "*", class: NotFound, reason: "wildcard"},
	})
	// An empty nexthop of onionmx's transport: the domain's SRV records.
	ans := a.Lookup(context.Background(), "x@srv.example")
	if ans.Class != Found || ans.Result != "onionmx:["+f.o1+"]:25" || !slices.Equal(f.queried(), []string{"_onion-mx._tcp.srv.example."}) {
		t.Errorf("srv.example: %+v", ans)
	}
}
