package deliver_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/onionmx/onionmx/internal/sockstest"
)

// batchServer is an SMTP server that answers nothing of a transaction until
// the client has sent all of it: MAIL, every RCPT and DATA (or, with
// CHUNKING, the BDAT LAST chunk). A client that waits for a reply before
// the end of its batch waits forever. rcpt answers each RCPT; seen gets
// every line the server read, and after DATA's 354 what came next.
func batchServer(t *testing.T, ehlo string, rcpt func(string) string, seen chan<- string) func(sockstest.Request) sockstest.Response {
	return func(sockstest.Request) sockstest.Response {
		return sockstest.Response{Handle: func(c net.Conn) {
			defer c.Close()
			defer close(seen)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(c, "220 batch.test ESMTP\r\n")
			br := bufio.NewReader(c)
			var replies []string
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				line = strings.TrimRight(line, "\r\n")
				seen <- line
				verb, arg, _ := strings.Cut(line, " ")
				switch strings.ToUpper(verb) {
				case "EHLO":
					fmt.Fprintf(c, "%s\r\n", ehlo)
					continue
				case "MAIL":
					replies = append(replies, "250 2.1.0 Ok")
					continue
				case "RCPT":
					replies = append(replies, rcpt(arg))
					continue
				case "QUIT":
					fmt.Fprintf(c, "221 2.0.0 Bye\r\n")
					return
				case "DATA":
					replies = append(replies, "354 go ahead")
				case "BDAT":
					var n int64
					fmt.Sscanf(arg, "%d", &n)
					io.CopyN(io.Discard, br, n)
					replies = append(replies, "250 2.0.0 Ok: queued as BATCH")
					if !strings.HasSuffix(arg, "LAST") {
						continue
					}
				}
				// The end of the batch: every reply at once.
				fmt.Fprintf(c, "%s\r\n", strings.Join(replies, "\r\n"))
				if strings.HasPrefix(replies[len(replies)-1], "354") {
					// After the 354, the body up to its final dot, or
					// nothing until the client hangs up.
					var rest strings.Builder
					for {
						line, err := br.ReadString('\n')
						rest.WriteString(line)
						if err != nil {
							seen <- "after 354: " + rest.String()
							return
						}
						if line == ".\r\n" {
							fmt.Fprintf(c, "250 2.0.0 Ok: queued as BATCH\r\n")
							break
						}
					}
					replies = nil
					continue
				}
				replies = nil
			}
		}}
	}
}

// TestPipelining checks that with PIPELINING the client sends MAIL, every
// RCPT and DATA before it reads a reply, and with CHUNKING and one
// recipient MAIL, RCPT and the whole message: the server of the test
// answers only at the end of the batch.
func TestPipelining(t *testing.T) {
	ok := func(string) string { return "250 2.1.5 Ok" }
	for _, tc := range []struct {
		name  string
		ehlo  string
		rcpts []string
		want  string // the command that ends the batch
	}{
		{"pipelining, 2 recipients", "250-batch.test\r\n250 PIPELINING", []string{"a@recv.test", "b@recv.test"}, "DATA"},
		{"chunking, 1 recipient", "250-batch.test\r\n250-PIPELINING\r\n250 CHUNKING", []string{"a@recv.test"}, "BDAT"},
		{"chunking, 2 recipients: DATA", "250-batch.test\r\n250-PIPELINING\r\n250 CHUNKING", []string{"a@recv.test", "b@recv.test"}, "DATA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.client.CommandTimeout, e.client.DataTimeout = 2*time.Second, 2*time.Second
			seen := make(chan string, 100)
			e.setConnect(batchServer(t, tc.ehlo, ok, seen))
			res, err := e.deliver(t, 10*time.Second, tc.rcpts...)
			if err != nil {
				t.Fatalf("got %v, want delivered in one batch", err)
			}
			if res.Text != "Ok: queued as BATCH" {
				t.Errorf("reply %q", res.Reply())
			}
			var verbs []string
			for line := range seen {
				verb, _, _ := strings.Cut(line, " ")
				verbs = append(verbs, verb)
			}
			if !strings.Contains(strings.Join(verbs, " "), tc.want) {
				t.Errorf("the server saw %v, want %s", verbs, tc.want)
			}
		})
	}
}

// TestPipeliningRefusedRecipient checks all or nothing with PIPELINING:
// when a recipient is refused but DATA got its 354 anyway, the client
// hangs up without a byte more (no body, no final dot, no QUIT, which the
// server would take for the message), and nothing is delivered.
func TestPipeliningRefusedRecipient(t *testing.T) {
	e := newEnv(t)
	seen := make(chan string, 100)
	e.setConnect(batchServer(t, "250-batch.test\r\n250 PIPELINING", func(arg string) string {
		if strings.Contains(arg, "gone@") {
			return "550 5.1.1 <gone@recv.test>: unknown"
		}
		return "250 2.1.5 Ok"
	}, seen))
	_, err := e.deliver(t, 10*time.Second, "ok@recv.test", "gone@recv.test")
	if err == nil || err.Status != "5.1.1" || !strings.Contains(err.Msg, "(in reply to RCPT TO command)") {
		t.Fatalf("got %v, want 5.1.1 in reply to RCPT TO", err)
	}
	var after string
	for line := range seen {
		if strings.HasPrefix(line, "after 354: ") {
			after = line
		}
	}
	if after != "after 354: " {
		t.Fatalf("after the 354 the client sent %q, want nothing", strings.TrimPrefix(after, "after 354: "))
	}
}
