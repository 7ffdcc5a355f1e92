package main

import (
	"bufio"
	"io"
	"log"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeReceiver answers one connection: a greeting, then one reply per
// command line, 354 to DATA and 250 to the data's end, 250 to each BDAT
// after its chunk. It sends what it received on got.
func fakeReceiver(t *testing.T, got chan<- string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		var all strings.Builder
		defer func() { got <- all.String() }()
		r := bufio.NewReader(c)
		io.WriteString(c, "220 fake ESMTP\r\n")
		for {
			line, err := r.ReadString('\n')
			all.WriteString(line)
			if err != nil {
				return
			}
			f := strings.Fields(line)
			switch strings.ToUpper(f[0]) {
			case "EHLO":
				io.WriteString(c, "250-fake\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
			case "DATA":
				io.WriteString(c, "354 go on\r\n")
				for {
					l, err := r.ReadString('\n')
					all.WriteString(l)
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
				}
				io.WriteString(c, "250 2.0.0 Ok: queued as DATA1\r\n")
			case "BDAT":
				var n int64
				for _, ch := range f[1] {
					n = n*10 + int64(ch-'0')
				}
				b := make([]byte, n)
				io.ReadFull(r, b)
				all.Write(b)
				io.WriteString(c, "250 2.0.0 Ok: chunk\r\n")
			case "QUIT":
				io.WriteString(c, "221 bye\r\n")
				return
			default:
				io.WriteString(c, "250 ok\r\n")
			}
		}
	}()
	return ln.Addr().String()
}

// throughProxy sends script through a proxy with the given drop budget
// and returns what the client read and what the receiver got.
func throughProxy(t *testing.T, budget int64, script string) (client, server string) {
	t.Helper()
	got := make(chan string, 1)
	to := fakeReceiver(t, got)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var b atomic.Int64
	b.Store(budget)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			relay(c, to, &b, log.New(io.Discard, "", 0))
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, script); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), <-got
}

const (
	chunked = "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 6\r\nhello\nBDAT 7 LAST\r\n.world\nQUIT\r\n"
	dotted  = "EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nhello\r\n..\r\n.\r\nQUIT\r\n"
)

func TestProxyPasses(t *testing.T) {
	for _, script := range []string{chunked, dotted} {
		client, server := throughProxy(t, 0, script)
		if server != script {
			t.Errorf("the receiver got %q, want %q", server, script)
		}
		if !strings.HasSuffix(client, "221 bye\r\n") {
			t.Errorf("the client got %q, want every reply up to 221", client)
		}
	}
}

func TestProxyDropsTheReplyToTheEndOfData(t *testing.T) {
	for _, tc := range []struct {
		script, lastSeen, dropped string
	}{
		{chunked, "250 2.0.0 Ok: chunk\r\n", "250 2.0.0 Ok: chunk\r\n"},
		{dotted, "354 go on\r\n", "queued as DATA1"},
	} {
		client, server := throughProxy(t, 1, tc.script)
		// The receiver got the whole message: it has it stored.
		if !strings.Contains(server, "world\n") && !strings.Contains(server, "\r\n.\r\n") {
			t.Errorf("the receiver got %q: not the end of data", server)
		}
		if !strings.HasSuffix(client, tc.lastSeen) || strings.Contains(client, "221") || strings.Count(client, "Ok: chunk") > 1 {
			t.Errorf("the client got %q: want every reply up to the end of data's, withheld, and no more", client)
		}
		if strings.Contains(client, tc.dropped) && tc.dropped != tc.lastSeen {
			t.Errorf("the client got the reply to the end of data: %q", client)
		}
	}
}
