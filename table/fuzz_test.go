package table

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/onionmx/onionmx/lookup"
)

// fuzzAnswerer answers from a static map only (no DNS): example.org and the
// subdomains of sub.example.org go to mapped; relay.example.org and its
// subdomains to another transport; typo.example.org is a bad entry, TEMP
// with the map's path; every other domain but an onion has no route.
func fuzzAnswerer(f *testing.F) (*Answerer, string, string) {
	pub := make([]byte, 32)
	for i := range pub {
		pub[i] = byte(i)
	}
	mapped := lookup.OnionFromKey(pub)
	path := filepath.Join(f.TempDir(), "map")
	typo := []byte(mapped)
	typo[5] ^= 1
	text := "example.org onionmx:[" + mapped + "]:2525\n.sub.example.org " + mapped + "\n" +
		"* smtp:[relay]\nbob@self.example.org onionmx:\nrelay.example.org smtp:[relay]:587\n.relay.example.org relay:a, b\n" +
		"typo.example.org onionmx:[" + string(typo) + "]\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		f.Fatal(err)
	}
	m, err := lookup.LoadMap(path)
	if err != nil {
		f.Fatal(err)
	}
	return &Answerer{
		Resolver:  &lookup.Resolver{Maps: []*lookup.Map{m}},
		Transport: "onionmx",
		Self:      []string{"self.example.org"},
	}, mapped, path
}

var routeRE = regexp.MustCompile(`^onionmx:(\[(?:[a-z0-9-]+\.)*([a-z2-7]{56})\.onion\]:(25|2525))?$`)

// checkRoute fails unless result is a route the input can have asked for:
// the mapped onion, or an onion named in the input (a .onion key). Anything
// else would be a wrong route. An empty nexthop, without DNS, is only for
// a .onion key that onionmx bounces.
func checkRoute(t *testing.T, result, mapped, input string) {
	t.Helper()
	m := routeRE.FindStringSubmatch(result)
	if m == nil {
		t.Fatalf("malformed route %q", result)
	}
	if m[1] == "" {
		if !strings.Contains(strings.ToLower(input), "onion") {
			t.Fatalf("empty nexthop %q without DNS, for no .onion key", result)
		}
		return
	}
	label := m[2]
	if label+".onion" == mapped {
		return
	}
	if lookup.CheckOnion(label+".onion") != nil || !strings.Contains(strings.ToLower(input), label) {
		t.Fatalf("route %q names an onion that is neither mapped nor asked for", result)
	}
}

func socketmapSeeds(f *testing.F) {
	for _, s := range []string{
		netstring("onionmx bob@example.org"),
		netstring("onionmx bob@example.org") + netstring("onionmx *") + netstring("x a@b.sub.example.org"),
		netstring("onionmx x@" + lookup.OnionFromKey(make([]byte, 32))),
		netstring("onionmx self.example.org"),
		netstring("onionmx .example.org"),
		netstring("onionmx bob@[192.0.2.1]"),
		netstring("onionmx john smith@example.org"),
		netstring("onionmx bob@exa mple.org"),
		netstring("onionmx bob@example.org\x00"),
		netstring("onionmx"),
		"0:,",
		"3:abc;",
		"100001:",
		"99999999999999999999:",
		":,",
		"5:a b",
		netstring("onionmx bob@example.org") + "12:onionmx",
		netstring("onionmx u@bad_name!.onion") + netstring("onionmx u@expyuzz4wqqyqhjn.onion") + netstring("onionmx u@[x.onion]"),
		netstring("onionmx x@a.relay.example.org") + netstring("onionmx x@typo.example.org"),
	} {
		f.Add([]byte(s))
	}
}

// FuzzSocketmap feeds any byte stream to the socketmap server: it must end
// (the input ends), never panic, answer only with well-formed netstrings of
// the protocol's classes, and never give a route that was not asked for.
func FuzzSocketmap(f *testing.F) {
	socketmapSeeds(f)
	a, mapped, path := fuzzAnswerer(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &memConn{r: strings.NewReader(string(in))}
		(&Server{Answerer: a, Protocol: Socketmap}).ServeConn(context.Background(), c)
		out := bufio.NewReader(strings.NewReader(c.w.String()))
		for {
			p, err := readNetstring(out, MaxNetstring)
			if err != nil {
				if out.Buffered() > 0 {
					t.Fatalf("malformed reply stream %q: %v", c.w.String(), err)
				}
				return
			}
			reply := string(p)
			switch {
			case strings.HasPrefix(reply, "OK "):
				checkRoute(t, reply[3:], mapped, string(in))
			case reply == "NOTFOUND ", strings.HasPrefix(reply, "PERM "):
			case strings.HasPrefix(reply, "TEMP "+path+":7: typo.example.org: "):
				// The bad entry, and only it.
			default:
				t.Fatalf("reply %q", reply)
			}
			if strings.ContainsAny(reply, "\x00\r\n") {
				t.Fatalf("control character in reply %q", reply)
			}
		}
	})
}

// FuzzTCPTable does the same for the tcp table server: one line per reply,
// at most 4096 bytes, 200/500 (400 needs DNS, or the bad map entry),
// encoded text. (Requests over
// the 16 KiB line limit are TestTCPTableLongRequest's: a seed that long
// slows the fuzzer down fortyfold.)
func FuzzTCPTable(f *testing.F) {
	for _, s := range []string{
		"get bob@example.org\n",
		"get bob@example.org\nget *\nget x@a.sub.example.org\r\n",
		"get john%20smith@example.org\n",
		"get x@" + lookup.OnionFromKey(make([]byte, 32)) + "\n",
		"get bob@exa%20mple.org\n",
		"get a%00b@example.org\n",
		"get bad%zz\n",
		"get bad%2\n",
		"get a b\n",
		"put x\n",
		"\n",
		"get bob@",
		"get u@x..onion\nget u@ONION.\nget u@[expyuzz4wqqyqhjn.onion]\n",
		"get x@a.relay.example.org\nget x@typo.example.org\n",
	} {
		f.Add([]byte(s))
	}
	a, mapped, path := fuzzAnswerer(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &memConn{r: strings.NewReader(string(in))}
		(&Server{Answerer: a, Protocol: TCPTable}).ServeConn(context.Background(), c)
		out := c.w.String()
		if out == "" {
			return
		}
		if !strings.HasSuffix(out, "\n") {
			t.Fatalf("reply stream does not end with a newline: %q", out)
		}
		for _, line := range strings.SplitAfter(strings.TrimSuffix(out, "\n"), "\n") {
			line = strings.TrimSuffix(line, "\n")
			if len(line)+1 > maxTCPReply {
				t.Fatalf("reply of %d bytes", len(line)+1)
			}
			if len(line) < 4 || line[3] != ' ' {
				t.Fatalf("reply %q", line)
			}
			text, err := decodeTCP(line[4:])
			if err != nil {
				t.Fatalf("reply %q: %v", line, err)
			}
			switch line[:3] {
			case "200":
				checkRoute(t, text, mapped, decodeAll(string(in)))
			case "500":
			case "400":
				if !strings.HasPrefix(text, path+":7: typo.example.org: ") {
					t.Fatalf("reply %q", line)
				}
			default:
				t.Fatalf("reply %q", line)
			}
		}
	})
}

// decodeAll decodes every %XX in s, leniently, so that an onion asked for
// in encoded form can be found in the input.
func decodeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b.WriteByte(hi<<4 | lo)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// FuzzTCPEncoding: what decodes, encodes back to something that decodes to
// the same.
func FuzzTCPEncoding(f *testing.F) {
	for _, s := range []string{"bob@example.org", "john%20smith@x", "%25%2a", "b%C3%BCcher", "%", "%zz", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := decodeTCP(s)
		if err != nil {
			return
		}
		e := encodeTCP(d, 3*len(d)+1)
		d2, err := decodeTCP(e)
		if err != nil || d2 != d {
			t.Fatalf("decode(encode(%q)) = %q, %v (encoded %q)", d, d2, err, e)
		}
	})
}
