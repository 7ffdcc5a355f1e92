package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/onionmx/onionmx/internal/proctest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/tor"
)

var (
	flagBin    = flag.String("bin", "", "onionmx binary to measure (default: build it with go build)")
	flagDelays = flag.String("delays", "25ms,50ms", "one-way delays D for BenchmarkRoundTrips, comma-separated")
	flagSizes  = flag.String("sizes", "1MiB,100MiB", "message sizes for BenchmarkThroughput, comma-separated (run.sh adds 1GiB)")
	flagOut    = flag.String("out", "", "directory for the per-step accounting of BenchmarkRoundTrips (default: the benchmark log)")
)

// rawEnv names the environment variable that turns the test binary into
// the raw-copy client of BenchmarkThroughput.
const rawEnv = "ONIONMX_BENCH_RAWCOPY"

func TestMain(m *testing.M) {
	if spec := os.Getenv(rawEnv); spec != "" {
		os.Exit(rawCopyMain(spec))
	}
	flag.Parse()
	code := m.Run()
	proctest.Cleanup()
	os.Exit(code)
}

// onionmxBin returns the binary to measure: -bin, or the one
// internal/proctest builds from this tree, as the README says to build it.
func onionmxBin(tb testing.TB) string {
	tb.Helper()
	if *flagBin != "" {
		return *flagBin
	}
	return proctest.Binary(tb)
}

// Addresses every benchmark uses.
const (
	sender     = "alice@sender.test"
	recipient  = "bob@recv.test"
	recipient2 = "carol@recv.test"
	helo       = "sender.test"
)

// countingSink is an SMTP sink that discards message bodies and counts
// their bytes, as the server received them (CRLF line ends, dots
// unstuffed).
type countingSink struct {
	*smtptest.Sink
	bytes atomic.Int64 // of the last message
	msgs  atomic.Int64
}

func newCountingSink(tb testing.TB) *countingSink {
	s := &countingSink{Sink: smtptest.New(tb, func(srv *smtp.Server) {
		srv.Domain = "recv.test"
		srv.MaxMessageBytes = 1 << 40
	})}
	s.SetHooks(smtptest.Hooks{Body: func(_ *smtp.Conn, r io.Reader) error {
		n, err := io.Copy(io.Discard, r)
		s.bytes.Store(n)
		if err == nil {
			s.msgs.Add(1)
		}
		return err
	}})
	return s
}

// leanSink is an SMTP server that speaks just enough SMTP for one message
// per transaction (greeting; EHLO offering PIPELINING, 8BITMIME and SIZE;
// MAIL, RCPT, DATA, RSET, NOOP, QUIT) and counts the bytes of the data as
// they came, up to the end of data, looking only at the dots (readData):
// unlike go-smtp's server, which reads the data byte by byte, the
// receiver costs about as little as the raw discard server, so that the
// throughput compared is the sender's.
type leanSink struct {
	Addr  string
	bytes atomic.Int64 // of the last message, without the final "."
	msgs  atomic.Int64
}

func newLeanSink(tb testing.TB) *leanSink {
	s := &leanSink{}
	s.Addr = serveLoopback(tb, s.serve)
	return s
}

// serveLoopback listens on 127.0.0.1 until the test ends, serving each
// connection with serve in a goroutine of its own, and returns the address.
func serveLoopback(tb testing.TB, serve func(net.Conn)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c)
		}
	}()
	return ln.Addr().String()
}

func (s *leanSink) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	reply := func(r string) bool {
		_, err := io.WriteString(c, r)
		return err == nil
	}
	if !reply("220 lean.test ESMTP\r\n") {
		return
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.TrimSpace(line))
		if len(verb) > 4 {
			verb = verb[:4]
		}
		var r string
		switch verb {
		case "EHLO":
			r = "250-lean.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE\r\n"
		case "HELO", "MAIL", "RCPT", "RSET", "NOOP":
			r = "250 ok\r\n"
		case "DATA":
			if !reply("354 go ahead\r\n") {
				return
			}
			n, err := readData(br)
			if err != nil {
				return
			}
			s.bytes.Store(n)
			s.msgs.Add(1)
			r = "250 ok\r\n"
		case "QUIT":
			reply("221 bye\r\n")
			return
		default:
			r = "500 unknown command\r\n"
		}
		if !reply(r) {
			return
		}
	}
}

// readData reads the data of a DATA command up to its end, "." alone on a
// line, and returns the number of bytes before it. It looks only at the
// dots, which the benchmarks' messages do not have (a stuffed dot costs a
// check): a receiver that looked at every line would take the CPU the
// sender needs on a machine with few cores, and the raw copy's discard
// server does not.
func readData(br *bufio.Reader) (int64, error) {
	var n int64
	before := [2]byte{'\r', '\n'} // the last two octets taken: the data starts a line
	take := func(p []byte) {
		n += int64(len(p))
		switch len(p) {
		case 0:
		case 1:
			before = [2]byte{before[1], p[0]}
		default:
			before = [2]byte{p[len(p)-2], p[len(p)-1]}
		}
		br.Discard(len(p))
	}
	for {
		if _, err := br.Peek(1); err != nil {
			return n, err
		}
		p, _ := br.Peek(br.Buffered())
		i := bytes.IndexByte(p, '.')
		switch {
		case i < 0:
			take(p)
		case i+3 > len(p):
			// The octets after the dot are still to come.
			take(p[:i])
			if _, err := br.Peek(3); err != nil {
				return n, err
			}
		default:
			take(p[:i])
			if before == [2]byte{'\r', '\n'} && p[i+1] == '\r' && p[i+2] == '\n' {
				br.Discard(3)
				return n, nil
			}
			take(p[i : i+1])
		}
	}
}

// TestReadData: the lean sink finds the end of data wherever the reads
// split it, and only there.
func TestReadData(t *testing.T) {
	for _, tc := range []struct {
		data string
		n    int64
	}{
		{".\r\n", 0},
		{"a\r\n.\r\n", 3},
		{"a.\r\n.\r\n", 4},
		{"..\r\n.\r\n", 4},
		{"\r\n..\r\nx.\r\n\r\n.\r\n", 12},
		{".a\r\n.\r\n", 4},
		{"a\r\n.\ra\r\n.\r\n", 8},
	} {
		for _, r := range []io.Reader{strings.NewReader(tc.data + "QUIT\r\n"), iotest.OneByteReader(strings.NewReader(tc.data + "QUIT\r\n"))} {
			br := bufio.NewReader(r)
			n, err := readData(br)
			rest, _ := io.ReadAll(br)
			if err != nil || n != tc.n || string(rest) != "QUIT\r\n" {
				t.Errorf("%q: got %d, %v, then %q; want %d, then QUIT", tc.data, n, err, rest, tc.n)
			}
		}
	}
}

// discardServer is the far end of the raw copy: it reads an 8-byte length,
// then that many bytes, and answers one byte when it has them all.
type discardServer struct {
	Addr  string
	bytes atomic.Int64 // of the last copy
}

func newDiscardServer(tb testing.TB) *discardServer {
	s := &discardServer{}
	s.Addr = serveLoopback(tb, s.serve)
	return s
}

func (s *discardServer) serve(c net.Conn) {
	defer c.Close()
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	want := int64(binary.BigEndian.Uint64(hdr[:]))
	buf := make([]byte, 64<<10)
	var n int64
	for n < want {
		m, err := c.Read(buf[:min(int64(len(buf)), want-n)])
		n += int64(m)
		if err != nil {
			break
		}
	}
	s.bytes.Store(n)
	if n == want {
		c.Write([]byte{'K'})
	}
}

// rawCopyMain is the raw-copy client, run as a process like onionmx: it
// connects through the SOCKS proxy as onionmx does, sends an 8-byte length
// and then stdin as it is, and waits for the far end to have it all.
// spec is "SOCKSADDR HOST:PORT SIZE".
func rawCopyMain(spec string) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "rawcopy:", err)
		return 1
	}
	f := strings.Fields(spec)
	if len(f) != 3 {
		return fail(fmt.Errorf("bad spec %q", spec))
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return fail(err)
	}
	d := &tor.SOCKSDialer{Network: "tcp", Addr: f[0]}
	conn, err := d.DialContext(context.Background(), "tcp", f[1])
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	var hdr [8]byte
	binary.BigEndian.PutUint64(hdr[:], uint64(size))
	if _, err := conn.Write(hdr[:]); err != nil {
		return fail(err)
	}
	n, err := io.Copy(conn, os.Stdin)
	if err != nil {
		return fail(err)
	}
	if n != size {
		return fail(fmt.Errorf("copied %d bytes, want %d", n, size))
	}
	if _, err := io.ReadFull(conn, hdr[:1]); err != nil {
		return fail(fmt.Errorf("no acknowledgement: %v", err))
	}
	return 0
}

// message is a mail of n bytes as pipe(8) hands it over: a few header
// lines, then 76-character lines of base64 text (an attachment), LF line
// ends, the last byte a LF. It is generated from a precomputed block, so
// that producing it costs next to nothing beside what is measured.
type message struct {
	n, off int64
	lfs    int64 // LFs produced so far
}

const msgHead = "From: Alice <alice@sender.test>\nTo: Bob <bob@recv.test>\nSubject: benchmark\n" +
	"MIME-Version: 1.0\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n"

// msgBlock is 851 lines of 77 bytes: 65527 bytes of whole lines.
var msgBlock = func() []byte {
	const b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var b bytes.Buffer
	for i := 0; i < 851; i++ {
		for j := 0; j < 76; j++ {
			b.WriteByte(b64[(i*7+j*13)%64])
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}()

func (m *message) Read(p []byte) (int, error) {
	if m.off >= m.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), m.n-m.off)]
	for k := 0; k < len(p); {
		var c int
		if m.off < int64(len(msgHead)) {
			c = copy(p[k:], msgHead[m.off:])
		} else {
			c = copy(p[k:], msgBlock[(m.off-int64(len(msgHead)))%int64(len(msgBlock)):])
		}
		k += c
		m.off += int64(c)
	}
	if m.off == m.n {
		p[len(p)-1] = '\n'
	}
	m.lfs += int64(bytes.Count(p, []byte{'\n'}))
	return len(p), nil
}

// smallMessage is the message of the round-trip and process benchmarks.
func smallMessage() []byte {
	b, _ := io.ReadAll(&message{n: 2 << 10})
	return b
}

// parseSize parses "64KiB", "1MiB", "1GiB" or a number of bytes.
func parseSize(s string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			return n * u.mult, err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func list(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 1).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s))*p+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
