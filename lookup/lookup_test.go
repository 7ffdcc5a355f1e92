package lookup

import (
	"context"
	crand "crypto/rand"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/onionmx/onionmx/dns"
	"github.com/onionmx/onionmx/internal/dnstest"
)

// torProject is a real, published v3 address (the Tor Project's website).
const torProject = "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion"

func newOnion(t testing.TB) string {
	key := make([]byte, 32)
	crand.Read(key)
	return OnionFromKey(key)
}

func TestCheckOnion(t *testing.T) {
	gen := newOnion(t)
	// One mistyped character in the key part: the checksum catches it.
	flipped := []byte(torProject)
	flipped[10] = 'q'
	if torProject[10] == 'q' {
		flipped[10] = 'r'
	}
	// Version 4 with a checksum computed for it: only the version is wrong.
	raw, _ := onionEncoding.DecodeString(strings.ToUpper(strings.TrimSuffix(gen, ".onion")))
	raw[34] = 4
	v4 := strings.ToLower(onionEncoding.EncodeToString(raw)) + ".onion"

	for _, tc := range []struct {
		name string
		want string // "" valid, else a substring of the reason
	}{
		{torProject, ""},
		{gen, ""},
		{strings.ToUpper(gen), ""},
		{gen + ".", ""},
		{"mail." + gen, ""},
		{"a.b-c." + gen, ""},
		{"a b." + gen, "subdomain label"},
		{"a\n." + gen, "subdomain label"},
		{"-a." + gen, "subdomain label"},
		{"a.." + gen, "subdomain label"},
		{"." + gen, "subdomain label"},
		{"expyuzz4wqqyqhjn.onion", "v2 onion"},
		{"abc.onion", "3 characters"},
		{strings.Repeat("1", 56) + ".onion", "not base32"},
		{string(flipped), "checksum"},
		{v4, "version 4"},
		{"example.org", "not a .onion"},
		{"onion", "not a .onion"},
	} {
		err := CheckOnion(tc.name)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("CheckOnion(%q) = %v, want valid", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("CheckOnion(%q) = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestParseNexthop(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Nexthop
		wantErr string
	}{
		{in: "[" + torProject + "]:2525", want: Nexthop{Host: torProject, Port: 2525, Literal: true}},
		{in: "[" + strings.ToUpper(torProject) + "]", want: Nexthop{Host: torProject, Literal: true}},
		{in: torProject, want: Nexthop{Host: torProject}},
		{in: torProject + ":26", want: Nexthop{Host: torProject, Port: 26}},
		{in: "Example.ORG.", want: Nexthop{Host: "example.org"}},
		{in: "bücher.example", want: Nexthop{Host: "xn--bcher-kva.example"}},
		{in: "[192.0.2.1]:25", want: Nexthop{Host: "192.0.2.1", Port: 25, Literal: true}},
		{in: "[ipv6:2001:db8::1]", want: Nexthop{Host: "2001:db8::1", Literal: true}},
		{in: "", wantErr: "empty"},
		{in: "[x.onion", wantErr: "missing ]"},
		{in: "[x.onion]x", wantErr: "unexpected"},
		{in: "[x.onion]:", wantErr: "empty port"},
		{in: "x.onion:0", wantErr: "bad port"},
		{in: "x.onion:65536", wantErr: "bad port"},
		{in: "ex ample.org", wantErr: "contains"},
		{in: "a..b", wantErr: "empty label"},
		{in: "192.0.2.1", wantErr: "IP address"},
		{in: strings.Repeat("a.", 127) + "com", wantErr: "at most 253"},
	} {
		got, err := ParseNexthop(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseNexthop(%q) = %+v, %v; want error %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseNexthop(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestAddressDomain(t *testing.T) {
	for in, want := range map[string]string{
		"user@Example.org":          "example.org",
		`"a@b"@example.org`:         "example.org",
		"x@" + torProject:           torProject,
		"postmaster@bücher.example": "xn--bcher-kva.example",
	} {
		if got, err := AddressDomain(in); err != nil || got != want {
			t.Errorf("AddressDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"nodomain", "user@", "user@[192.0.2.1]", "u@a b"} {
		if got, err := AddressDomain(in); err == nil {
			t.Errorf("AddressDomain(%q) = %q, want an error", in, got)
		}
	}
}

// fakeSRV answers SRV lookups from a table and records every query.
type fakeSRV struct {
	records map[string][]*net.SRV
	fail    map[string]error
	queries []string
}

func (f *fakeSRV) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	f.queries = append(f.queries, service+proto+name)
	if err, ok := f.fail[name]; ok {
		return "", nil, err
	}
	if r, ok := f.records[name]; ok {
		return name, r, nil
	}
	return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func TestResolve(t *testing.T) {
	a, b, c := newOnion(t), newOnion(t), newOnion(t)
	m, err := ParseTransportMap("pinned", strings.NewReader(
		"pinned.example  smtptor:["+a+"]:2525\n"+
			".sub.example  "+b+"\n"+
			"v2.example  [expyuzz4wqqyqhjn.onion]\n"))
	if err != nil {
		t.Fatal(err)
	}
	dns := &fakeSRV{
		records: map[string][]*net.SRV{
			"_onion-mx._tcp.srv.example.": {
				{Target: b + ".", Port: 25, Priority: 20, Weight: 5},
				{Target: "mx.srv.example.", Port: 25, Priority: 5},
				{Target: a + ".", Port: 2525, Priority: 10, Weight: 5},
				{Target: "expyuzz4wqqyqhjn.onion.", Port: 25, Priority: 1},
			},
			"_onion-mx._tcp.dot.example.":    {{Target: ".", Port: 0}},
			"_onion-mx._tcp.pinned.example.": {{Target: c + ".", Port: 25}},
		},
		fail: map[string]error{
			"_onion-mx._tcp.servfail.example.": &net.DNSError{Err: "server misbehaving", IsTemporary: true},
			"_onion-mx._tcp.timeout.example.":  &net.DNSError{Err: "i/o timeout", IsTimeout: true},
			"_onion-mx._tcp.refused.example.":  &net.DNSError{Err: "server misbehaving"},
		},
	}
	r := &Resolver{Maps: []*Map{m}, DNS: dns}
	resolve := func(nexthop string) (*Route, error) {
		nh, err := ParseNexthop(nexthop)
		if err != nil {
			t.Fatal(err)
		}
		return r.Resolve(context.Background(), nh)
	}

	for _, tc := range []struct {
		nexthop string
		targets []Target
		source  string
		queries int
	}{
		{"[" + c + "]:26", []Target{{c, 26}}, "nexthop", 0},
		{c, []Target{{c, 25}}, "onion domain", 0},
		{"pinned.example", []Target{{a, 2525}}, "static map pinned:1", 0},
		{"deep.sub.example", []Target{{b, 25}}, "static map pinned:2", 0},
		{"srv.example", []Target{{a, 2525}, {b, 25}}, "DNS SRV _onion-mx._tcp.srv.example.", 1},
	} {
		dns.queries = nil
		route, err := resolve(tc.nexthop)
		if err != nil {
			t.Errorf("%s: %v", tc.nexthop, err)
			continue
		}
		if route.Source != tc.source || len(route.Targets) != len(tc.targets) {
			t.Errorf("%s: route %+v, want %v from %s", tc.nexthop, route, tc.targets, tc.source)
			continue
		}
		for i := range tc.targets {
			if route.Targets[i] != tc.targets[i] {
				t.Errorf("%s: target %d = %v, want %v", tc.nexthop, i, route.Targets[i], tc.targets[i])
			}
		}
		if len(dns.queries) != tc.queries {
			t.Errorf("%s: DNS queries %q, want %d", tc.nexthop, dns.queries, tc.queries)
		}
	}

	// The skipped SRV targets, in order, with reasons.
	route, _ := resolve("srv.example")
	if len(route.Skipped) != 2 || !strings.Contains(route.Skipped[0].Reason, "v2") || !strings.Contains(route.Skipped[1].Reason, "clear net") {
		t.Errorf("skipped %+v, want the v2 onion then the clear-net host", route.Skipped)
	}

	for _, tc := range []struct {
		nexthop   string
		temporary bool
		text      string
	}{
		{"nothing.example", false, "_onion-mx._tcp.nothing.example."},
		{"dot.example", false, "RFC 2782"},
		{"[192.0.2.1]", false, "clear net"},
		{"servfail.example", true, "server misbehaving"},
		{"timeout.example", true, "timeout"},
		{"refused.example", true, "server misbehaving"},
	} {
		_, err := resolve(tc.nexthop)
		var le *Error
		if !errors.As(err, &le) || le.Temporary != tc.temporary || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: got %v, want temporary=%v error with %q", tc.nexthop, err, tc.temporary, tc.text)
		}
	}

	// A bad map entry is a configuration error: the map's *MapError,
	// "FILE:LINE: ..." first, and no DNS query.
	dns.queries = nil
	_, err = resolve("v2.example")
	var me *MapError
	if !errors.As(err, &me) || !strings.HasPrefix(err.Error(), "pinned:3: v2.example: ") || errors.As(err, new(*Error)) || len(dns.queries) != 0 {
		t.Errorf("v2.example: got %v (queries %q), want the map's error for line 3 and no query", err, dns.queries)
	}

	// Without DNS, a domain no map knows has no route, and nothing is asked.
	r.DNS = nil
	if _, err := resolve("srv.example"); err == nil {
		t.Error("resolved without DNS")
	}
}

// TestResolveMaps: what each kind of map entry makes of a domain, and that
// none but an empty nexthop of onionmx's own transport asks DNS.
func TestResolveMaps(t *testing.T) {
	a, b := newOnion(t), newOnion(t)
	m1, err := ParseTransportMap("shared", strings.NewReader(
		"* smtp:[relay.example]\n"+ // 1
			"bob@addr.example onionmx:["+a+"]\n"+ // 2
			"relay.example smtp:[relay]:587\n"+ // 3
			".sub.relay.example :\n"+ // 4
			"typo.example onionmx:["+flipped(a)+"]\n"+ // 5
			"clear.example onionmx:[mx.clear.example]\n"+ // 6
			"list.example smtptor:["+a+"], ["+b+"]:2525\n"+ // 7
			"srv.example onionmx:\n"+ // 8
			"lonely.example\n")) // 9
	if err != nil {
		t.Fatal(err)
	}
	m2, err := ParseYAMLMap("community.yml", strings.NewReader("'"+v2+"': [old.example, relay.example]\n'"+b+"': [addr.example]\n"))
	if err != nil {
		t.Fatal(err)
	}
	dns := &fakeSRV{records: map[string][]*net.SRV{}}
	for _, d := range []string{"relay.example", "x.sub.relay.example", "typo.example", "clear.example", "list.example", "srv.example", "old.example", "addr.example", "lonely.example"} {
		dns.records["_onion-mx._tcp."+d+"."] = []*net.SRV{{Target: b + ".", Port: 25}}
	}
	r := &Resolver{Maps: []*Map{m1, m2}, DNS: dns}
	for _, tc := range []struct {
		domain  string
		targets []Target
		err     string // for an error: its text
		kind    string // "map", "elsewhere"
		queries int
	}{
		{domain: "relay.example", kind: "elsewhere", err: `shared:3: relay.example is routed to transport "smtp" by the map (smtp:[relay]:587), not to onionmx`},
		{domain: "x.sub.relay.example", kind: "elsewhere", err: "shared:4: x.sub.relay.example is left to Postfix's default routing by the map's .sub.relay.example entry (:), not routed to onionmx"},
		{domain: "typo.example", kind: "map", err: "shared:5: typo.example: nexthop [" + flipped(a) + "]: onion address checksum mismatch (typo?)"},
		{domain: "clear.example", kind: "map", err: "shared:6: clear.example: nexthop [mx.clear.example] is not a .onion name"},
		{domain: "lonely.example", kind: "map", err: "shared:9: lonely.example: no value"},
		{domain: "old.example", kind: "map", err: "community.yml:1: old.example: onion " + v2 + ": v2 onion address"},
		{domain: "list.example", targets: []Target{{a, 25}, {b, 2525}}},
		// The address key is Postfix's: the domain is the YAML map's.
		{domain: "addr.example", targets: []Target{{b, 25}}},
		{domain: "srv.example", targets: []Target{{b, 25}}, queries: 1},
	} {
		dns.queries = nil
		route, err := r.Resolve(context.Background(), Nexthop{Host: tc.domain})
		var me *MapError
		var ee *ElsewhereError
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.domain, err)
		case tc.err == "" && !slices.Equal(route.Targets, tc.targets):
			t.Errorf("%s: targets %v, want %v", tc.domain, route.Targets, tc.targets)
		case tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)):
			t.Errorf("%s: got %v, %v\nwant %s", tc.domain, route, err, tc.err)
		case tc.kind == "map" && (!errors.As(err, &me) || errors.As(err, &ee) || errors.As(err, new(*Error))):
			t.Errorf("%s: %T is not a *MapError alone", tc.domain, err)
		case tc.kind == "elsewhere" && (!errors.As(err, &ee) || errors.As(err, &me) || errors.As(err, new(*Error))):
			t.Errorf("%s: %T is not an *ElsewhereError alone", tc.domain, err)
		}
		if len(dns.queries) != tc.queries {
			t.Errorf("%s: DNS queries %q, want %d", tc.domain, dns.queries, tc.queries)
		}
	}
	if ee := (&ElsewhereError{}); errors.As(error(ee), new(*MapError)) {
		t.Error("an ElsewhereError passes for a MapError")
	}
}

func TestOrderSRV(t *testing.T) {
	recs := []*net.SRV{
		{Target: "c", Priority: 2, Weight: 0},
		{Target: "a", Priority: 1, Weight: 90},
		{Target: "b", Priority: 1, Weight: 10},
		{Target: "z", Priority: 1, Weight: 0},
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	firsts := map[string]int{}
	const n = 10000
	for range n {
		out := OrderSRV(recs, rnd)
		if len(out) != 4 || out[3].Target != "c" {
			t.Fatalf("order %v: priority 2 must come last", targets(out))
		}
		firsts[out[0].Target]++
	}
	// RFC 2782: the chance to come first is proportional to the weight,
	// with a small chance for weight 0.
	if a := firsts["a"]; a < n*85/100 || a > n*95/100 {
		t.Errorf("weight 90 of 100 came first %d times of %d", a, n)
	}
	if b := firsts["b"]; b < n*6/100 || b > n*14/100 {
		t.Errorf("weight 10 of 100 came first %d times of %d", b, n)
	}
	if recs[0].Target != "c" {
		t.Error("OrderSRV changed its input")
	}
}

func targets(s []*net.SRV) []string {
	var out []string
	for _, r := range s {
		out = append(out, r.Target)
	}
	return out
}

// TestParseNexthopList: the nexthop list the lookup servers answer for a
// map entry with several onions.
func TestParseNexthopList(t *testing.T) {
	a, b := newOnion(t), newOnion(t)
	nhs, err := ParseNexthopList("[" + a + "]:25,[" + b + "]:2525, [" + v2 + "]")
	if want := []Nexthop{{a, 25, true}, {b, 2525, true}, {v2, 0, true}}; err != nil || !slices.Equal(nhs, want) {
		t.Errorf("got %+v, %v; want %+v", nhs, err, want)
	}
	one, err := ParseNexthopList("[" + a + "]:25")
	if err != nil || len(one) != 1 || one[0] != (Nexthop{Host: a, Port: 25, Literal: true}) {
		t.Errorf("one nexthop: %+v, %v", one, err)
	}
	for _, bad := range []string{"", " , ", "[" + a + "]:25,[x"} {
		if _, err := ParseNexthopList(bad); err == nil {
			t.Errorf("ParseNexthopList(%q) accepted", bad)
		}
	}
}

func TestLooksOnion(t *testing.T) {
	for in, want := range map[string]bool{
		"x.onion": true, "X.ONION.": true, "onion": true, "[x.onion]": true,
		"bad_name!.onion": true, "x..onion": true,
		"foo.ｏｎｉｏｎ": true, "foo。onion": true, "ｆｏｏ．ＯＮＩＯＮ": true,
		"onion.example": false, "xonion": false, "example.org": false, "[192.0.2.1]": false,
	} {
		if got := LooksOnion(in); got != want {
			t.Errorf("LooksOnion(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestResolveNotAuthenticated: with DNSSEC required, unauthenticated
// records are no route, a permanent error that says why; authenticated
// ones are routed.
func TestResolveNotAuthenticated(t *testing.T) {
	d := dnstest.New(t)
	o := newOnion(t)
	d.Set("_onion-mx._tcp.signed.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: o}}, AD: true})
	d.Set("_onion-mx._tcp.unsigned.example.", dnstest.Answer{SRV: []dnstest.SRV{{Port: 25, Target: o}}})
	r := &Resolver{DNS: &dns.Client{Servers: []string{d.Addr()}, DNSSEC: dns.DNSSECRequire}}
	_, err := r.Resolve(context.Background(), Nexthop{Host: "unsigned.example"})
	var le *Error
	if !errors.As(err, &le) || le.Temporary || !errors.Is(err, dns.ErrNotAuthenticated) ||
		err.Error() != "no onion route for unsigned.example: DNS SRV _onion-mx._tcp.unsigned.example.: answer not authenticated by DNSSEC (the resolver did not set the AD bit)" {
		t.Errorf("Resolve: %v", err)
	}
	if route, err := r.Resolve(context.Background(), Nexthop{Host: "signed.example"}); err != nil || route.Targets[0].Host != o {
		t.Errorf("Resolve signed: %v %v", route, err)
	}
}
