package table

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func TestTCPTablePipelined(t *testing.T) {
	f := newFixture(t)
	addr, _ := serve(t, &Server{Answerer: f.a, Protocol: TCPTable})
	c := dial(t, addr)
	reqs := []struct{ req, want string }{
		{"get bob@single.example", "200 onionmx:[" + f.o1 + "]:25\n"},
		{"get carol@multi.example", "200 onionmx:\n"},
		{"get dave@pinned.example", "200 onionmx:[" + f.o3 + "]:2525\n"},
		// Encoded as Postfix encodes: white space and 8-bit bytes.
		{"get john%20smith@single.example", "200 onionmx:[" + f.o1 + "]:25\n"},
		{"get bob@b%C3%BCcher.example", "500 no%20onion%20route%20for%20xn--bcher-kva.example:"},
		{"get bob%40SINGLE.example", "200 onionmx:[" + f.o1 + "]:25\n"},
		{"get bob@single.example\r", "200 onionmx:[" + f.o1 + "]:25\n"},
		{"get erin@nxdomain.example", "500 no%20onion%20route%20for%20nxdomain.example:%20DNS%20SRV%20_onion-mx._tcp.nxdomain.example.:%20no%20such%20record\n"},
		{"get *", "500 the%20wildcard%20key:%20onionmx%20routes%20by%20domain\n"},
		{"get gina@servfail.example", "400 cannot%20find%20onion%20route%20for%20servfail.example:"},
		{"get frank@self.example", "500 self.example%20is%20one%20of%20our%20own%20domains%20(--self)\n"},
		{"get bob@exa%20mple.org", "500 domain%20\"exa%20mple.org\"%20contains%20'%20'\n"},
		{"get a%00b@single.example", "500 key%20contains%20control%20character%200x00\n"},
		{"get bad%zz", "500 bad%20%25XX%20sequence%20\"%25zz\"%20at%20offset%203\n"},
		{"get bad%2", "500 truncated%20%25XX%20sequence%20at%20offset%203\n"},
		{"get a b@single.example", "500 unencoded%20white%20space%20or%20control%20character%200x20\n"},
		{"get", "500 unsupported%20request%20\"get\":%20want%20\"get%20KEY\"\n"},
		{"put a b", "500 unsupported%20request%20\"put%20a%20b\":%20want%20\"get%20KEY\"\n"},
		{"GET bob@single.example", "500 unsupported%20request"},
		{"", "500 unsupported%20request%20\"\""},
	}
	var all strings.Builder
	for _, r := range reqs {
		all.WriteString(r.req + "\n")
	}
	c.send(all.String())
	for _, r := range reqs {
		if got := c.line(); !strings.HasPrefix(got, r.want) {
			t.Errorf("%q: reply %q, want %q", r.req, got, r.want)
		}
	}
	// Still open.
	c.send("get x@" + strings.ToUpper(f.o2) + "\n")
	if got, want := c.line(), "200 onionmx:["+f.o2+"]:25\n"; got != want {
		t.Errorf("on the open connection: %q, want %q", got, want)
	}
}

func TestTCPTableLongRequest(t *testing.T) {
	f := newFixture(t)
	addr, _ := serve(t, &Server{Answerer: f.a, Protocol: TCPTable})
	c := dial(t, addr)
	c.send("get " + strings.Repeat("a", 20000) + "@single.example\n")
	if got, want := c.line(), "500 request%20longer%20than%2016384%20bytes\n"; got != want {
		t.Errorf("reply %q, want %q", got, want)
	}
	c.closed()

	// The longest key that is still a key fits a request line.
	c = dial(t, addr)
	key := strings.Repeat("%20", MaxKeyLen-len("@single.example")) + "@single.example"
	c.send("get " + key + "\n")
	if got, want := c.line(), "200 onionmx:["+f.o1+"]:25\n"; got != want {
		t.Errorf("longest key: %q, want %q", got, want)
	}
}

// Replies stay within tcp_table's 4096 bytes and stay decodable whatever
// the reason text holds.
func TestTCPTableReplyBound(t *testing.T) {
	reason := strings.Repeat("50% of a line \x01 ü ", 2000)
	for _, class := range []Class{NotFound, Temp, Perm} {
		line := tcpReply(Answer{Class: class, Reason: reason})
		if len(line) > maxTCPReply {
			t.Errorf("%v: reply of %d bytes", class, len(line))
		}
		if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
			t.Errorf("%v: not one line: %q", class, line[len(line)-20:])
		}
		if _, err := decodeTCP(strings.TrimSuffix(line[4:], "\n")); err != nil {
			t.Errorf("%v: reply text does not decode: %v", class, err)
		}
	}
}

func TestTCPCodec(t *testing.T) {
	for _, tc := range []struct{ in, out, err string }{
		{in: "bob@example.org", out: "bob@example.org"},
		{in: "john%20smith@example.org", out: "john smith@example.org"},
		{in: "%25%2a%2A%7e", out: "%**~"},
		{in: "b%C3%BCcher", out: "bücher"},
		{in: "bücher", out: "bücher"}, // raw 8-bit: taken as is
		{in: "%00", out: "\x00"},
		{in: "%", err: "truncated"},
		{in: "%4", err: "truncated"},
		{in: "%4g", err: "bad %XX"},
		{in: "%g4", err: "bad %XX"},
		{in: "a b", err: "unencoded"},
		{in: "a\tb", err: "unencoded"},
		{in: "a\x7fb", err: "unencoded"},
	} {
		got, err := decodeTCP(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("decodeTCP(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.out {
			t.Errorf("decodeTCP(%q) = %q, %v; want %q", tc.in, got, err, tc.out)
		}
	}
	for in, want := range map[string]string{
		"onionmx:[x.onion]:25": "onionmx:[x.onion]:25",
		"a b%c\td\ne\x7f":      "a%20b%25c%09d%0Ae%7F",
		"ü":                    "%C3%BC",
	} {
		if got := encodeTCP(in, 100); got != want {
			t.Errorf("encodeTCP(%q) = %q, want %q", in, got, want)
		}
	}
	// Cut short, never inside a %XX sequence.
	for max := range 10 {
		got := encodeTCP("ab cd", max)
		if len(got) > max || strings.HasSuffix(got, "%") || strings.HasSuffix(got, "%2") {
			t.Errorf("encodeTCP(%q, %d) = %q", "ab cd", max, got)
		}
	}
}

func TestTCPTableDisconnectMidRequest(t *testing.T) {
	f := newFixture(t)
	for _, partial := range []string{"g", "get bob@single", "get *\nget bob@"} {
		srv := &Server{Answerer: f.a, Protocol: TCPTable}
		cc, sc := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- srv.ServeConn(context.Background(), sc) }()
		go func() {
			buf := make([]byte, 4096)
			for {
				if _, err := cc.Read(buf); err != nil {
					return
				}
			}
		}()
		cc.Write([]byte(partial))
		time.Sleep(20 * time.Millisecond)
		cc.Close()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "in the middle of a request") {
				t.Errorf("%q: ServeConn returned %v", partial, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q: ServeConn hangs after the client left", partial)
		}
	}
}

func TestTCPTableFail(t *testing.T) {
	c := &memConn{r: strings.NewReader("get bob@example.org\nget *\n")}
	srv := &Server{Protocol: TCPTable, Fail: errors.New("configuration error: 50% broken")}
	if err := srv.ServeConn(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	want := "400 configuration%20error:%2050%25%20broken\n"
	if got := c.w.String(); got != want+want {
		t.Errorf("replies %q, want %q twice", got, want)
	}
}
