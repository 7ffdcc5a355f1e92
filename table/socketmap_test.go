package table

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSocketmapPipelined(t *testing.T) {
	f := newFixture(t)
	addr, _ := serve(t, &Server{Answerer: f.a, Protocol: Socketmap})
	c := dial(t, addr)

	// Everything in one write, as a client that pipelines would send it;
	// replies must come back in order.
	reqs := []struct{ req, want string }{
		{"onionmx bob@single.example", "OK onionmx:[" + f.o1 + "]:25"},
		{"onionmx carol@multi.example", "OK onionmx:"},
		{"onionmx dave@pinned.example", "OK onionmx:[" + f.o3 + "]:2525"},
		{"onionmx erin@nxdomain.example", "NOTFOUND "},
		{"onionmx *", "NOTFOUND "},
		{"onionmx gina@servfail.example", "TEMP cannot find onion route for servfail.example: DNS SRV _onion-mx._tcp.servfail.example.: "},
		{"onionmx bob@exa mple.org", "PERM domain \"exa mple.org\" contains ' '"},
		{"onionmx", `PERM want "NAME KEY"`},
		// Any map name is accepted.
		{"transport bob@single.example", "OK onionmx:[" + f.o1 + "]:25"},
		{"onionmx john smith@single.example", "OK onionmx:[" + f.o1 + "]:25"},
	}
	var all strings.Builder
	for _, r := range reqs {
		all.WriteString(netstring(r.req))
	}
	c.send(all.String())
	for _, r := range reqs {
		if got := c.netstring(); !strings.HasPrefix(got, r.want) {
			t.Errorf("%q: reply %q, want %q", r.req, got, r.want)
		}
	}
	// The connection stays open for more, as Postfix reuses it.
	for i := range 3 {
		time.Sleep(20 * time.Millisecond)
		c.send(netstring("onionmx x@" + f.o2))
		if got, want := c.netstring(), "OK onionmx:["+f.o2+"]:25"; got != want {
			t.Errorf("request %d on the open connection: %q, want %q", i, got, want)
		}
	}
}

func TestSocketmapMalformed(t *testing.T) {
	f := newFixture(t)
	addr, _ := serve(t, &Server{Answerer: f.a, Protocol: Socketmap})
	valid := netstring("onionmx x@" + f.o1)
	validReply := "OK onionmx:[" + f.o1 + "]:25"
	for _, tc := range []struct {
		name  string
		in    string
		reply string // prefix of the reply
		open  bool   // the connection stays usable
	}{
		{"no length", ":,", "PERM netstring without a length", false},
		{"junk", "hello", "PERM netstring length: unexpected 'h'", false},
		{"leading space", " 5:a b c,", "PERM netstring length: unexpected ' '", false},
		{"negative", "-1:", "PERM netstring length: unexpected '-'", false},
		{"wrong terminator", "3:a b;", "PERM netstring of length 3 not followed by ','", false},
		{"too short payload", "2:a b,", "PERM netstring of length 2 not followed by ','", false},
		// Refused before a byte of it is read.
		{"too long", "100001:", "PERM netstring longer than 100000 bytes", false},
		{"huge", strings.Repeat("9", 40) + ":", "PERM netstring longer than 100000 bytes", false},
		{"empty", "0:,", `PERM want "NAME KEY"`, true},
		{"no key", netstring("onionmx"), `PERM want "NAME KEY"`, true},
		{"empty name", netstring(" bob@single.example"), "PERM empty map name", true},
		{"empty key", netstring("onionmx "), "PERM empty key", true},
		{"NUL in key", netstring("onionmx bob@single.example\x00"), "PERM key contains control character 0x00", true},
		{"NUL in name", netstring("onion\x00mx bob@single.example"), "PERM map name contains control character 0x00", true},
		{"newline in key", netstring("onionmx bob@single.example\nOK"), "PERM key contains control character 0x0a", true},
		{"long key", netstring("onionmx " + strings.Repeat("a", 5000) + "@single.example"), "PERM key is 5015 bytes long, at most 4096", true},
		{"space in domain", netstring("onionmx bob@single .example"), "PERM domain", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			c.send(tc.in)
			if got := c.netstring(); !strings.HasPrefix(got, tc.reply) {
				t.Errorf("reply %q, want %q", got, tc.reply)
			}
			if !tc.open {
				c.closed()
				return
			}
			c.send(valid)
			if got := c.netstring(); got != validReply {
				t.Errorf("next request: %q, want %q", got, validReply)
			}
		})
	}
}

// A client that goes away in the middle of a request: the server ends the
// connection at once, without a reply and without waiting for a timeout.
func TestSocketmapDisconnectMidRequest(t *testing.T) {
	f := newFixture(t)
	for _, partial := range []string{"3", "30:", "30:onionmx bob@", "7:onionmx", netstring("onionmx *") + "12:onionmx"} {
		srv := &Server{Answerer: f.a, Protocol: Socketmap}
		cc, sc := net.Pipe()
		done := make(chan error, 1)
		go func() { done <- srv.ServeConn(context.Background(), sc) }()
		go func() {
			// Drain replies, as a client would before it goes.
			bufio.NewReader(cc).WriteTo(discard{})
		}()
		cc.Write([]byte(partial))
		cc.Close()
		select {
		case err := <-done:
			// Either the partial request or the reply to the one before it
			// meets the closed connection.
			if err == nil || !strings.Contains(err.Error(), "in the middle of a request") && !strings.Contains(err.Error(), "writing replies") {
				t.Errorf("%q: ServeConn returned %v", partial, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q: ServeConn hangs after the client left", partial)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestTimeouts(t *testing.T) {
	f := newFixture(t)
	for _, proto := range []Protocol{Socketmap, TCPTable} {
		t.Run(proto.String(), func(t *testing.T) {
			srv := &Server{Answerer: f.a, Protocol: proto, IdleTimeout: 100 * time.Millisecond, IOTimeout: 100 * time.Millisecond}
			addr, logged := serve(t, srv)

			// Idle: closed after IdleTimeout, silently.
			start := time.Now()
			c := dial(t, addr)
			c.closed()
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("idle connection closed after %v", d)
			}

			// A request that stops half way: closed after IOTimeout.
			c = dial(t, addr)
			partial := "30:onionmx bob@"
			if proto == TCPTable {
				partial = "get bob@"
			}
			c.send(partial)
			c.closed()
			time.Sleep(50 * time.Millisecond)
			if log := logged(); !strings.Contains(log, "i/o timeout") {
				t.Errorf("log %q, want an i/o timeout", log)
			}
		})
	}
}

// A client that sends requests and never reads the replies cannot hold the
// server: writes have a deadline too.
func TestWriteTimeout(t *testing.T) {
	f := newFixture(t)
	srv := &Server{Answerer: f.a, Protocol: Socketmap, IOTimeout: 200 * time.Millisecond}
	cc, sc := net.Pipe() // unbuffered: the first reply already blocks
	defer cc.Close()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), sc) }()
	cc.Write([]byte(netstring("onionmx *")))
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("ServeConn: %v, want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeConn hangs on a client that does not read")
	}
}

func TestManyConnections(t *testing.T) {
	f := newFixture(t)
	addr, _ := serve(t, &Server{Answerer: f.a, Protocol: Socketmap})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			br := bufio.NewReader(c)
			for j := range 10 {
				key, want := "x@"+f.o1, "OK onionmx:["+f.o1+"]:25"
				switch (i + j) % 3 {
				case 1:
					key, want = "x@pinned.example", "OK onionmx:["+f.o3+"]:2525"
				case 2:
					key, want = fmt.Sprintf("x@nx%d.example", i), "NOTFOUND "
				}
				if _, err := c.Write([]byte(netstring("onionmx " + key))); err != nil {
					errs <- err
					return
				}
				got, err := readNetstring(br, MaxNetstring)
				if err != nil {
					errs <- err
					return
				}
				if string(got) != want {
					errs <- fmt.Errorf("conn %d request %d %q: %q, want %q", i, j, key, got, want)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// On shutdown, Serve stops accepting, ends idle connections at once and
// returns.
func TestServeShutdown(t *testing.T) {
	f := newFixture(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Answerer: f.a, Protocol: Socketmap}).Serve(ctx, l) }()
	c := dial(t, l.Addr().String())
	c.send(netstring("onionmx *"))
	c.netstring()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve does not return on shutdown with an idle connection open")
	}
	c.closed()
	if _, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		t.Error("still accepting after shutdown")
	}
}

// Without deadlines (stdin/stdout on a pipe), the server still answers and
// ends at the end of input; a broken configuration is answered with TEMP.
func TestServeConnStdio(t *testing.T) {
	f := newFixture(t)
	in := netstring("onionmx x@pinned.example") + netstring("onionmx *")
	c := &memConn{r: strings.NewReader(in)}
	if err := (&Server{Answerer: f.a, Protocol: Socketmap}).ServeConn(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	want := netstring("OK onionmx:["+f.o3+"]:2525") + netstring("NOTFOUND ")
	if got := c.w.String(); got != want {
		t.Errorf("replies %q, want %q", got, want)
	}

	c = &memConn{r: strings.NewReader(in)}
	srv := &Server{Protocol: Socketmap, Fail: errors.New("configuration error: static map /x: cannot read")}
	if err := srv.ServeConn(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	want = netstring("TEMP configuration error: static map /x: cannot read")
	if got := c.w.String(); got != want+want {
		t.Errorf("replies %q, want %q twice", got, want)
	}
}

func TestStdioConnSocket(t *testing.T) {
	// spawn(8) hands the socket over as stdin and stdout: it gets
	// deadlines.
	l, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			defer c.Close()
			c.Write([]byte(netstring("onionmx *")))
			time.Sleep(2 * time.Second)
		}
	}()
	uc, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	f, err := uc.(*net.UnixConn).File()
	uc.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	conn := StdioConn(f, f)
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatalf("no read deadline on a socket: %v", err)
	}
	if err := conn.SetWriteDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatalf("no write deadline on a socket: %v", err)
	}
	f2 := &Server{Protocol: Socketmap, IdleTimeout: 100 * time.Millisecond, Answerer: &Answerer{Transport: "onionmx"}}
	start := time.Now()
	if err := f2.ServeConn(context.Background(), conn); err != nil {
		t.Errorf("ServeConn: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("idle timeout on a stdio socket took %v", d)
	}
}

// A reply is not held back while the server waits for the rest of the next
// request: a client that sends a request and the start of another, then
// waits, gets its first reply.
func TestReplyNotHeldBack(t *testing.T) {
	f := newFixture(t)
	for _, proto := range []Protocol{Socketmap, TCPTable} {
		addr, _ := serve(t, &Server{Answerer: f.a, Protocol: proto})
		c := dial(t, addr)
		if proto == Socketmap {
			c.send(netstring("onionmx *") + "20:onionmx")
			if got := c.netstring(); got != "NOTFOUND " {
				t.Errorf("%v: %q", proto, got)
			}
		} else {
			c.send("get *\nget bob@")
			if got := c.line(); !strings.HasPrefix(got, "500 ") {
				t.Errorf("%v: %q", proto, got)
			}
		}
	}
}
