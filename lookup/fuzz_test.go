package lookup

import (
	"bytes"
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

func FuzzTransportMap(f *testing.F) {
	f.Add([]byte(".onion smtptor:\nriseup.net smtptor:[wy6zk3pmcwiyhiao.onion]\n# c\nx.example\n  [" + torProject + "]:25\n"))
	f.Add([]byte("a b c\n\x00\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseTransportMap("fuzz", bytes.NewReader(b))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "static map fuzz") {
				t.Fatalf("error %q does not name the map", err)
			}
			return
		}
		for d, e := range m.entries {
			if _, _, ok := m.Lookup(strings.TrimPrefix(d, ".")); !ok && !strings.HasPrefix(d, ".") {
				t.Fatalf("key %q (%+v) does not look up", d, e)
			}
		}
	})
}

func FuzzYAMLMap(f *testing.F) {
	f.Add([]byte("'" + torProject + "':\n  - a.example\n'x.onion': ~\n"))
	f.Add([]byte("'x.onion': [a.example, b.example]\n"))
	f.Add([]byte("&a [*a]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseYAMLMap("fuzz.yml", bytes.NewReader(b))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "static map fuzz.yml") {
				t.Fatalf("error %q does not name the map", err)
			}
			return
		}
		for d, e := range m.entries {
			if !IsOnion(e.nexthop.Host) {
				t.Fatalf("domain %q maps to non-onion %q", d, e.nexthop.Host)
			}
		}
	})
}
