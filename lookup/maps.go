package lookup

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/onionmx/onionmx/internal/printable"
)

// maxMapLine bounds one logical line of a transport-map file, so that a
// corrupt file cannot make us buffer without limit.
const maxMapLine = 64 << 10

// DefaultTransport is onionmx's own master.cf service name, the default of
// --transport: map entries for it are onionmx's to judge.
const DefaultTransport = "onionmx"

// MapError is a configuration error in a static map, reported with the
// file and line so the administrator can fix it: a map that cannot be read
// or parsed at all (LoadMap fails), or one bad entry (Map.Problems; Resolve
// returns it for the domains the entry covers). Mail is deferred, never
// bounced, because of it.
// maxQuote bounds what a message repeats of a map's text.
const maxQuote = 100

type MapError struct {
	File string
	Line int // 0 when the error is about the whole file
	Msg  string
	Err  error
	// Text is, for a database that postmap made, the text file it was
	// made from: the one to give onionmx instead.
	Text string
}

func (e *MapError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", loc, e.Msg, e.Err)
	}
	return fmt.Sprintf("%s: %s", loc, e.Msg)
}

func (e *MapError) Unwrap() error { return e.Err }

// ElsewhereError says that a static map routes a domain to another
// transport than onionmx ("example.org smtp:[relay]:587", "example.org
// error:gone", "example.org :"): the administrator routes it elsewhere, in
// the same file that Postfix reads as its own transport map. Resolve
// returns it without any DNS query. It is neither a *MapError nor an
// *Error: the lookup servers answer NOTFOUND (Postfix's own copy of the
// table applies), and a delivery that Postfix hands to onionmx anyway is a
// configuration mismatch, deferred.
type ElsewhereError struct {
	File   string
	Line   int
	Domain string // the domain looked up
	Key    string // the entry's key: the domain, or ".parent"
	// Transport is the entry's transport; empty for the null transport
	// (Postfix's default routing).
	Transport string
	Value     string // the entry's value, as written
	// Ours is the transport the map was judged for (--transport).
	Ours string
}

func (e *ElsewhereError) Error() string {
	entry := "the map"
	if e.Key != e.Domain {
		entry = "the map's " + e.Key + " entry"
	}
	if e.Transport == "" {
		return fmt.Sprintf("%s:%d: %s is left to Postfix's default routing by %s (%s), not routed to %s", e.File, e.Line, e.Domain, entry, printable.Line(e.Value, maxQuote), e.Ours)
	}
	return fmt.Sprintf("%s:%d: %s is routed to transport %q by %s (%s), not to %s", e.File, e.Line, e.Domain, e.Transport, entry, printable.Line(e.Value, maxQuote), e.Ours)
}

// EntryKind is what a map entry means to onionmx.
type EntryKind int

const (
	// EntryRoute routes the domain over Tor: to Nexthops, or, when there
	// are none, to the domain's own SRV records.
	EntryRoute EntryKind = iota
	// EntryElsewhere routes the domain to another transport.
	EntryElsewhere
	// EntryBad is a configuration error (Problem): onionmx's entry with an
	// unusable target, or a line that cannot be read as an entry.
	EntryBad
)

// MapEntry is one entry of a static map.
type MapEntry struct {
	File string
	Line int
	// Key is the normalized key: "example.org", or ".example.org" for
	// the subdomains of example.org.
	Key string
	// Value is the value as written ("smtptor:[x.onion]:25").
	Value string
	// Transport is the value's transport word; empty for the null
	// transport, for a value without one ("[x.onion]") and in YAML maps.
	Transport string
	Kind      EntryKind
	// Nexthops are the onion nexthops of an EntryRoute, in the order to
	// try them; all are usable v3 onions. None: the domain's SRV records.
	Nexthops []Nexthop
	// Problem is the error of an EntryBad.
	Problem *MapError
}

// Map is a static map from mail domains to onion nexthops, read from a file
// in one of two formats:
//
//   - Postfix transport-map text (transport(5)), as in the community's old
//     tor_transport file or in the file Postfix itself reads with hash:.
//     Blank lines and lines whose first non-blank character is "#" are
//     ignored, and a line that starts with white space continues the
//     previous one (postmap(1)). A key ".example.org" matches the
//     subdomains of example.org. See ParseTransportMap for which entries
//     are onionmx's.
//   - The onionmx community YAML (files ending in .yml or .yaml):
//     "'x.onion': [domain, ...]"; an onion with a null value has no domains.
//
// The first entry for a key wins, as in postmap(1). A map with bad entries
// loads: the other entries keep working, each bad entry is a Problem, and
// the domains it covers resolve to that *MapError.
type Map struct {
	// Name is the file the map was read from.
	Name string
	// Transport is onionmx's transport name the entries were judged for.
	Transport string
	entries   map[string]*MapEntry
	problems  []*MapError
}

// isDatabase reports whether path names a database that postmap(1) makes
// from a text file, and the text file's name.
func isDatabase(path string) (string, bool) {
	for _, ext := range []string{".db", ".lmdb", ".cdb", ".dir", ".pag"} {
		if strings.HasSuffix(path, ext) && len(path) > len(ext) && !strings.HasSuffix(path, "/"+ext) {
			return strings.TrimSuffix(path, ext), true
		}
	}
	return "", false
}

// databaseMagic reports whether head, the first bytes of a file, is a
// Berkeley DB (hash, btree, queue) or LMDB file, in either byte order.
func databaseMagic(head []byte) bool {
	magics := []uint32{0x00061561, 0x00053162, 0x00042253, 0xbeefc0de}
	for _, off := range []int{12, 16} {
		if len(head) < off+4 {
			continue
		}
		for _, v := range []uint32{binary.LittleEndian.Uint32(head[off:]), binary.BigEndian.Uint32(head[off:])} {
			if slices.Contains(magics, v) {
				return true
			}
		}
	}
	return false
}

// LoadMap reads a static map from a file, judging its entries for
// DefaultTransport; see LoadMapFor.
func LoadMap(path string) (*Map, error) { return LoadMapFor(path, DefaultTransport) }

// LoadMapFor reads a static map from a file; the format follows its name.
// transport is onionmx's master.cf service name (--transport): entries for
// it are onionmx's to judge. It fails only when the file cannot be read or
// parsed as a whole; bad entries are Problems.
func LoadMapFor(path, transport string) (*Map, error) {
	if text, ok := isDatabase(path); ok {
		return nil, &MapError{File: path, Msg: "a database made by postmap, not a text map: give onionmx the text file it was made from", Text: text}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, &MapError{File: path, Msg: "cannot read", Err: errors.Unwrap(err)}
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, &MapError{File: path, Msg: "a directory, not a map file"}
	}
	br := bufio.NewReader(f)
	if head, _ := br.Peek(64); databaseMagic(head) {
		return nil, &MapError{File: path, Msg: "a database (Berkeley DB or LMDB) made by postmap, not a text map: give onionmx the text file postmap made it from"}
	}
	if strings.HasSuffix(path, ".yml") || strings.HasSuffix(path, ".yaml") {
		return ParseYAMLMap(path, br)
	}
	return ParseTransportMapFor(path, transport, br)
}

// Len returns the number of keys in the map, bad entries included.
func (m *Map) Len() int { return len(m.entries) }

// Problems returns the map's configuration errors, in file order: every
// bad entry (its domains resolve to the same *MapError), and lines that
// are not entries onionmx can use but matter to it (a duplicate key, a
// line Postfix ignores). Each names its file and line.
func (m *Map) Problems() []*MapError { return slices.Clone(m.problems) }

// Find returns the entry that a map gives for domain (normalized). Like a
// Postfix transport map, an exact key matches first, then ".parent" keys
// from the nearest parent up.
func (m *Map) Find(domain string) (*MapEntry, bool) {
	if e, ok := m.entries[domain]; ok {
		return e, true
	}
	for d := domain; ; {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return nil, false
		}
		d = d[i+1:]
		if e, ok := m.entries["."+d]; ok {
			return e, true
		}
	}
}

func (m *Map) problem(line int, format string, args ...any) *MapError {
	p := &MapError{File: m.Name, Line: line, Msg: fmt.Sprintf(format, args...)}
	m.problems = append(m.problems, p)
	return p
}

// add adds an entry for its key; the first entry for a key wins, and a
// later one is a problem (postmap warns about it too).
func (m *Map) add(e *MapEntry) {
	e.File = m.Name
	if e.Kind == EntryBad {
		m.problems = append(m.problems, e.Problem)
	}
	if first, dup := m.entries[e.Key]; dup {
		m.problem(e.Line, "%s: duplicate entry; the first one, line %d, wins", e.Key, first.Line)
		return
	}
	m.entries[e.Key] = e
}

// bad makes an EntryBad for key.
func (m *Map) bad(key, value string, line int, format string, args ...any) *MapEntry {
	return &MapEntry{Key: key, Value: value, Line: line, Kind: EntryBad,
		Problem: &MapError{File: m.Name, Line: line, Msg: key + ": " + fmt.Sprintf(format, args...)}}
}

// ParseTransportMap reads the Postfix transport-map text format, judging
// its entries for DefaultTransport; see ParseTransportMapFor.
func ParseTransportMap(name string, r io.Reader) (*Map, error) {
	return ParseTransportMapFor(name, DefaultTransport, r)
}

// ParseTransportMapFor reads the Postfix transport-map text format
// (transport(5)): "pattern transport:nexthop", with onionmx's short forms
// "domain [x.onion]:port" and "domain x.onion[:port]". Whatever postmap(1)
// accepts loads. Only an entry that names an onion (any nexthop in .onion,
// whatever the transport word, the null transport included) or whose
// transport is transport is onionmx's to judge:
//
//   - usable v3 onion nexthops are a route, tried in order (a Postfix 3.5
//     nexthop list, separated by commas or white space);
//   - transport with an empty nexthop ("example.org onionmx:") is the
//     domain's own SRV records, as is "smtptor:" with --transport smtptor;
//   - transport with a nexthop outside .onion, an unusable onion (a typo,
//     a bad checksum, v2) or a nexthop that cannot be parsed is a bad
//     entry: a configuration error for the domains it covers.
//
// Any other domain entry ("example.org smtp:[relay]:587", "example.org
// error:gone away", "example.org relay:a, b", "example.org :") routes the
// domain elsewhere (EntryElsewhere). The "*" key and address keys
// ("user@domain", "user+ext@domain") are Postfix's alone and ignored; so
// are other keys that are not domain names, unless the entry is onionmx's,
// which is a problem then. A line Postfix ignores with a warning (a key
// without a value, a first line that starts with white space) is a
// problem; when its key is a domain, a bad entry for that domain, whose
// route is then in doubt. Postfix reads a line only up to a NUL byte, and
// so does onionmx, reporting it. Only a file that cannot be read, or a line
// longer than 64 KiB, fails the whole map.
func ParseTransportMapFor(name, transport string, r io.Reader) (*Map, error) {
	m := &Map{Name: name, Transport: transport, entries: make(map[string]*MapEntry)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxMapLine)
	var (
		logical   strings.Builder
		startLine int
		lineNo    int
	)
	flush := func() {
		if logical.Len() > 0 {
			m.parseTransportLine(logical.String(), startLine)
			logical.Reset()
		}
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if lineNo == 1 && strings.HasPrefix(line, "\ufeff") {
			// Postfix would take the byte order mark as part of the first
			// key, which then never matches.
			m.problem(1, "the file starts with a UTF-8 byte order mark, which Postfix takes as part of the first key: save it without one")
			line = line[len("\ufeff"):]
		}
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' || line[0] == '\r' {
			if logical.Len() == 0 {
				m.problem(lineNo, "a line that starts with white space continues an entry, and there is none before it: Postfix ignores it")
				continue
			}
			if logical.Len()+len(trimmed) > maxMapLine {
				return nil, &MapError{File: name, Line: startLine, Msg: "entry too long"}
			}
			logical.WriteString(" ")
			logical.WriteString(trimmed)
			continue
		}
		flush()
		logical.WriteString(trimmed)
		startLine = lineNo
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &MapError{File: name, Line: lineNo + 1, Msg: fmt.Sprintf("line longer than %d bytes", maxMapLine)}
		}
		return nil, &MapError{File: name, Line: lineNo, Msg: "cannot read", Err: err}
	}
	flush()
	return m, nil
}

// isMapSpace is white space as Postfix's table reader sees it.
func isMapSpace(c rune) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'
}

// textTransports take text, not hosts, as their nexthop: error(8),
// discard(8) and retry.
var textTransports = []string{"error", "discard", "retry"}

func (m *Map) parseTransportLine(line string, lineNo int) {
	if before, _, ok := strings.Cut(line, "\x00"); ok {
		// Postfix reads a line as a C string: only up to a NUL. The entry
		// means what Postfix makes of it, and the admin is told.
		m.problem(lineNo, "a NUL byte in the entry: Postfix reads it only up to there (%q)", printable.Line(before, maxQuote))
		line = strings.TrimRightFunc(before, isMapSpace)
		if line == "" {
			return
		}
	}
	key, value := line, ""
	if i := strings.IndexFunc(line, isMapSpace); i >= 0 {
		key, value = line[:i], strings.TrimFunc(line[i:], isMapSpace)
	}

	// The key: a domain, ".parent", or one that is Postfix's alone ("*",
	// addresses). Other control characters are bytes to Postfix: a key
	// with one is not a domain name, a value with one is not a nexthop
	// onionmx can use.
	var domain string
	var keyErr error
	postfixOnly := key == "*" || strings.Contains(key, "@")
	if !postfixOnly {
		d, err := NormalizeDomain(strings.TrimPrefix(key, "."))
		if err == nil && strings.HasPrefix(key, ".") {
			d = "." + d
		}
		domain, keyErr = d, err
	}
	quoted := fmt.Sprintf("%q", printable.Line(key, maxQuote))

	switch {
	case value == "":
		if domain != "" {
			m.add(m.bad(domain, value, lineNo, "no value (postmap ignores the line): want \"%s transport:nexthop\"", key))
		} else {
			m.problem(lineNo, "%s has no value (postmap ignores the line)", quoted)
		}
		return
	}

	e := m.judge(value)
	if e == nil {
		// Another transport's entry.
		if domain != "" {
			t, _, _ := strings.Cut(value, ":")
			m.add(&MapEntry{Key: domain, Value: value, Line: lineNo, Transport: t, Kind: EntryElsewhere})
		}
		return
	}
	switch {
	case domain != "":
		e.Key, e.Line = domain, lineNo
		if e.Kind == EntryBad {
			e = m.bad(domain, value, lineNo, "%s", e.Problem.Msg)
		}
		m.add(e)
	case postfixOnly:
		// Postfix applies these itself; onionmx only reports what is
		// wrong with its own.
		if e.Kind == EntryBad {
			m.problem(lineNo, "%s: %s", printable.Line(key, maxQuote), e.Problem.Msg)
		}
	default:
		m.problem(lineNo, "key %s is not a domain name: %v", quoted, keyErr)
	}
}

// judge reads a transport-map value. It returns nil when the entry is not
// onionmx's, and otherwise an EntryRoute or an EntryBad whose Problem has
// only Msg set.
func (m *Map) judge(value string) *MapEntry {
	transport, nexthop, hasColon := strings.Cut(value, ":")
	short := false
	switch {
	case !hasColon && value == m.Transport:
		// Postfix reads a value without a colon as a transport.
		transport, nexthop = value, ""
	case !hasColon || strings.HasPrefix(value, "[") || IsOnion(transport):
		// onionmx's own short forms: "[x.onion]:port", "x.onion",
		// "x.onion:port". Postfix would read a transport name there; only
		// one that names an onion is onionmx's.
		transport, nexthop, short = "", value, true
	}
	var tokens []string
	if !slices.Contains(textTransports, transport) || transport == m.Transport {
		tokens = strings.FieldsFunc(nexthop, func(r rune) bool { return r == ',' || isMapSpace(r) })
	}
	names := slices.ContainsFunc(tokens, namesOnion)
	if !names && (short || transport != m.Transport) {
		return nil
	}
	e := &MapEntry{Value: value, Transport: transport, Kind: EntryRoute}
	fail := func(format string, args ...any) *MapEntry {
		e.Kind, e.Nexthops = EntryBad, nil
		e.Problem = &MapError{Msg: fmt.Sprintf(format, args...)}
		return e
	}
	for _, tok := range tokens {
		nh, err := ParseNexthop(tok)
		if err != nil {
			return fail("%v", err)
		}
		if err := CheckOnion(nh.Host); err != nil {
			if errors.Is(err, ErrNotOnion) {
				if transport == m.Transport {
					return fail("nexthop %s is not a .onion name, and onionmx (transport %s) never dials the clear net: give the onion, or route the domain with another transport", tok, transport)
				}
				return fail("nexthop %s is not a .onion name, beside an onion nexthop: onionmx never dials the clear net", tok)
			}
			return fail("nexthop %s: %v", tok, err)
		}
		e.Nexthops = append(e.Nexthops, nh)
	}
	return e
}

// namesOnion reports whether a nexthop token names a host in .onion,
// leniently: "[x.onion]:25", "x.onion.", "X.ONION:25", even when it does
// not parse.
func namesOnion(tok string) bool {
	t := strings.ToLower(tok)
	for i := 0; ; {
		j := strings.Index(t[i:], ".onion")
		if j < 0 {
			return t == "onion" || t == "[onion]" || strings.HasPrefix(t, "onion:") || strings.HasPrefix(t, "[onion]")
		}
		end := i + j + len(".onion")
		if end == len(t) || strings.IndexByte(".]:", t[end]) >= 0 {
			return true
		}
		i = end
	}
}

// ParseYAMLMap reads the onionmx community YAML map:
// "'<onion>': [domain, ...]". A key that is not a usable v3 onion (the
// community map still lists v2 ones) is a bad entry for each of its
// domains; a list item that is not a domain is a problem. Syntax errors
// and a document that is not a mapping fail the whole map.
func ParseYAMLMap(name string, r io.Reader) (*Map, error) {
	// The community map is a few kilobytes; a bound keeps a corrupt or
	// hostile file from costing more than a bounded amount of memory.
	const maxYAML = 16 << 20
	data, err := io.ReadAll(io.LimitReader(r, maxYAML+1))
	if err != nil {
		return nil, &MapError{File: name, Msg: "cannot read", Err: err}
	}
	if len(data) > maxYAML {
		return nil, &MapError{File: name, Msg: fmt.Sprintf("larger than %d bytes", maxYAML)}
	}
	m := &Map{Name: name, Transport: DefaultTransport, entries: make(map[string]*MapEntry)}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return m, nil // an empty file is an empty map
		}
		return nil, yamlError(name, err)
	}
	if len(doc.Content) == 0 {
		return m, nil
	}
	top := doc.Content[0]
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return m, nil
	}
	if top.Kind != yaml.MappingNode {
		return nil, &MapError{File: name, Line: top.Line, Msg: "want a mapping of onion addresses to lists of domains"}
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		// What is wrong with the key, if anything.
		var keyProblem string
		var nh Nexthop
		if k.Kind != yaml.ScalarNode {
			keyProblem = "the key is not an onion address"
		} else if n, err := ParseNexthop(k.Value); err != nil || !IsOnion(n.Host) {
			keyProblem = fmt.Sprintf("key %q is not an onion address", printable.Line(k.Value, maxQuote))
		} else if err := CheckOnion(n.Host); err != nil {
			keyProblem = fmt.Sprintf("onion %s: %v", n.Host, err)
		} else {
			nh = n
		}
		var domains []*yaml.Node
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			// Tolerated: an onion listed without domains.
		case v.Kind == yaml.SequenceNode:
			domains = v.Content
		case v.Kind == yaml.ScalarNode:
			domains = []*yaml.Node{v}
		default:
			m.problem(v.Line, "the value of %s is not a list of domains", yamlKey(k))
			continue
		}
		for _, d := range domains {
			if d.Kind != yaml.ScalarNode {
				m.problem(d.Line, "a list item under %s is not a domain", yamlKey(k))
				continue
			}
			domain, err := NormalizeDomain(d.Value)
			if err != nil {
				m.problem(d.Line, "%v", err)
				continue
			}
			if keyProblem != "" {
				m.add(m.bad(domain, k.Value, d.Line, "%s: delete the entry or update it", keyProblem))
				continue
			}
			m.add(&MapEntry{Key: domain, Value: k.Value, Line: d.Line, Kind: EntryRoute, Nexthops: []Nexthop{nh}})
		}
	}
	return m, nil
}

// yamlKey names a YAML key in a message.
func yamlKey(k *yaml.Node) string {
	if k.Kind == yaml.ScalarNode {
		return fmt.Sprintf("%q", printable.Line(k.Value, maxQuote))
	}
	return fmt.Sprintf("the key at line %d", k.Line)
}

// yamlError turns a yaml.v3 error ("yaml: line 3: ...") into a MapError
// with that line.
func yamlError(name string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.IndexByte(msg, ':')+1:])
	}
	return &MapError{File: name, Line: line, Msg: msg}
}
