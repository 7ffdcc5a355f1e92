package lookup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxMapLine bounds one logical line of a transport-map file, so that a
// corrupt file cannot make us buffer without limit.
const maxMapLine = 64 << 10

// MapError is a malformed static map: a configuration error, reported with
// the file and line so the administrator can fix it. Mail is deferred, never
// bounced, because of it.
type MapError struct {
	File string
	Line int // 0 when the error is about the whole file
	Msg  string
	Err  error
}

func (e *MapError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d", e.File, e.Line)
	}
	if e.Err != nil {
		return fmt.Sprintf("static map %s: %s: %v", loc, e.Msg, e.Err)
	}
	return fmt.Sprintf("static map %s: %s", loc, e.Msg)
}

func (e *MapError) Unwrap() error { return e.Err }

// Map is a static map from mail domains to onion nexthops, read from a file
// in one of two formats:
//
//   - Postfix transport-map text, as in the community's old tor_transport
//     file: "domain  transport:[x.onion]:port", "domain [x.onion]" or
//     "domain x.onion"; the transport word is ignored, and an empty nexthop
//     ("domain smtptor:") means the domain's own route, as in Postfix. Blank lines and lines
//     whose first non-blank character is "#" are ignored, and a line that
//     starts with white space continues the previous one (postmap(1)). A key
//     ".example.org" matches the subdomains of example.org.
//   - The onionmx community YAML (files ending in .yml or .yaml):
//     "'x.onion': [domain, ...]"; an onion with a null value has no domains.
//
// The first entry for a domain wins. Entries whose onion is not a usable v3
// address load fine and are reported as skipped when looked up: the
// published community map still lists v2 onions.
type Map struct {
	// Name is the file the map was read from.
	Name    string
	entries map[string]mapEntry
}

type mapEntry struct {
	nexthop Nexthop
	line    int
}

// LoadMap reads a static map from a file; the format follows its name.
func LoadMap(path string) (*Map, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &MapError{File: path, Msg: "cannot read", Err: errors.Unwrap(err)}
	}
	defer f.Close()
	if strings.HasSuffix(path, ".yml") || strings.HasSuffix(path, ".yaml") {
		return ParseYAMLMap(path, f)
	}
	return ParseTransportMap(path, f)
}

// Len returns the number of domains in the map.
func (m *Map) Len() int { return len(m.entries) }

// Lookup returns the nexthop a map gives for domain (normalized), and where
// it comes from ("file:line"). Like a Postfix transport map, an exact key
// matches first, then ".parent" keys from the nearest parent up. A zero
// Nexthop (an entry with an empty nexthop) means the domain itself.
func (m *Map) Lookup(domain string) (Nexthop, string, bool) {
	if e, ok := m.entries[domain]; ok {
		return e.nexthop, fmt.Sprintf("%s:%d", m.Name, e.line), true
	}
	for d := domain; ; {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return Nexthop{}, "", false
		}
		d = d[i+1:]
		if e, ok := m.entries["."+d]; ok {
			return e.nexthop, fmt.Sprintf("%s:%d", m.Name, e.line), true
		}
	}
}

func (m *Map) add(key string, nh Nexthop, line int) {
	if _, dup := m.entries[key]; !dup {
		m.entries[key] = mapEntry{nexthop: nh, line: line}
	}
}

// ParseTransportMap reads the Postfix transport-map text format.
func ParseTransportMap(name string, r io.Reader) (*Map, error) {
	m := &Map{Name: name, entries: make(map[string]mapEntry)}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxMapLine)
	var (
		logical   string
		startLine int
		lineNo    int
	)
	flush := func() error {
		if logical == "" {
			return nil
		}
		defer func() { logical = "" }()
		return m.parseTransportLine(logical, startLine)
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || trimmed[0] == '#' {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if logical == "" {
				return nil, &MapError{File: name, Line: lineNo, Msg: "continuation line without a preceding entry"}
			}
			if len(logical)+len(trimmed) > maxMapLine {
				return nil, &MapError{File: name, Line: startLine, Msg: "entry too long"}
			}
			logical += " " + trimmed
			continue
		}
		if err := flush(); err != nil {
			return nil, err
		}
		logical, startLine = trimmed, lineNo
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &MapError{File: name, Line: lineNo + 1, Msg: "line too long"}
		}
		return nil, &MapError{File: name, Line: lineNo, Msg: "cannot read", Err: err}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Map) parseTransportLine(line string, lineNo int) error {
	fail := func(format string, args ...any) error {
		return &MapError{File: m.Name, Line: lineNo, Msg: fmt.Sprintf(format, args...)}
	}
	for _, c := range []byte(line) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return fail("control character 0x%02x", c)
		}
	}
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return fail("%q has no value: want \"domain transport:[x.onion]:port\"", fields[0])
	}
	if len(fields) > 2 {
		return fail("%q has more than one value", fields[0])
	}
	key, value := fields[0], fields[1]
	if strings.Contains(key, "@") {
		return fail("key %q is an address: onionmx routes whole domains", key)
	}
	parent := strings.HasPrefix(key, ".")
	domain, err := NormalizeDomain(strings.TrimPrefix(key, "."))
	if err != nil {
		return fail("key: %v", err)
	}
	if parent {
		domain = "." + domain
	}
	var nh Nexthop
	if nexthop := transportNexthop(value); nexthop != "" {
		if nh, err = ParseNexthop(nexthop); err != nil {
			return fail("%v", err)
		}
	}
	// An empty nexthop ("example.org smtptor:", ".onion smtptor:") means,
	// as in Postfix, the domain itself: nh stays zero.
	m.add(domain, nh, lineNo)
	return nil
}

// transportNexthop returns the nexthop part of a transport-map value:
// "transport:nexthop" → nexthop; "[host]..." and "host" stay as they are;
// "x.onion:port" is an onion with a port, not a transport named x.onion.
func transportNexthop(v string) string {
	if strings.HasPrefix(v, "[") {
		return v
	}
	i := strings.IndexByte(v, ':')
	if i < 0 || IsOnion(v[:i]) {
		return v
	}
	return v[i+1:]
}

// ParseYAMLMap reads the onionmx community YAML map:
// "'<onion>': [domain, ...]".
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
	m := &Map{Name: name, entries: make(map[string]mapEntry)}
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
		if k.Kind != yaml.ScalarNode {
			return nil, &MapError{File: name, Line: k.Line, Msg: "key is not an onion address"}
		}
		nh, err := ParseNexthop(k.Value)
		if err != nil || !IsOnion(nh.Host) {
			return nil, &MapError{File: name, Line: k.Line, Msg: fmt.Sprintf("key %q is not an onion address", k.Value)}
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
			return nil, &MapError{File: name, Line: v.Line, Msg: fmt.Sprintf("value of %q is not a list of domains", k.Value)}
		}
		for _, d := range domains {
			if d.Kind != yaml.ScalarNode {
				return nil, &MapError{File: name, Line: d.Line, Msg: "list item is not a domain"}
			}
			domain, err := NormalizeDomain(d.Value)
			if err != nil {
				return nil, &MapError{File: name, Line: d.Line, Msg: err.Error()}
			}
			m.add(domain, nh, d.Line)
		}
	}
	return m, nil
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
