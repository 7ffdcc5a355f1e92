package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

// rtEnv is a delivery path with a one-way delay of D: a SOCKS5 proxy that
// answers the handshake at once (it is the local Tor), holds the CONNECT
// reply for 2·D (the rendezvous is a round trip), dials the SMTP server
// half-way so that its greeting travels back with the CONNECT reply (as an
// onion service connects to its target on BEGIN), and holds every chunk D in
// each direction; behind it a go-smtp server, which offers PIPELINING and
// CHUNKING.
type rtEnv struct {
	d     time.Duration
	onion string
	socks *sockstest.Server
	sink  *smtptest.Sink
	dns   *dnstest.Server
	body  []byte
	rcpts []string // of the last delivery
}

func newRTEnv(tb testing.TB, d time.Duration) *rtEnv {
	e := &rtEnv{d: d, onion: oniontest.New(), sink: smtptest.New(tb), dns: dnstest.New(tb), body: smallMessage()}
	e.socks = sockstest.New(tb, func(sockstest.Request) sockstest.Response { return sockstest.Response{Dial: e.sink.Addr} })
	e.socks.Delay = d
	e.socks.EarlyDial = true
	return e
}

// client is one way of sending the message.
type client struct {
	name string
	// minRT is the round trips the exchange needs this way: the CONNECT
	// (rendezvous), then one per wait after sending.
	minRT int
	send  func(e *rtEnv, tr *trace) error
}

var clients = []client{
	// With PIPELINING and CHUNKING offered and one recipient: MAIL, RCPT
	// and BDAT LAST with the body in one batch.
	{"onionmx", 3, onionmx(false, recipient)},
	// --no-chunking: MAIL, RCPT and DATA in one batch, then the body.
	{"no-chunking", 4, onionmx(true, recipient)},
	// Two recipients: all or nothing rules BDAT out, PIPELINING stays.
	{"2-recipients", 4, onionmx(false, recipient, recipient2)},
}

// onionmx delivers the message with deliver.Client, in-process.
func onionmx(noChunking bool, rcpts ...string) func(e *rtEnv, tr *trace) error {
	return func(e *rtEnv, tr *trace) error {
		c := &deliver.Client{
			Dialer:     traceDialer{d: &tor.SOCKSDialer{Network: "tcp", Addr: e.socks.Addr}, tr: tr},
			Resolver:   &lookup.Resolver{DNS: e.dns.Resolver()},
			Helo:       helo,
			NoChunking: noChunking,
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e.rcpts = rcpts
		res, err := c.Deliver(ctx, "["+e.onion+"]:25", &deliver.Message{
			Sender: sender, Recipients: rcpts, Size: int64(len(e.body)), Body: bytes.NewReader(e.body),
		})
		tr.finish()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(res.Reply(), "250 ") {
			return fmt.Errorf("reply %q", res.Reply())
		}
		return nil
	}
}

// check verifies that the sink got n copies of the message and that the
// route made no DNS query.
func (e *rtEnv) check(n int) error {
	if q := e.dns.Queries(); len(q) != 0 {
		return fmt.Errorf("DNS queries on a literal route: %v", q)
	}
	if r := e.socks.Requests(); len(r) != n {
		return fmt.Errorf("%d SOCKS CONNECTs for %d deliveries", len(r), n)
	}
	// The sink may not have stored the last message yet when the client
	// has its reply.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		msgs := e.sink.Messages()
		if len(msgs) == n || time.Now().After(deadline) {
			want := bytes.ReplaceAll(e.body, []byte("\n"), []byte("\r\n"))
			for _, m := range msgs {
				if !bytes.Equal(m.Data, want) || m.From != sender || !slices.Equal(m.To, e.rcpts) {
					return fmt.Errorf("the sink got a different message: from %q to %q, %d bytes", m.From, m.To, len(m.Data))
				}
			}
			if len(msgs) != n {
				return fmt.Errorf("the sink has %d messages, want %d", len(msgs), n)
			}
			return nil
		}
	}
}

// BenchmarkRoundTrips delivers a 2 KiB message to one recipient through a
// path with a one-way delay D and reports the wall time in round trips
// (RT/op = time / 2·D), and the waits after sending counted on the wire
// (turns/op; the CONNECT is one more round trip): with RFC 3030 CHUNKING
// and RFC 2920 PIPELINING, with PIPELINING alone, and with two recipients.
func BenchmarkRoundTrips(b *testing.B) {
	for _, ds := range list(*flagDelays) {
		d, err := time.ParseDuration(ds)
		if err != nil || d <= 0 {
			b.Fatalf("-delays: bad delay %q", ds)
		}
		b.Run("D="+ds, func(b *testing.B) {
			for _, c := range clients {
				b.Run("client="+c.name, func(b *testing.B) {
					e := newRTEnv(b, d)
					var tr *trace
					turns := 0
					for b.Loop() {
						tr = newTrace()
						if err := c.send(e, tr); err != nil {
							b.Fatal(err)
						}
						turns += tr.turns()
					}
					b.StopTimer()
					if err := e.check(b.N); err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(2*d), "RT/op")
					b.ReportMetric(float64(turns)/float64(b.N), "turns/op")
					report(b, fmt.Sprintf("steps-D=%s-%s.md", ds, c.name), stepTable(tr, d, c.name), stepLine(tr))
					if c.name == clients[0].name {
						waits, err := socksExchanges(e.socks.Addr, e.onion+":25")
						if err != nil {
							b.Fatal(err)
						}
						var each []string
						for _, w := range waits {
							each = append(each, fmt.Sprintf("%.2f ms", ms(w)))
						}
						report(b, fmt.Sprintf("socks-D=%s.md", ds), fmt.Sprintf(
							"The SOCKS5 handshake of golang.org/x/net/proxy with user/pass, traced on its own: %d request/reply "+
								"exchanges with the proxy (greeting and method choice, RFC 1929 user/pass, CONNECT), which waited %s "+
								"for their replies; only the CONNECT reply carries the rendezvous (2·D = %v).\n",
							len(waits), strings.Join(each, ", "), 2*d), "")
					}
				})
			}
		})
	}
}

// stepTable is the per-step accounting of one delivery, in Markdown.
func stepTable(tr *trace, d time.Duration, name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| step (%s, D = %v) | client sends | then waits for | waited (ms) | step took (ms) | in RT (2·D) |\n", name, d)
	b.WriteString("|---|---|---|---:|---:|---:|\n")
	var total time.Duration
	for i, s := range tr.steps() {
		total += s.d
		fmt.Fprintf(&b, "| %d | %s | %s | %.1f | %.1f | %.2f |\n", i, s.sent, s.got, ms(s.waitFor), ms(s.d), float64(s.d)/float64(2*d))
	}
	fmt.Fprintf(&b, "| | total | | | %.1f | %.2f |\n", ms(total), float64(total)/float64(2*d))
	return b.String()
}

// stepLine is the step accounting on one line, for the benchmark log,
// which keeps only 10 lines.
func stepLine(tr *trace) string {
	var parts []string
	for _, s := range tr.steps() {
		parts = append(parts, fmt.Sprintf("%s → %s: %.1f ms", s.sent, s.got, ms(s.d)))
	}
	return strings.Join(parts, "; ")
}

// report writes a supplementary table to the -out directory, or short
// (when given, else text) to the benchmark log.
func report(b *testing.B, name, text, short string) {
	if *flagOut == "" {
		if short == "" {
			short = text
		}
		b.Log(short)
		return
	}
	if err := os.WriteFile(filepath.Join(*flagOut, name), []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
}

// TestRoundTrips is the smoke test of BenchmarkRoundTrips, run with
// `go test`: every client delivers through a short delay, no DNS query is
// made, one CONNECT per delivery, and onionmx waits no more often than
// the exchange needs: EHLO, then one batch with CHUNKING, or two (DATA,
// then end of data) with PIPELINING alone. Timing is not checked.
func TestRoundTrips(t *testing.T) {
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			e := newRTEnv(t, 2*time.Millisecond)
			tr := newTrace()
			if err := c.send(e, tr); err != nil {
				t.Fatal(err)
			}
			if err := e.check(1); err != nil {
				t.Fatal(err)
			}
			if got, want := tr.turns(), c.minRT-1; got > want {
				t.Errorf("%d waits after sending, want at most %d\n%s", got, want, stepTable(tr, e.d, c.name))
			}
		})
	}
}
