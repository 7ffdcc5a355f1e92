package lookup

import (
	"bytes"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

func FuzzParseNexthop(f *testing.F) {
	for _, s := range []string{"[" + torProject + "]:25", torProject, "example.org", "[192.0.2.1]", "[ipv6:::1]:25", "a:b:c", "[]", "bücher.example", "x.onion:0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		nh, err := ParseNexthop(s)
		if err != nil {
			return
		}
		// A parsed nexthop prints back in a form that parses to itself.
		again, err := ParseNexthop(nh.String())
		if err != nil || again != nh {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, nh, nh.String(), again, err)
		}
		if strings.ContainsAny(nh.Host, " \t\r\n\x00[]") {
			t.Fatalf("%q: host %q has junk", s, nh.Host)
		}
	})
}

func FuzzAddressDomain(f *testing.F) {
	for _, s := range []string{"u@example.org", `"a@b"@example.org`, "u@", "@", "u@bücher.example"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := AddressDomain(s)
		if err != nil {
			return
		}
		if d2, err := NormalizeDomain(d); err != nil || d2 != d {
			t.Fatalf("%q: domain %q is not normal: %q %v", s, d, d2, err)
		}
	})
}

func FuzzCheckOnion(f *testing.F) {
	f.Add(torProject)
	f.Add("expyuzz4wqqyqhjn.onion")
	f.Add("mail." + torProject + ".")
	f.Fuzz(func(t *testing.T, s string) {
		if CheckOnion(s) != nil {
			return
		}
		// Whatever passes is a name in .onion whose last label before
		// .onion decodes to a key that OnionFromKey maps back to it.
		n := strings.TrimSuffix(strings.ToLower(s), ".")
		if !IsOnion(n) {
			t.Fatalf("%q passed but is not in .onion", s)
		}
		label := strings.TrimSuffix(n, ".onion")
		if i := strings.LastIndexByte(label, '.'); i >= 0 {
			label = label[i+1:]
		}
		raw, err := onionEncoding.DecodeString(strings.ToUpper(label))
		if err != nil || OnionFromKey(raw[:32]) != label+".onion" {
			t.Fatalf("%q passed but does not round-trip", s)
		}
	})
}

// checkMap checks what any loaded map must satisfy: route entries have
// only usable v3 onions, bad entries are problems that name the file and
// line, every key finds its entry, and resolving a mapped domain asks DNS
// only when its entry says "the domain's SRV records".
func checkMap(t *testing.T, m *Map) {
	t.Helper()
	problems := map[*MapError]bool{}
	for _, p := range m.Problems() {
		if p.File != m.Name || p.Line <= 0 || !strings.HasPrefix(p.Error(), m.Name+":"+strconv.Itoa(p.Line)+": ") {
			t.Fatalf("problem %q does not name the file and line", p)
		}
		if strings.ContainsFunc(p.Error(), func(r rune) bool { return r < ' ' || r == 0x7f }) {
			t.Fatalf("problem %q has a control character", p)
		}
		problems[p] = true
	}
	for k, e := range m.entries {
		if e.Key != k || e.File != m.Name || e.Line <= 0 {
			t.Fatalf("entry %q: %+v", k, e)
		}
		switch e.Kind {
		case EntryRoute:
			for _, nh := range e.Nexthops {
				if err := CheckOnion(nh.Host); err != nil {
					t.Fatalf("entry %q routes to %q: %v", k, nh.Host, err)
				}
			}
		case EntryBad:
			if e.Problem == nil || !problems[e.Problem] || e.Problem.Line != e.Line {
				t.Fatalf("bad entry %q: problem %v is not among the map's problems", k, e.Problem)
			}
		case EntryElsewhere:
			if len(e.Nexthops) != 0 || e.Problem != nil {
				t.Fatalf("elsewhere entry %q: %+v", k, e)
			}
		}
		domain := strings.TrimPrefix(k, ".")
		if strings.HasPrefix(k, ".") {
			domain = "x." + domain
		}
		if got, ok := m.Find(domain); !ok || got != e {
			if !strings.HasPrefix(k, ".") || len(domain) <= maxDomainLen {
				t.Fatalf("key %q: Find(%q) = %+v, %v", k, domain, got, ok)
			}
		}
		if IsOnion(domain) || len(domain) > maxDomainLen {
			continue
		}
		dns := &fakeSRV{}
		r := &Resolver{Maps: []*Map{m}, DNS: dns}
		route, err := r.Resolve(context.Background(), Nexthop{Host: domain})
		var me *MapError
		var ee *ElsewhereError
		switch e.Kind {
		case EntryBad:
			if !errors.As(err, &me) || me != e.Problem {
				t.Fatalf("%q: Resolve = %v, %v; want the entry's problem", domain, route, err)
			}
		case EntryElsewhere:
			if !errors.As(err, &ee) || errors.As(err, &me) || errors.As(err, new(*Error)) {
				t.Fatalf("%q: Resolve = %v, %v; want an ElsewhereError", domain, route, err)
			}
		case EntryRoute:
			if len(e.Nexthops) > 0 && (err != nil || len(route.Targets) != len(e.Nexthops)) {
				t.Fatalf("%q: Resolve = %+v, %v; want the entry's %d targets", domain, route, err, len(e.Nexthops))
			}
		}
		if len(dns.queries) > 0 && (e.Kind != EntryRoute || len(e.Nexthops) > 0) {
			t.Fatalf("%q: DNS queries %q for a %v entry", domain, dns.queries, e.Kind)
		}
	}
}

func FuzzTransportMap(f *testing.F) {
	f.Add([]byte(".onion smtptor:\nriseup.net smtptor:[wy6zk3pmcwiyhiao.onion]\n# c\nx.example\n  [" + torProject + "]:25\n"))
	f.Add([]byte("a b c\n\x00\n"))
	f.Add([]byte("a.example smtp:a\x00b\nb\x01@c.example onionmx:[x.onion]\n\x00c.example\n"))
	f.Add([]byte("* smtp:[relay]:587\nbob@a.example onionmx:[" + torProject + "]\ngone.example error:text with spaces\nlist.example relay:a, b\nn.example :[" + torProject + "]\n"))
	f.Add([]byte("\ufeffa.example onionmx:[" + torProject + "]:25, " + torProject + ".\r\nb.example onionmx:\r\n.c.example onionmx:[x.onion]:0\n  lead\nd.example\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseTransportMap("fuzz", bytes.NewReader(b))
		if err != nil {
			var me *MapError
			if !errors.As(err, &me) || !strings.HasPrefix(err.Error(), "fuzz:") {
				t.Fatalf("error %q does not name the map", err)
			}
			// Only an over-long line fails the whole map.
			if !strings.Contains(err.Error(), "long") {
				t.Fatalf("the map failed as a whole: %v", err)
			}
			return
		}
		checkMap(t, m)
	})
}

func FuzzYAMLMap(f *testing.F) {
	f.Add([]byte("'" + torProject + "':\n  - a.example\n'x.onion': ~\n"))
	f.Add([]byte("'x.onion': [a.example, b.example]\n"))
	f.Add([]byte("&a [*a]"))
	f.Add([]byte("'expyuzz4wqqyqhjn.onion': [a.example]\n? [k]\n: [b.example, [c]]\n'" + torProject + "': {a: b}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseYAMLMap("fuzz.yml", bytes.NewReader(b))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yml") {
				t.Fatalf("error %q does not name the map", err)
			}
			return
		}
		for d, e := range m.entries {
			if e.Kind == EntryElsewhere || e.Kind == EntryRoute && len(e.Nexthops) != 1 {
				t.Fatalf("domain %q: %+v", d, e)
			}
		}
		checkMap(t, m)
	})
}

type records []*net.SRV

func (r records) LookupSRV(context.Context, string, string, string) (string, []*net.SRV, error) {
	return "", r, nil
}

// FuzzSRVRecords: whatever SRV records DNS gives (the dns package's
// FuzzDNSResponse: host names or "."), Resolve makes targets only of v3
// onions, with host-name characters and a port.
func FuzzSRVRecords(f *testing.F) {
	f.Add(torProject+".", uint16(25), "mx.example.org.", uint16(0), ".", uint16(1))
	f.Add(strings.ToUpper(torProject), uint16(2525), "expyuzz4wqqyqhjn.onion", uint16(25), torProject, uint16(0))
	f.Fuzz(func(t *testing.T, t1 string, p1 uint16, t2 string, p2 uint16, t3 string, p3 uint16) {
		srvs := records{{Target: t1, Port: p1}, {Target: t2, Port: p2, Priority: 1}, {Target: t3, Port: p3, Priority: 1, Weight: 5}}
		route, err := (&Resolver{DNS: srvs}).Resolve(context.Background(), Nexthop{Host: "example.org"})
		if err != nil {
			return
		}
		for _, tg := range route.Targets {
			if CheckOnion(tg.Host) != nil || tg.Port == 0 {
				t.Fatalf("target %+v is not a usable onion", tg)
			}
			for i := 0; i < len(tg.Host); i++ {
				if c := tg.Host[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
					t.Fatalf("target %q has %q", tg.Host, c)
				}
			}
		}
	})
}
