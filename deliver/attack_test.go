package deliver_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/sockstest"
)

// bdatServer is a hand-written server offering PIPELINING and CHUNKING
// that reads every BDAT chunk and lets onChunk decide what to do after
// each one: the reply to write ("" none, "close" to hang up). It counts
// the LAST chunks it read in full.
func bdatServer(t *testing.T, ehlo string, rcpt string, onChunk func(i int, last bool) string, lasts *atomic.Int32) func(sockstest.Request) sockstest.Response {
	return func(sockstest.Request) sockstest.Response {
		return sockstest.Response{Handle: func(c net.Conn) {
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			io.WriteString(c, "220 bdat.test ESMTP\r\n")
			br := bufio.NewReader(c)
			chunk := 0
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				line = strings.TrimRight(line, "\r\n")
				verb, arg, _ := strings.Cut(line, " ")
				switch strings.ToUpper(verb) {
				case "EHLO":
					fmt.Fprintf(c, "%s\r\n", ehlo)
				case "MAIL":
					io.WriteString(c, "250 2.1.0 Ok\r\n")
				case "RCPT":
					fmt.Fprintf(c, "%s\r\n", rcpt)
				case "QUIT":
					io.WriteString(c, "221 2.0.0 Bye\r\n")
					return
				case "BDAT":
					var n int64
					fmt.Sscanf(arg, "%d", &n)
					if _, err := io.CopyN(io.Discard, br, n); err != nil {
						return
					}
					last := strings.HasSuffix(arg, "LAST")
					if last {
						lasts.Add(1)
					}
					r := onChunk(chunk, last)
					chunk++
					switch r {
					case "":
					case "close":
						return
					default:
						if _, err := fmt.Fprintf(c, "%s\r\n", r); err != nil {
							return
						}
					}
				default:
					io.WriteString(c, "502 5.5.2 what\r\n")
				}
			}
		}}
	}
}

const chunkingEHLO = "250-bdat.test\r\n250-PIPELINING\r\n250 CHUNKING"

// TestAttackChunkedCloseAfterLast: the server reads BDAT LAST and hangs
// up without a word. The message may be stored: temporary, exit 75,
// "may be sent more than once".
func TestAttackChunkedCloseAfterLast(t *testing.T) {
	e := newEnv(t)
	var lasts atomic.Int32
	e.setConnect(bdatServer(t, chunkingEHLO, "250 2.1.5 Ok", func(i int, last bool) string {
		if last {
			return "close"
		}
		return "250 2.0.0 chunk"
	}, &lasts))
	_, err := e.deliverBody(t, 20*time.Second, bigMessageOf(3<<20))
	if err == nil || !err.Temporary() || err.Exit() != 75 || !strings.Contains(err.Msg, "more than once") {
		t.Fatalf("got %v (exit %d), want 4.x.y, exit 75, may be sent more than once", err, errExit(err))
	}
	if lasts.Load() != 1 {
		t.Fatalf("the server read %d LAST chunks, want 1", lasts.Load())
	}
}

// TestAttackChunkedRefusedRcptLast250: RCPT refused, but the server (a
// broken one) answers 250 to BDAT LAST. Not a delivery.
func TestAttackChunkedRefusedRcptLast250(t *testing.T) {
	e := newEnv(t)
	var lasts atomic.Int32
	e.setConnect(bdatServer(t, chunkingEHLO, "550 5.1.1 unknown", func(int, bool) string { return "250 2.0.0 Ok: queued" }, &lasts))
	res, err := e.deliverBody(t, 20*time.Second, bigMessageOf(3<<20))
	if err == nil || err.Status != "5.1.1" {
		t.Fatalf("got %v %v, want 5.1.1 in reply to RCPT TO", res, err)
	}
}

// TestAttackChunkedEveryChunkRefused: 4xx and 5xx to every chunk.
func TestAttackChunkedEveryChunkRefused(t *testing.T) {
	for _, r := range []string{"451 4.3.0 no", "554 5.6.0 no"} {
		e := newEnv(t)
		var lasts atomic.Int32
		e.setConnect(bdatServer(t, chunkingEHLO, "250 2.1.5 Ok", func(int, bool) string { return r }, &lasts))
		_, err := e.deliverBody(t, 20*time.Second, bigMessageOf(3<<20))
		if err == nil || err.Status[0] != r[0] || (r[0] == '4') != (err.Exit() == 75) {
			t.Fatalf("%s to every chunk: got %v (exit %d)", r, err, errExit(err))
		}
	}
}

// TestAttackChunkedSlowRepliesBigMessage: 50 MiB in chunks, a reply per
// chunk, each after a pause: the replies pile up unread while the client
// writes. No deadlock: delivered.
func TestAttackChunkedSlowRepliesBigMessage(t *testing.T) {
	e := newEnv(t)
	e.client.BlockTimeout = 5 * time.Second
	var lasts atomic.Int32
	e.setConnect(bdatServer(t, chunkingEHLO, "250 2.1.5 Ok", func(i int, last bool) string {
		time.Sleep(5 * time.Millisecond)
		if last {
			return "250 2.0.0 Ok: queued as BIG"
		}
		return "250 2.0.0 chunk " + strings.Repeat("x", 400)
	}, &lasts))
	res, err := e.deliverBody(t, 60*time.Second, bigMessageOf(50<<20))
	if err != nil || !strings.Contains(res.Text, "queued as BIG") {
		t.Fatalf("got %v %v, want delivered", res, err)
	}
}

// TestAttackChunkedStopsReading: the server stops reading in the middle
// of a chunk, alive: the write timeout ends it, temporary, no LAST.
func TestAttackChunkedStopsReading(t *testing.T) {
	e := newEnv(t)
	e.client.BlockTimeout = time.Second
	e.setConnect(func(sockstest.Request) sockstest.Response {
		return sockstest.Response{Handle: func(c net.Conn) {
			defer c.Close()
			io.WriteString(c, "220 x ESMTP\r\n")
			br := bufio.NewReader(c)
			br.ReadString('\n')
			fmt.Fprintf(c, "%s\r\n", chunkingEHLO)
			br.ReadString('\n')
			io.CopyN(io.Discard, br, 512<<10)
			<-e.done
		}}
	})
	_, err := e.deliverBody(t, 20*time.Second, bigMessageOf(20<<20))
	if err == nil || err.Exit() != 75 || strings.Contains(err.Msg, "more than once") {
		t.Fatalf("got %v (exit %d), want temporary, not sent", err, errExit(err))
	}
}

// TestAttackChunkingWithoutPipelining: CHUNKING alone is not used.
func TestAttackChunkingWithoutPipelining(t *testing.T) {
	e := newEnv(t)
	seen := make(chan string, 100)
	e.setConnect(batchServer(t, "250-batch.test\r\n250 chunking", func(string) string { return "250 ok" }, seen))
	// batchServer answers only at DATA: a sequential client would wait
	// for MAIL's reply forever, so give it a short command timeout.
	e.client.CommandTimeout = 2 * time.Second
	_, _ = e.deliver(t, 10*time.Second)
	for l := range seen {
		if strings.HasPrefix(strings.ToUpper(l), "BDAT") {
			t.Fatalf("BDAT sent without PIPELINING")
		}
	}
}

// TestAttackLowerCaseKeywords: "pipelining" and "chunking" in lower case
// are the same keywords.
func TestAttackLowerCaseKeywords(t *testing.T) {
	e := newEnv(t)
	seen := make(chan string, 100)
	e.setConnect(batchServer(t, "250-batch.test\r\n250-pipelining\r\n250 chunking", func(string) string { return "250 ok" }, seen))
	res, err := e.deliver(t, 10*time.Second)
	if err != nil {
		t.Fatalf("got %v, want delivered", err)
	}
	_ = res
	bdat := false
	for l := range seen {
		bdat = bdat || strings.HasPrefix(l, "BDAT")
	}
	if !bdat {
		t.Fatalf("no BDAT")
	}
}

// TestAttackRepliesByteByByte: every reply a byte at a time, in each way.
func TestAttackRepliesByteByByte(t *testing.T) {
	for _, ehlo := range []string{"250-x\r\n250-PIPELINING\r\n250 CHUNKING", "250-x\r\n250 PIPELINING", "250 x"} {
		e := newEnv(t)
		server := scripted(t, map[string]string{"EHLO": ehlo, ".": "250 2.0.0 queued as BYTES"})
		e.setConnect(func(r sockstest.Request) sockstest.Response {
			h := server(r).Handle
			return sockstest.Response{Handle: func(c net.Conn) { h(byteWriter{c}) }}
		})
		res, err := e.deliverBody(t, 20*time.Second, bigMessageOf(3<<20))
		if err != nil || !strings.Contains(res.Text, "BYTES") {
			t.Fatalf("%q: got %v %v, want delivered", ehlo, res, err)
		}
	}
}

// byteWriter writes a byte at a time.
type byteWriter struct{ net.Conn }

func (w byteWriter) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := w.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

// bigMessageOf is a message of n octets of short lines.
func bigMessageOf(n int64) io.Reader {
	return io.LimitReader(io.MultiReader(strings.NewReader("Subject: big\r\n\r\n"), lines{}), n)
}

type lines struct{}

func (lines) Read(p []byte) (int, error) {
	const l = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"
	for i := range p {
		p[i] = l[i%len(l)]
	}
	return len(p), nil
}

// TestAttackBareCodesChunked: bare reply codes ("250" CRLF) to RCPT and
// to every chunk, a message of several chunks: delivered.
func TestAttackBareCodesChunked(t *testing.T) {
	e := newEnv(t)
	var lasts atomic.Int32
	e.setConnect(bdatServer(t, chunkingEHLO, "250", func(int, bool) string { return "250" }, &lasts))
	res, err := e.deliverBody(t, 20*time.Second, bigMessageOf(3<<20))
	if err != nil || res.Code != 250 {
		t.Fatalf("got %v %v, want delivered", res, err)
	}
}

// TestAttackRemote435IsNotConfig: EX_CONFIG (78) says onionmx is
// misconfigured (deliverStatus: "a usage or configuration error"); a
// remote's own "451 4.3.5" is the remote's temporary failure, EX_TEMPFAIL.
func TestAttackRemote435IsNotConfig(t *testing.T) {
	e := newEnv(t)
	e.setConnect(scripted(t, map[string]string{"RCPT": "451 4.3.5 server configuration problem"}))
	_, err := e.deliver(t, 10*time.Second)
	if err == nil || err.Status != "4.3.5" || err.Exit() != deliver.ExTempFail {
		t.Fatalf("got %v (exit %d), want the remote's 4.3.5 with exit 75", err, errExit(err))
	}
}

// TestAttackOutOfStep: a server that sends one reply too many puts every
// reply after it one step late. With DATA, the 354 the client waits for
// shows it (4.5.0). With BDAT nothing in the transaction does: the reply
// to RCPT would pass for the reply to BDAT LAST, and the server's 554 to
// the message would go unread. A reply before the first command is seen
// before anything is sent; a late one by the reply to the pipelined QUIT,
// with enhanced status codes or without. Never a delivery.
func TestAttackOutOfStep(t *testing.T) {
	const pipelining = "250-x\r\n250 PIPELINING"
	for _, tc := range []struct {
		name             string
		ehlo, mail, rcpt string // replies; ehlo may have one too many
		want             string // in the output
	}{
		{"after EHLO, BDAT", chunkingEHLO + "\r\n250 2.0.0 and welcome again", "250 ok", "250 ok", "nobody asked for"},
		{"after EHLO, DATA", pipelining + "\r\n250 2.0.0 and welcome again", "250 ok", "250 ok", "4.5.0"},
		{"twice to MAIL, BDAT", chunkingEHLO, "250 2.1.0 Ok\r\n250 2.1.0 Ok, really", "250 2.1.5 ok", "out of step"},
		{"twice to MAIL, BDAT, no enhanced codes", chunkingEHLO, "250 Ok\r\n250 Ok, really", "250 Ok", "out of step"},
		{"twice to MAIL, DATA", pipelining, "250 Ok\r\n250 Ok, really", "250 Ok", "4.5.0"},
	} {
		// A server that refuses every message, at DATA's end or BDAT LAST.
		e := newEnv(t)
		e.setConnect(scripted(t, map[string]string{"EHLO": tc.ehlo, "MAIL": tc.mail, "RCPT": tc.rcpt, ".": "554 message refused"}))
		res, err := e.deliver(t, 10*time.Second)
		if err == nil {
			t.Fatalf("%s: delivered (%s) though the server refused the message", tc.name, res.Reply())
		}
		if !err.Temporary() || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want a temporary failure with %q", tc.name, err, tc.want)
		}
	}
}
