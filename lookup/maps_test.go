package lookup

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestTransportMap(t *testing.T) {
	a, b := newOnion(t), newOnion(t)
	text := `# the community's old tor_transport file, and our own lines
.onion              smtptor:
riseup.net          smtptor:[wy6zk3pmcwiyhiao.onion]
Example.ORG.        onionmx:[` + a + `]:2525
bare.example        ` + b + `
bracket.example     [` + b + `]
port.example        ` + b + `:26
   # an indented comment
.parent.example     smtptor:[` + a + `]
continued.example
    smtptor:[` + b + `]
example.org         smtptor:[` + b + `]
srv.example         onionmx:
`
	m, err := ParseTransportMap("tor_transport", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		domain string
		want   Nexthop
		where  string
	}{
		{"riseup.net", Nexthop{Host: "wy6zk3pmcwiyhiao.onion", Literal: true}, "tor_transport:3"},
		{"example.org", Nexthop{Host: a, Port: 2525, Literal: true}, "tor_transport:4"}, // first wins
		{"bare.example", Nexthop{Host: b}, "tor_transport:5"},
		{"bracket.example", Nexthop{Host: b, Literal: true}, "tor_transport:6"},
		{"port.example", Nexthop{Host: b, Port: 26}, "tor_transport:7"},
		{"x.y.parent.example", Nexthop{Host: a, Literal: true}, "tor_transport:9"},
		{"continued.example", Nexthop{Host: b, Literal: true}, "tor_transport:10"},
		{"srv.example", Nexthop{}, "tor_transport:13"},
		{"x." + a, Nexthop{}, "tor_transport:2"},
	} {
		got, where, ok := m.Lookup(tc.domain)
		if !ok || got != tc.want || where != tc.where {
			t.Errorf("Lookup(%q) = %+v %q %v, want %+v %q", tc.domain, got, where, ok, tc.want, tc.where)
		}
	}
	for _, d := range []string{"parent.example", "riseup.net.example", "net", "other.org"} {
		if got, where, ok := m.Lookup(d); ok {
			t.Errorf("Lookup(%q) = %+v from %s, want no match", d, got, where)
		}
	}
}

func TestTransportMapErrors(t *testing.T) {
	for _, tc := range []struct {
		text string
		line int
		msg  string
	}{
		{"ok.example [x.onion]\nlonely.example\n", 2, "no value"},
		{"  continued\n", 1, "continuation"},
		{"a.example [x.onion] extra\n", 1, "more than one value"},
		{"user@a.example [x.onion]\n", 1, "address"},
		{"a..example [x.onion]\n", 1, "empty label"},
		{"a.example [x.onion\n", 1, "missing ]"},
		{"a.example x.onion:99999\n", 1, "bad port"},
		{"\n\n# c\na.example\tsmtptor:[\x01.onion]\n", 4, "control character"},
		{"a.example " + strings.Repeat("x", maxMapLine+10) + "\n", 1, "too long"},
	} {
		_, err := ParseTransportMap("map", strings.NewReader(tc.text))
		var me *MapError
		if !errors.As(err, &me) || me.Line != tc.line || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %v, want an error at line %d with %q", tc.text, err, tc.line, tc.msg)
		} else if !strings.HasPrefix(err.Error(), "static map map:") {
			t.Errorf("%q: %q does not name the file and line", tc.text, err)
		}
	}
}

func TestYAMLMap(t *testing.T) {
	a, b := newOnion(t), newOnion(t)
	text := `# A static mapping of email domains to onion services
---
'4my2dd2okjr75aho.onion':
  - 'calyx.com'
  - 'calyxinstitute.org'
'` + a + `':
  - 'riseup.net'
  - Example.ORG
'` + b + `': [flow.example, 'example.org']
'` + strings.ToUpper(b) + `':
'empty.onion': ~
`
	m, err := ParseYAMLMap("map.yml", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		domain, host string
		line         int
	}{
		{"calyx.com", "4my2dd2okjr75aho.onion", 4},
		{"riseup.net", a, 7},
		{"example.org", a, 8},
		{"flow.example", b, 9},
	} {
		got, where, ok := m.Lookup(tc.domain)
		if !ok || got.Host != tc.host || got.Port != 0 || where != "map.yml:"+strconv.Itoa(tc.line) {
			t.Errorf("Lookup(%q) = %+v %q %v, want %s at line %d", tc.domain, got, where, ok, tc.host, tc.line)
		}
	}
	if m.Len() != 5 {
		t.Errorf("map has %d domains, want 5", m.Len())
	}

	for _, tc := range []struct {
		text string
		line int
		msg  string
	}{
		{"- a\n- b\n", 1, "mapping"},
		{"'x.onion':\n  - a.example\n'not-an-onion.example': [b.example]\n", 3, "not an onion"},
		{"'x.onion':\n  - a.example\n  - [nested]\n", 3, "not a domain"},
		{"'x.onion':\n  - 'bad domain'\n", 2, "contains"},
		{"'x.onion': {a: b}\n", 1, "not a list"},
		{"'x.onion': [a.example\n", 1, ""},
	} {
		_, err := ParseYAMLMap("map.yml", strings.NewReader(tc.text))
		var me *MapError
		if !errors.As(err, &me) || me.Line != tc.line || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %v (line %d), want an error at line %d with %q", tc.text, err, lineOf(me), tc.line, tc.msg)
		}
	}
	for _, empty := range []string{"", "---\n", "# only a comment\n", "~\n"} {
		if m, err := ParseYAMLMap("map.yml", strings.NewReader(empty)); err != nil || m.Len() != 0 {
			t.Errorf("%q: got %v, want an empty map", empty, err)
		}
	}
}

func lineOf(e *MapError) int {
	if e == nil {
		return -1
	}
	return e.Line
}

func TestLoadMap(t *testing.T) {
	dir := t.TempDir()
	a := newOnion(t)
	txt := filepath.Join(dir, "transport")
	yml := filepath.Join(dir, "map.yaml")
	os.WriteFile(txt, []byte("a.example ["+a+"]\n"), 0o644)
	os.WriteFile(yml, []byte("'"+a+"': [b.example]\n"), 0o644)
	for path, domain := range map[string]string{txt: "a.example", yml: "b.example"} {
		m, err := LoadMap(path)
		if err != nil {
			t.Fatal(err)
		}
		if nh, _, ok := m.Lookup(domain); !ok || nh.Host != a {
			t.Errorf("%s: Lookup(%s) = %+v %v", path, domain, nh, ok)
		}
	}
	_, err := LoadMap(filepath.Join(dir, "missing"))
	var me *MapError
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "missing: cannot read: no such file") {
		t.Errorf("missing file: %v", err)
	}
}
