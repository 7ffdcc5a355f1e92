package deliver

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// refBody is writeBody written the simple way, a whole line at a time, as
// Postfix's smtp_text_out folds: the reference the streaming code must
// match.
func refBody(in []byte) []byte {
	var out bytes.Buffer
	lines := bytes.SplitAfter(in, []byte("\n"))
	for _, l := range lines {
		if len(l) == 0 {
			continue
		}
		if bytes.HasSuffix(l, []byte("\n")) {
			l = bytes.TrimSuffix(l, []byte("\n"))
			l = bytes.TrimSuffix(l, []byte("\r"))
		}
		if len(l) > 0 && l[0] == '.' {
			out.WriteByte('.')
		}
		space := MaxLineLen
		for {
			if len(l) <= space {
				out.Write(l)
				out.WriteString("\r\n")
				break
			}
			out.Write(l[:space])
			out.WriteString("\r\n ")
			l = l[space:]
			space = MaxLineLen - 1
		}
	}
	out.WriteString(".\r\n")
	return out.Bytes()
}

func body(t testing.TB, r io.Reader) ([]byte, error) {
	var out bytes.Buffer
	err := writeBody(&out, r, func() bool { return true })
	return out.Bytes(), err
}

func TestWriteBody(t *testing.T) {
	x := func(n int) string { return strings.Repeat("x", n) }
	for _, tc := range []struct {
		name, in, want string
	}{
		{"empty", "", ".\r\n"},
		{"LF", "a\nb\n", "a\r\nb\r\n.\r\n"},
		{"CRLF", "a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
		{"no final line end", "a\nb", "a\r\nb\r\n.\r\n"},
		{"CR at the very end is kept", "abc\r", "abc\r\r\n.\r\n"},
		{"CR inside a line is kept", "a\rb\n", "a\rb\r\n.\r\n"},
		{"CR CR LF", "a\r\r\n", "a\r\r\n.\r\n"},
		{"dots", ".\n..\n.x\nx.\n", "..\r\n...\r\n..x\r\nx.\r\n.\r\n"},
		{"empty lines", "\n\n", "\r\n\r\n.\r\n"},
		{"998", x(998) + "\n", x(998) + "\r\n.\r\n"},
		{"999", x(999) + "\n", x(998) + "\r\n x\r\n.\r\n"},
		{"1995", x(1995) + "\n", x(998) + "\r\n " + x(997) + "\r\n.\r\n"},
		{"1996", x(1996) + "\n", x(998) + "\r\n " + x(997) + "\r\n x\r\n.\r\n"},
		{"dot and 998", "." + x(997) + "\n", ".." + x(997) + "\r\n.\r\n"},
		{"dot and 999", "." + x(998) + "\n", ".." + x(997) + "\r\n x\r\n.\r\n"},
		{"998 and CRLF", x(998) + "\r\n", x(998) + "\r\n.\r\n"},
		{"998 and CR at the end", x(998) + "\r", x(998) + "\r\n \r\r\n.\r\n"},
		{"NUL and 8-bit", "a\x00b\xff\n", "a\x00b\xff\r\n.\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ref := string(refBody([]byte(tc.in))); ref != tc.want {
				t.Fatalf("the reference gives %q, the table %q", ref, tc.want)
			}
			// Whole, and one byte at a time: every split must give the same.
			for _, r := range []io.Reader{strings.NewReader(tc.in), iotest.OneByteReader(strings.NewReader(tc.in))} {
				got, err := body(t, r)
				if err != nil || string(got) != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
			}
		})
	}
}

// TestWriteBodyNoDot: without io.EOF, or without the commit, no final dot
// is written.
func TestWriteBodyNoDot(t *testing.T) {
	boom := errors.New("boom")
	var out bytes.Buffer
	err := writeBody(&out, io.MultiReader(strings.NewReader("a\n"), iotest.ErrReader(boom)), func() bool { return true })
	var rerr *bodyReadError
	if !errors.As(err, &rerr) || !errors.Is(err, boom) || bytes.Contains(out.Bytes(), []byte(".\r\n")) {
		t.Fatalf("read error: got %v and %q", err, out.Bytes())
	}
	out.Reset()
	err = writeBody(&out, strings.NewReader("a\n"), func() bool { return false })
	if !errors.Is(err, errNotCommitted) || out.Len() != 0 {
		t.Fatalf("not committed: got %v and %q", err, out.Bytes())
	}
}

// TestWriteBodyLarge: a message larger than the buffers, with lines of
// every length around the limits, split at odd places.
func TestWriteBodyLarge(t *testing.T) {
	var in bytes.Buffer
	for i := 0; in.Len() < 3*bodyBufSize; i++ {
		if i%7 == 0 {
			in.WriteByte('.')
		}
		in.WriteString(strings.Repeat("y", i%2100))
		if i%3 == 0 {
			in.WriteByte('\r')
		}
		in.WriteByte('\n')
	}
	got, err := body(t, iotest.HalfReader(bytes.NewReader(in.Bytes())))
	if err != nil || !bytes.Equal(got, refBody(in.Bytes())) {
		t.Fatalf("differs from the reference (%v)", err)
	}
}

// chunkReader reads at most n bytes at a time.
type chunkReader struct {
	r io.Reader
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// message is a body of size bytes: headers, then text lines of 76
// characters, some starting with a dot.
func message(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: a@sender.test\nSubject: benchmark\n\n")
	for i := 0; b.Len() < size; i++ {
		if i%10 == 0 {
			b.WriteByte('.')
		}
		b.WriteString(strings.Repeat("abcdefghij", 7))
		b.WriteString("abcde\n")
	}
	return b.Bytes()[:size]
}

// readers gives in whole, one byte at a time, in halves of each request,
// and with the last read returning io.EOF along with its data: every
// split of the input must give the same output.
func readers(in []byte) map[string]func() io.Reader {
	return map[string]func() io.Reader{
		"whole":   func() io.Reader { return bytes.NewReader(in) },
		"one":     func() io.Reader { return iotest.OneByteReader(bytes.NewReader(in)) },
		"half":    func() io.Reader { return iotest.HalfReader(bytes.NewReader(in)) },
		"dataerr": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(in)) },
	}
}

// boundaryInputs are inputs whose special octets fall where the buffers
// end: the reads (bodyBufSize) and the writes (dataWriteSize), with
// lines of 997 to 1000 octets, CRs and dots on either side of the edge.
func boundaryInputs() map[string][]byte {
	x := func(n int) []byte { return bytes.Repeat([]byte("x"), n) }
	at := func(edge int, tail string) []byte {
		// Lines of 76 octets up to just before edge, then tail
		// straddling it.
		var b []byte
		for len(b)+77 < edge-len(tail)/2 {
			b = append(b, x(76)...)
			b = append(b, '\n')
		}
		b = append(b, x(edge-len(tail)/2-len(b))...)
		return append(b, tail...)
	}
	in := map[string][]byte{}
	for _, edge := range []int{bodyBufSize, 2 * bodyBufSize, dataWriteSize} {
		for name, tail := range map[string]string{
			"CR|LF":         "\r\n.\r\n",
			"CR|x":          "\rx\r\r\n",
			"dot":           "\n.\n..\n...\r\n",
			"CRLF.CRLF":     "a\r\n.\r\nb",
			"CR at the end": "\r",
			"lone dot":      "\n.",
			"998":           "\n" + string(x(998)) + "\n",
			"999CR":         "\n" + string(x(998)) + "\r\r\n",
		} {
			in[fmt.Sprint(edge, " ", name)] = at(edge, tail)
			in[fmt.Sprint(edge, "+1 ", name)] = at(edge+1, tail)
		}
	}
	for _, n := range []int{997, 998, 999, 1000, 1995, 1996, 1997} {
		in[fmt.Sprint("line ", n)] = append(x(n), '\n')
		in[fmt.Sprint("line ", n, " CRLF")] = append(x(n), '\r', '\n')
		in[fmt.Sprint("line ", n, " no end")] = x(n)
		in[fmt.Sprint("line ", n, " CR")] = append(x(n), '\r')
		in[fmt.Sprint("dot line ", n)] = append(append([]byte("."), x(n-1)...), '\n')
	}
	return in
}

// TestWriteBodyBoundaries: the reference's output, whatever the reads.
func TestWriteBodyBoundaries(t *testing.T) {
	for name, in := range boundaryInputs() {
		want := refBody(in)
		for rname, r := range readers(in) {
			got, err := body(t, r())
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s, read %s: differs from the reference (%v)", name, rname, err)
			}
		}
	}
}

// unstuff is what writeChunks must send for the DATA content that
// writeBody sent: without the final dot, each stuffed dot removed.
func unstuff(t testing.TB, data []byte) []byte {
	body, ok := bytes.CutSuffix(data, []byte(".\r\n"))
	if !ok {
		t.Fatalf("no final dot in %q", data)
	}
	var out []byte
	for _, l := range bytes.SplitAfter(body, []byte("\r\n")) {
		if len(l) > 0 && l[0] == '.' {
			l = l[1:]
		}
		out = append(out, l...)
	}
	return out
}

// decodeChunks parses what writeChunks wrote after prefix: "BDAT n\r\n"
// and n octets, again and again, with " LAST" on the last one only. It
// checks that every chunk but the last has maxChunk octets, and returns
// the octets, the number of chunks and whether the last was LAST.
func decodeChunks(t testing.TB, wire, prefix []byte) (data []byte, chunks int, last bool) {
	t.Helper()
	rest, ok := bytes.CutPrefix(wire, prefix)
	if !ok {
		t.Fatalf("the output does not start with the prefix: %.60q", wire)
	}
	for len(rest) > 0 {
		if last {
			t.Fatalf("octets after BDAT LAST: %.60q", rest)
		}
		i := bytes.Index(rest, []byte("\r\n"))
		if i < 0 {
			t.Fatalf("a chunk command without its end: %.60q", rest)
		}
		cmd := string(rest[:i])
		rest = rest[i+2:]
		var n int
		if _, err := fmt.Sscanf(cmd, "BDAT %d LAST", &n); err == nil && cmd == fmt.Sprintf("BDAT %d LAST", n) {
			last = true
		} else if _, err := fmt.Sscanf(cmd, "BDAT %d", &n); err != nil || cmd != fmt.Sprintf("BDAT %d", n) {
			t.Fatalf("not a chunk command: %q", cmd)
		} else if n != maxChunk {
			t.Fatalf("a chunk of %d octets before the last", n)
		}
		if n > len(rest) {
			t.Fatalf("%q with %d octets after it", cmd, len(rest))
		}
		if n > maxChunk {
			t.Fatalf("%q: larger than maxChunk", cmd)
		}
		data = append(data, rest[:n]...)
		rest = rest[n:]
		chunks++
	}
	return data, chunks, last
}

// writes records the writes it gets.
type writes struct{ w [][]byte }

func (w *writes) Write(p []byte) (int, error) {
	w.w = append(w.w, bytes.Clone(p))
	return len(p), nil
}

func (w *writes) all() []byte { return bytes.Join(w.w, nil) }

var testPrefix = []byte("MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n")

// chunksOf runs writeChunks on r and checks what it wrote: the framing,
// the count it returned; it returns the data.
func chunksOf(t testing.TB, r io.Reader) []byte {
	t.Helper()
	var w writes
	n, err := writeChunks(&w, r, func() bool { return true }, testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	data, chunks, last := decodeChunks(t, w.all(), testPrefix)
	if !last || chunks != n || len(w.w) != n {
		t.Fatalf("%d chunks in %d writes, LAST %v; writeChunks said %d", chunks, len(w.w), last, n)
	}
	return data
}

// TestWriteChunks: the data of the chunks is writeBody's without the
// dot-stuffing and the final dot, whatever the reads.
func TestWriteChunks(t *testing.T) {
	for name, in := range boundaryInputs() {
		want := unstuff(t, refBody(in))
		for rname, r := range readers(in) {
			if got := chunksOf(t, r()); !bytes.Equal(got, want) {
				t.Errorf("%s, read %s: differs from the reference", name, rname)
			}
		}
	}
	for _, in := range []string{"", "a", ".\n", "a\r", ".\r\n.\r\n", "\r\n.\r\n"} {
		if got, want := chunksOf(t, strings.NewReader(in)), unstuff(t, refBody([]byte(in))); !bytes.Equal(got, want) {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// TestWriteChunksSizes: a message of up to maxChunk normalised octets
// leaves in one write with the prefix, as "BDAT n LAST"; one octet more
// makes a full chunk and "BDAT 1 LAST", also when the octet is the line
// end that the end of the input adds.
func TestWriteChunksSizes(t *testing.T) {
	// lines returns an input of n octets once normalised: LF lines
	// of 99 octets, then a last line of fewer than 102 that ends with
	// end.
	lines := func(n int, end string) []byte {
		endOut := map[string]int{"": 2, "\n": 2, "\r\n": 2, "\r": 3}[end]
		var b []byte
		for out := 0; ; out += 101 {
			if n-out-endOut <= 101 {
				b = append(b, bytes.Repeat([]byte("z"), n-out-endOut)...)
				return append(b, end...)
			}
			b = append(b, bytes.Repeat([]byte("y"), 99)...)
			b = append(b, '\n')
		}
	}
	for _, tc := range []struct {
		name   string
		in     []byte
		writes []string // the commands, in order, one write each
	}{
		{"empty", nil, []string{"BDAT 0 LAST"}},
		{"maxChunk", lines(maxChunk, "\r\n"), []string{"BDAT 1048576 LAST"}},
		{"maxChunk with LF", lines(maxChunk, "\n"), []string{"BDAT 1048576 LAST"}},
		{"maxChunk without the line end", lines(maxChunk, ""), []string{"BDAT 1048576 LAST"}},
		{"maxChunk+1", lines(maxChunk+1, "\r\n"), []string{"BDAT 1048576", "BDAT 1 LAST"}},
		{"maxChunk+1 from the line end", lines(maxChunk+1, ""), []string{"BDAT 1048576", "BDAT 1 LAST"}},
		{"maxChunk+2 from a CR at the end", lines(maxChunk+2, "\r"), []string{"BDAT 1048576", "BDAT 2 LAST"}},
		{"2 maxChunk", lines(2*maxChunk, "\n"), []string{"BDAT 1048576", "BDAT 1048576 LAST"}},
		{"2 maxChunk+5", lines(2*maxChunk+5, "\n"), []string{"BDAT 1048576", "BDAT 1048576", "BDAT 5 LAST"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for rname, r := range readers(tc.in) {
				if rname == "one" && len(tc.in) > maxChunk/2 {
					continue // slow, and the "half" reads split it enough
				}
				var w writes
				n, err := writeChunks(&w, r(), func() bool { return true }, testPrefix)
				if err != nil || n != len(tc.writes) || len(w.w) != len(tc.writes) {
					t.Fatalf("read %s: %d chunks in %d writes (%v), want %d", rname, n, len(w.w), err, len(tc.writes))
				}
				for i, cmd := range tc.writes {
					p := w.w[i]
					if i == 0 {
						p = bytes.TrimPrefix(p, testPrefix)
					}
					if !bytes.HasPrefix(p, []byte(cmd+"\r\n")) {
						t.Fatalf("read %s: write %d starts with %.40q, want %q", rname, i, p, cmd)
					}
				}
				if i := bytes.Index(w.all(), []byte("BDAT")); i != len(testPrefix) {
					t.Fatalf("the first chunk is at %d, not right after the prefix", i)
				}
				data, _, _ := decodeChunks(t, w.all(), testPrefix)
				if want := unstuff(t, refBody(tc.in)); !bytes.Equal(data, want) {
					t.Fatalf("read %s: the data differs from the reference", rname)
				}
			}
		})
	}
}

// TestWriteChunksNoLast: without io.EOF, or without the commit, no LAST
// is written, and the count says what was.
func TestWriteChunksNoLast(t *testing.T) {
	boom := errors.New("boom")
	for _, size := range []int{10, maxChunk + maxChunk/2} {
		in := message(size)
		// The whole message, then an error instead of io.EOF.
		var w writes
		n, err := writeChunks(&w, io.MultiReader(bytes.NewReader(in), iotest.ErrReader(boom)), func() bool { return true }, testPrefix)
		var rerr *bodyReadError
		if !errors.As(err, &rerr) || !errors.Is(err, boom) {
			t.Fatalf("%d octets, read error: got %v", size, err)
		}
		if want := size / maxChunk; n != want || len(w.w) != want {
			t.Fatalf("%d octets, read error: %d chunks in %d writes, want %d", size, n, len(w.w), want)
		}
		if _, chunks, last := decodeChunks(t, w.all(), w.prefixIf(n > 0)); last || chunks != n {
			t.Fatalf("%d octets, read error: LAST written, or %d chunks for %d", size, chunks, n)
		}
		// All of it, and no commit.
		w = writes{}
		n, err = writeChunks(&w, bytes.NewReader(in), func() bool { return false }, testPrefix)
		if !errors.Is(err, errNotCommitted) {
			t.Fatalf("%d octets, not committed: got %v", size, err)
		}
		if want := size / maxChunk; n != want || len(w.w) != want {
			t.Fatalf("%d octets, not committed: %d chunks in %d writes, want %d", size, n, len(w.w), want)
		}
		if _, chunks, last := decodeChunks(t, w.all(), w.prefixIf(n > 0)); last || chunks != n {
			t.Fatalf("%d octets, not committed: LAST written, or %d chunks for %d", size, chunks, n)
		}
	}
}

// prefixIf is testPrefix if anything was written: the prefix goes with
// the first chunk or not at all.
func (w *writes) prefixIf(wrote bool) []byte {
	if wrote {
		return testPrefix
	}
	return nil
}

// TestWriteBodyErrors: an error of w is returned as it is, and stops the
// copy.
func TestWriteBodyErrors(t *testing.T) {
	boom := errors.New("boom")
	in := message(3 * dataWriteSize)
	w := &failWriter{after: 1, err: boom}
	if err := writeBody(w, bytes.NewReader(in), func() bool { return true }); err != boom || w.writes != 2 {
		t.Fatalf("writeBody: got %v after %d writes", err, w.writes)
	}
	w = &failWriter{after: 1, err: boom}
	n, err := writeChunks(w, bytes.NewReader(message(3*maxChunk)), func() bool { return true }, testPrefix)
	if err != boom || n != 1 || w.writes != 2 {
		t.Fatalf("writeChunks: got %d chunks, %v after %d writes", n, err, w.writes)
	}
}

// failWriter fails every write after the first after.
type failWriter struct {
	after, writes int
	err           error
}

func (f *failWriter) Write(p []byte) (int, error) {
	f.writes++
	if f.writes > f.after {
		return 0, f.err
	}
	return len(p), nil
}

// genReader produces n octets of message without allocating: the memory
// figures are the writers'.
type genReader struct {
	block []byte
	n     int
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.n == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), g.n)], g.block[g.n%len(g.block):])
	g.n -= k
	return k, nil
}

// TestBodyConstantMemory: what writeBody and writeChunks allocate does
// not grow with the message: the same allocations, and the same bytes
// within a few KiB, for 1 MiB and for 64 MiB.
func TestBodyConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("copies 130 MiB")
	}
	block := message(1 << 20)
	for _, w := range []struct {
		name string
		send func(r io.Reader) error
	}{
		{"writeBody", func(r io.Reader) error { return writeBody(io.Discard, r, func() bool { return true }) }},
		{"writeChunks", func(r io.Reader) error {
			_, err := writeChunks(io.Discard, r, func() bool { return true }, testPrefix)
			return err
		}},
	} {
		var allocs [2]float64
		var bytesPer [2]uint64
		for i, size := range []int{1 << 20, 64 << 20} {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			allocs[i] = testing.AllocsPerRun(1, func() {
				if err := w.send(&genReader{block: block, n: size}); err != nil {
					t.Fatal(err)
				}
			})
			runtime.ReadMemStats(&after)
			// AllocsPerRun runs it twice: once to warm up.
			bytesPer[i] = (after.TotalAlloc - before.TotalAlloc) / 2
		}
		t.Logf("%s: %v allocations, %d and %d bytes for 1 and 64 MiB", w.name, allocs[0], bytesPer[0], bytesPer[1])
		// The counts are the whole process's: a goroutine left over from
		// another test may add one. The bytes say whether memory grows.
		if allocs[1] > allocs[0]+2 || bytesPer[1] > bytesPer[0]+8<<10 || bytesPer[1] > 2<<20 {
			t.Errorf("%s: %v and %v allocations, %d and %d bytes for 1 and 64 MiB", w.name, allocs[0], allocs[1], bytesPer[0], bytesPer[1])
		}
	}
}

// BenchmarkBody measures, in memory, what the body costs before it
// reaches the socket: 16 MiB of 76-octet LF lines, some starting with a
// dot, read 64 KiB at a time and written to a counter, by writeBody and
// writeChunks, by net/textproto's DotWriter (go-smtp's client, behind a
// 64 KiB bufio.Writer), and by a plain copy.
func BenchmarkBody(b *testing.B) {
	msg := message(16 << 20)
	for _, bc := range []struct {
		name string
		send func(w io.Writer, r io.Reader) error
	}{
		{"copy", func(w io.Writer, r io.Reader) error {
			_, err := io.CopyBuffer(w, struct{ io.Reader }{r}, make([]byte, bodyBufSize))
			return err
		}},
		{"textproto", func(w io.Writer, r io.Reader) error {
			dw := textproto.NewWriter(bufio.NewWriterSize(w, 64<<10)).DotWriter()
			if _, err := io.CopyBuffer(dw, struct{ io.Reader }{r}, make([]byte, bodyBufSize)); err != nil {
				return err
			}
			return dw.Close()
		}},
		{"writeBody", func(w io.Writer, r io.Reader) error { return writeBody(w, r, func() bool { return true }) }},
		{"writeChunks", func(w io.Writer, r io.Reader) error {
			_, err := writeChunks(w, r, func() bool { return true }, testPrefix)
			return err
		}},
	} {
		b.Run("impl="+bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.send(struct{ io.Writer }{io.Discard}, bytes.NewReader(msg)); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(msg))*float64(b.N)/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
		})
	}
}
