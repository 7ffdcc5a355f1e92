package lookup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// flipped returns onion with one character of its key part changed: a
// typo that the checksum catches.
func flipped(onion string) string {
	b := []byte(onion)
	if b[10] == 'q' {
		b[10] = 'r'
	} else {
		b[10] = 'q'
	}
	return string(b)
}

const v2 = "expyuzz4wqqyqhjn.onion"

// entryWant is what a lookup of a domain in a map must find.
type entryWant struct {
	domain string
	kind   EntryKind
	line   int
	// For EntryRoute: the nexthops; none means the domain's SRV records.
	nexthops []Nexthop
	// For EntryElsewhere: the transport; for EntryBad: a substring of the
	// problem.
	text string
}

func checkEntries(t *testing.T, m *Map, wants []entryWant) {
	t.Helper()
	for _, w := range wants {
		e, ok := m.Find(w.domain)
		switch {
		case !ok:
			t.Errorf("Find(%q): no entry, want %v at line %d", w.domain, w.kind, w.line)
		case e.Kind != w.kind || e.Line != w.line || e.File != m.Name:
			t.Errorf("Find(%q) = %v at %s:%d (%+v), want %v at line %d", w.domain, e.Kind, e.File, e.Line, e, w.kind, w.line)
		case w.kind == EntryRoute && !slices.Equal(e.Nexthops, w.nexthops):
			t.Errorf("Find(%q): nexthops %+v, want %+v", w.domain, e.Nexthops, w.nexthops)
		case w.kind == EntryElsewhere && e.Transport != w.text:
			t.Errorf("Find(%q): transport %q, want %q", w.domain, e.Transport, w.text)
		case w.kind == EntryBad:
			want := fmt.Sprintf("%s:%d: ", m.Name, w.line)
			if e.Problem == nil || !strings.HasPrefix(e.Problem.Error(), want) || !strings.Contains(e.Problem.Error(), w.text) {
				t.Errorf("Find(%q): problem %v, want %q...%q", w.domain, e.Problem, want, w.text)
			}
		}
	}
}

func TestTransportMap(t *testing.T) {
	a, b := newOnion(t), newOnion(t)
	text := `# the community's old tor_transport file, and our own lines
.onion              smtptor:
riseup.net          smtptor:[` + a + `]
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
list.example        onionmx:[` + a + `]:25, [` + b + `]:26 ` + strings.ToUpper(b) + `.
null.example        :[` + a + `]
bücher.example      [` + a + `]
nocolon.example     onionmx
`
	m, err := ParseTransportMap("tor_transport", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	lit := func(h string, port uint16) Nexthop { return Nexthop{Host: h, Port: port, Literal: true} }
	checkEntries(t, m, []entryWant{
		{domain: "riseup.net", line: 3, nexthops: []Nexthop{lit(a, 0)}},
		{domain: "example.org", line: 4, nexthops: []Nexthop{lit(a, 2525)}}, // first wins
		{domain: "bare.example", line: 5, nexthops: []Nexthop{{Host: b}}},
		{domain: "bracket.example", line: 6, nexthops: []Nexthop{lit(b, 0)}},
		{domain: "port.example", line: 7, nexthops: []Nexthop{{Host: b, Port: 26}}},
		{domain: "x.y.parent.example", line: 9, nexthops: []Nexthop{lit(a, 0)}},
		{domain: "continued.example", line: 10, nexthops: []Nexthop{lit(b, 0)}},
		{domain: "srv.example", line: 13},
		{domain: "list.example", line: 14, nexthops: []Nexthop{lit(a, 25), lit(b, 26), {Host: b}}},
		{domain: "null.example", line: 15, nexthops: []Nexthop{lit(a, 0)}},
		{domain: "xn--bcher-kva.example", line: 16, nexthops: []Nexthop{lit(a, 0)}},
		{domain: "nocolon.example", line: 17},
		// The community's ".onion smtptor:" is another transport's entry;
		// Resolve never asks the maps about onion names anyway.
		{domain: "x." + a, kind: EntryElsewhere, line: 2, text: "smtptor"},
	})
	for _, d := range []string{"parent.example", "riseup.net.example", "net", "other.org"} {
		if e, ok := m.Find(d); ok {
			t.Errorf("Find(%q) = %+v, want no match", d, e)
		}
	}
	if p := m.Problems(); len(p) != 1 || p[0].Line != 12 || !strings.Contains(p[0].Error(), "duplicate") {
		t.Errorf("problems %q, want the duplicate example.org at line 12", p)
	}
}

// TestTransportMapShared: the admin's transport map is often the file
// Postfix reads with hash:. Every line postmap accepts loads; other
// transports' domain entries are "elsewhere", "*" and address keys are
// Postfix's alone. (Today's code failed the whole map on each of them.)
func TestTransportMapShared(t *testing.T) {
	a := newOnion(t)
	text := "* smtp:[relay.example]:587\n" + // 1
		"bob@example.org onionmx:[" + a + "]\n" + // 2
		"bob+ext@example.org smtp:\n" + // 3
		"gone.example error:text with spaces, and " + v2 + "\n" + // 4
		"relay.example smtp:[relay]:587\n" + // 5
		"list.example relay:a, b\n" + // 6
		"null.example :\n" + // 7
		"slow.example slow:\n" + // 8
		"uucp.example uucp:example\n" + // 9
		"Upper.Example SMTP:X\n" + // 10
		"[192.0.2.1] smtp:\n" + // 11
		"bad_name! smtp:[relay]\n" + // 12
		"crlf.example smtp:[x]\r\n" + // 13
		".sub.example smtp:[relay]\n" + // 14
		"nocolon.example relay\n" + // 15
		"literal.example [relay.example]:25\n" + // 16
		"@domain.example smtp:\n" + // 17
		"last.example smtp:" // 18, no final newline
	m, err := ParseTransportMap("transport", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, m, []entryWant{
		{domain: "gone.example", kind: EntryElsewhere, line: 4, text: "error"},
		{domain: "relay.example", kind: EntryElsewhere, line: 5, text: "smtp"},
		{domain: "list.example", kind: EntryElsewhere, line: 6, text: "relay"},
		{domain: "null.example", kind: EntryElsewhere, line: 7, text: ""},
		{domain: "slow.example", kind: EntryElsewhere, line: 8, text: "slow"},
		{domain: "uucp.example", kind: EntryElsewhere, line: 9, text: "uucp"},
		{domain: "upper.example", kind: EntryElsewhere, line: 10, text: "SMTP"},
		{domain: "crlf.example", kind: EntryElsewhere, line: 13, text: "smtp"},
		{domain: "a.sub.example", kind: EntryElsewhere, line: 14, text: "smtp"},
		{domain: "nocolon.example", kind: EntryElsewhere, line: 15, text: "relay"},
		{domain: "literal.example", kind: EntryElsewhere, line: 16, text: "[relay.example]"},
		{domain: "last.example", kind: EntryElsewhere, line: 18, text: "smtp"},
	})
	for _, d := range []string{"example.org", "domain.example", "192.0.2.1", "*", "bad_name!"} {
		if e, ok := m.Find(d); ok {
			t.Errorf("Find(%q) = %+v, want no match", d, e)
		}
	}
	if p := m.Problems(); len(p) != 0 {
		t.Errorf("problems %q, want none", p)
	}
}

// TestTransportMapBad: onionmx's own entries with unusable targets are
// bad entries: the map loads, the other entries work, each bad entry is a
// problem with its file and line, and its domains find it. Lines Postfix
// ignores with a warning are problems too.
func TestTransportMapBad(t *testing.T) {
	a, b := newOnion(t), newOnion(t)
	text := "good.example onionmx:[" + a + "]\n" + // 1
		"typo.example onionmx:[" + flipped(b) + "]:25\n" + // 2
		"v2.example smtptor:[" + v2 + "]\n" + // 3
		"clear.example onionmx:[relay.example]\n" + // 4
		"clearsrv.example onionmx:relay.example\n" + // 5
		"port0.example onionmx:[" + a + "]:0\n" + // 6
		"bigport.example smtp:[" + a + "]:99999\n" + // 7
		"short.example onionmx:[abc.onion]\n" + // 8
		"mixed.example relay:[" + a + "], [relay.example]\n" + // 9
		".parent.example [" + v2 + "]\n" + // 10
		"unclosed.example [" + a + "\n" + // 11
		"ip.example onionmx:[192.0.2.1]\n" + // 12
		"symbolic.example onionmx:[" + a + "]:smtp\n" + // 13
		"lonely.example\n" + // 14
		"  \n" + // 15
		"nul.example smtp:a\x00b\n" + // 16
		"good.example onionmx:[" + b + "]\n" + // 17: duplicate, first wins
		"dup.example onionmx:[" + v2 + "]\n" + // 18: the first is bad...
		"dup.example onionmx:[" + a + "]\n" + // 19: ...and still wins
		"* onionmx:[" + v2 + "]\n" + // 20
		"bob@good.example onionmx:[" + flipped(a) + "]\n" + // 21
		"bad_name! onionmx:[" + a + "]\n" + // 22
		"trail.example onionmx:[" + strings.ToUpper(a) + ".]\n" + // 23
		"ctl\x01.example smtp:\n" + // 24
		"ctlours.example onionmx:[\x01" + a + "]\n" + // 25
		"\x00nokey.example smtp:\n" + // 26
		"nulkey.example\x00 smtp:\n" + // 27
		"x.example" // 28: no value, at the end
	m, err := ParseTransportMap("map.txt", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, m, []entryWant{
		{domain: "good.example", line: 1, nexthops: []Nexthop{{Host: a, Literal: true}}},
		{domain: "typo.example", kind: EntryBad, line: 2, text: "typo.example: nexthop [" + flipped(b) + "]:25: onion address checksum mismatch (typo?)"},
		{domain: "v2.example", kind: EntryBad, line: 3, text: "v2 onion address"},
		{domain: "clear.example", kind: EntryBad, line: 4, text: "nexthop [relay.example] is not a .onion name"},
		{domain: "clearsrv.example", kind: EntryBad, line: 5, text: "not a .onion name"},
		{domain: "port0.example", kind: EntryBad, line: 6, text: "bad port"},
		{domain: "bigport.example", kind: EntryBad, line: 7, text: "bad port"},
		{domain: "short.example", kind: EntryBad, line: 8, text: "3 characters"},
		{domain: "mixed.example", kind: EntryBad, line: 9, text: "nexthop [relay.example] is not a .onion name"},
		{domain: "a.b.parent.example", kind: EntryBad, line: 10, text: ".parent.example: nexthop [" + v2 + "]: v2"},
		{domain: "unclosed.example", kind: EntryBad, line: 11, text: "missing ]"},
		{domain: "ip.example", kind: EntryBad, line: 12, text: "not a .onion name"},
		{domain: "symbolic.example", kind: EntryBad, line: 13, text: "bad port"},
		{domain: "lonely.example", kind: EntryBad, line: 14, text: "no value"},
		// Postfix reads up to the NUL: smtp:a, another transport's.
		{domain: "nul.example", kind: EntryElsewhere, line: 16, text: "smtp"},
		{domain: "dup.example", kind: EntryBad, line: 18, text: "v2"},
		{domain: "trail.example", line: 23, nexthops: []Nexthop{{Host: a, Literal: true}}},
		{domain: "ctlours.example", kind: EntryBad, line: 25, text: "ctlours.example: nexthop"},
		{domain: "nulkey.example", kind: EntryBad, line: 27, text: "no value"},
		{domain: "x.example", kind: EntryBad, line: 28, text: "no value"},
	})
	for _, d := range []string{"ctl", "ctl.example", "bob@good.example", "*", "nokey.example"} {
		if e, ok := m.Find(d); ok {
			t.Errorf("Find(%q) = %+v, want no match", d, e)
		}
	}
	var lines []int
	for _, p := range m.Problems() {
		lines = append(lines, p.Line)
		if !strings.HasPrefix(p.Error(), fmt.Sprintf("map.txt:%d: ", p.Line)) {
			t.Errorf("problem %q does not start with its file and line", p)
		}
	}
	// 24: a key with a control character is not a domain name, and the
	// entry is not onionmx's: ignored, as Postfix never matches it.
	if want := []int{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 21, 22, 25, 26, 27, 27, 28}; !slices.Equal(lines, want) {
		t.Errorf("problems at lines %v, want %v:\n%q", lines, want, m.Problems())
	}
}

func TestTransportMapOddFiles(t *testing.T) {
	a := newOnion(t)
	// A byte order mark: stripped, and reported (Postfix would keep it in
	// the first key).
	m, err := ParseTransportMap("bom", strings.NewReader("\ufeffbom.example onionmx:["+a+"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, m, []entryWant{{domain: "bom.example", line: 1, nexthops: []Nexthop{{Host: a, Literal: true}}}})
	if p := m.Problems(); len(p) != 1 || !strings.Contains(p[0].Error(), "byte order mark") {
		t.Errorf("problems %q", p)
	}
	// CRLF line ends, and a continuation line with a CR.
	m, err = ParseTransportMap("crlf", strings.NewReader("a.example onionmx:["+a+"]\r\nb.example\r\n  onionmx:\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, m, []entryWant{
		{domain: "a.example", line: 1, nexthops: []Nexthop{{Host: a, Literal: true}}},
		{domain: "b.example", line: 2},
	})
	if p := m.Problems(); len(p) != 0 {
		t.Errorf("problems %q", p)
	}
	// A continuation line with nothing before it: Postfix warns and skips
	// it.
	m, err = ParseTransportMap("lead", strings.NewReader("  a.example onionmx:["+a+"]\nb.example onionmx:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Find("a.example"); ok || m.Len() != 1 {
		t.Errorf("the leading continuation line made an entry")
	}
	if p := m.Problems(); len(p) != 1 || p[0].Line != 1 {
		t.Errorf("problems %q", p)
	}
}

// TestTransportMapFatal: only what fails the file as a whole fails the map.
func TestTransportMapFatal(t *testing.T) {
	for _, tc := range []struct {
		text string
		line int
		msg  string
	}{
		{"a.example " + strings.Repeat("x", maxMapLine+10) + "\n", 1, "longer than"},
		{"a.example x\n" + strings.Repeat("  x\n", maxMapLine/2+10), 1, "entry too long"},
	} {
		_, err := ParseTransportMap("map", strings.NewReader(tc.text))
		var me *MapError
		if !errors.As(err, &me) || me.Line != tc.line || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%.40q: got %v, want an error at line %d with %q", tc.text, err, tc.line, tc.msg)
		} else if !strings.HasPrefix(err.Error(), fmt.Sprintf("map:%d: ", tc.line)) {
			t.Errorf("%.40q: %q does not start with the file and line", tc.text, err)
		}
	}
}

// TestTransportMapTransport: --transport decides which entries without an
// onion are onionmx's.
func TestTransportMapTransport(t *testing.T) {
	text := "srv.example smtptor:\nrelay.example smtptor:[relay.example]\nother.example onionmx:\n"
	m, err := ParseTransportMapFor("map", "smtptor", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	checkEntries(t, m, []entryWant{
		{domain: "srv.example", line: 1},
		{domain: "relay.example", kind: EntryBad, line: 2, text: "onionmx (transport smtptor) never dials the clear net"},
		{domain: "other.example", kind: EntryElsewhere, line: 3, text: "onionmx"},
	})
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
'not-an-onion.example': [b.example]
? [complex, key]
: [complex.example]
'` + flipped(a) + `':
  - typo.example
  - 'bad domain'
  - [nested]
'` + a + `': {a: b}
`
	m, err := ParseYAMLMap("map.yml", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	route := func(h string) []Nexthop { return []Nexthop{{Host: h}} }
	checkEntries(t, m, []entryWant{
		{domain: "calyx.com", kind: EntryBad, line: 4, text: "calyx.com: onion 4my2dd2okjr75aho.onion: v2 onion address (retired since Tor 0.4.6): delete the entry or update it"},
		{domain: "riseup.net", line: 7, nexthops: route(a)},
		{domain: "example.org", line: 8, nexthops: route(a)},
		{domain: "flow.example", line: 9, nexthops: route(b)},
		{domain: "b.example", kind: EntryBad, line: 12, text: `key "not-an-onion.example" is not an onion address`},
		{domain: "complex.example", kind: EntryBad, line: 14, text: "not an onion address"},
		{domain: "typo.example", kind: EntryBad, line: 16, text: "checksum mismatch"},
	})
	if m.Len() != 8 {
		t.Errorf("map has %d domains, want 8", m.Len())
	}
	var lines []int
	for _, p := range m.Problems() {
		lines = append(lines, p.Line)
	}
	// 4, 5: v2; 9: example.org twice; 12: not an onion; 14: complex key;
	// 16: typo; 17: bad domain; 18: nested list; 19: not a list.
	if want := []int{4, 5, 9, 12, 14, 16, 17, 18, 19}; !slices.Equal(lines, want) {
		t.Errorf("problems at lines %v, want %v:\n%q", lines, want, m.Problems())
	}

	for _, tc := range []struct {
		text string
		line int
		msg  string
	}{
		{"- a\n- b\n", 1, "mapping"},
		{"'x.onion': [a.example\n", 1, ""},
		{"a: b\n\tc: d\n", 2, "tab"},
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
		if e, ok := m.Find(domain); !ok || len(e.Nexthops) != 1 || e.Nexthops[0].Host != a {
			t.Errorf("%s: Find(%s) = %+v %v", path, domain, e, ok)
		}
	}
	_, err := LoadMap(filepath.Join(dir, "missing"))
	var me *MapError
	if !errors.As(err, &me) || err.Error() != filepath.Join(dir, "missing")+": cannot read: no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
	if _, err := LoadMap(dir); err == nil || !strings.Contains(err.Error(), "a directory") {
		t.Errorf("directory: %v", err)
	}
}

// TestLoadMapDatabase: a database that postmap made is not the text map
// onionmx reads; the error names the text file.
func TestLoadMapDatabase(t *testing.T) {
	dir := t.TempDir()
	// The first bytes of a Berkeley DB hash file, as postmap writes it.
	bdb := append(make([]byte, 12), 0x61, 0x15, 0x06, 0x00, 9, 0, 0, 0)
	// An LMDB meta page: the magic after the 16-byte page header.
	lmdb := append(make([]byte, 16), 0xde, 0xc0, 0xef, 0xbe)
	for name, content := range map[string][]byte{
		"transport.db":   bdb,
		"transport.lmdb": lmdb,
		"transport.cdb":  []byte("anything"),
		"transport.dir":  nil,
		"transport.pag":  nil,
		"hashed":         bdb,
		"lmdb.map":       lmdb,
	} {
		path := filepath.Join(dir, name)
		os.WriteFile(path, content, 0o644)
		_, err := LoadMap(path)
		text := strings.TrimSuffix(path, filepath.Ext(path))
		if name == "hashed" || name == "lmdb.map" {
			text = "" // no name to guess the text file's from
		}
		var me *MapError
		if !errors.As(err, &me) || !strings.HasPrefix(err.Error(), path+": a database") ||
			!strings.Contains(err.Error(), "made by postmap") || !strings.Contains(err.Error(), "text") ||
			me.Text != text {
			t.Errorf("%s: %v, text file %q, want %q", name, err, me.Text, text)
		}
	}
	// Without the file, the name says enough.
	var me *MapError
	if _, err := LoadMap(filepath.Join(dir, "gone.db")); !errors.As(err, &me) || me.Text != filepath.Join(dir, "gone") {
		t.Errorf("gone.db: %v", err)
	}
}
