package deliver

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"strings"
	"testing"
	"testing/iotest"
)

// seeds are the fuzz targets' seed corpus: the edges of the line length,
// CRs and dots in every position, the end of data inside the message.
func seeds() []string {
	x := strings.Repeat
	return []string{
		"", "a", "a\n", "a\r", "\r", "\n", "\r\n", "\r\r\n", "\n\r", ".", ".\n", ".\r\n", "..\n",
		"\r\n.\r\n", "a\r\n.\r\nb", "a\n.\nb\n", ".\r.\n", "\r.\n", "a\rb\n", "a\r\r\nb",
		x("x", 997) + "\n", x("x", 998) + "\n", x("x", 999) + "\n", x("x", 1000) + "\n",
		x("x", 998) + "\r\n", x("x", 998) + "\r", x("x", 997) + "\r\r\n", "." + x("x", 998) + "\n",
		x("x", 1996), x("x", 998) + "\n." + x("x", 998),
	}
}

// FuzzWriteBody checks writeBody against refBody, the line-at-a-time
// reference, on any input read in pieces of any size, and that what goes
// out is valid SMTP.
func FuzzWriteBody(f *testing.F) {
	for _, s := range seeds() {
		f.Add([]byte(s), uint16(0))
		f.Add([]byte(s), uint16(1))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint16) {
		r := io.Reader(bytes.NewReader(in))
		if chunk > 0 {
			r = &chunkReader{r: r, n: int(chunk)}
		}
		got, err := body(t, r)
		if err != nil {
			t.Fatal(err)
		}
		if want := refBody(in); !bytes.Equal(got, want) {
			t.Fatalf("got %q, want %q", got, want)
		}
		// CRLF lines of at most 1000 octets (1001 with a stuffing dot),
		// no bare LF, and the end of data only at the end.
		for _, l := range bytes.SplitAfter(got, []byte("\r\n")) {
			if len(l) > 1001 || bytes.IndexByte(bytes.TrimSuffix(l, []byte("\r\n")), '\n') >= 0 {
				t.Fatalf("bad line %q", l)
			}
		}
		if i := bytes.Index(append([]byte("\r\n"), got...), []byte("\r\n.\r\n")); i != len(got)-3 {
			t.Fatalf("the end of data at %d in %q", i, got)
		}
	})
}

// FuzzWriteBodyDotWriter checks writeBody against net/textproto's
// DotWriter, an implementation of the same RFC 5321 rules written
// independently, where the two are meant to agree: on a message whose
// lines have at most MaxLineLen octets and no bare CR, and that is not
// empty. Both turn LF into CRLF, keep CRLF, dot-stuff, end a last line
// without a line end and add the final dot. They differ, on purpose,
// exactly where the input is out of that domain:
//
//   - a CR not followed by LF: DotWriter keeps it, as we do, but it takes
//     the CR of "CR CR LF" for data and the second CR for a line end,
//     and then sends CR CR CR LF; at the end of the input it takes a CR
//     for a line end and sends CR LF. smtp(8) sends the lines of the
//     queue file, split at LF only, with any CR in them, so a CR is line
//     text unless LF follows it: we send "CR" + CRLF for CR CR LF and for
//     a final CR, as it does;
//   - an empty message: DotWriter sends an empty line before the dot
//     (CRLF . CRLF), we send the dot alone, as smtp(8) does for a queue
//     file without lines (the session refuses an empty message anyway);
//   - a line longer than MaxLineLen: DotWriter sends it as it is, which
//     receivers that enforce RFC 5321's limit reject; we fold it as
//     smtp(8) does.
//
// The input is brought into the domain (bare CRs become "x", long lines
// are cut with LF) and both must give the same octets; the out-of-domain
// cases are TestWriteBody's and TestDotWriterDiffers'.
func FuzzWriteBodyDotWriter(f *testing.F) {
	for _, s := range seeds() {
		f.Add([]byte(s), uint16(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint16) {
		in = agreeable(in)
		if len(in) == 0 {
			return
		}
		r := io.Reader(bytes.NewReader(in))
		if chunk > 0 {
			r = &chunkReader{r: r, n: int(chunk)}
		}
		got, err := body(t, r)
		if err != nil {
			t.Fatal(err)
		}
		if want := dotWriter(in, int(chunk)); !bytes.Equal(got, want) {
			t.Fatalf("got %q, DotWriter %q", got, want)
		}
	})
}

// agreeable brings in into the domain where writeBody and DotWriter
// agree: no bare CR, lines of at most MaxLineLen octets.
func agreeable(in []byte) []byte {
	var out []byte
	n := 0 // octets in the line
	for i, c := range in {
		switch {
		case c == '\r' && (i+1 == len(in) || in[i+1] != '\n'):
			c = 'x'
		case c == '\n':
			out = append(out, c)
			n = 0
			continue
		case c == '\r':
			out = append(out, c)
			continue
		}
		if n == MaxLineLen {
			out = append(out, '\n')
			n = 0
		}
		out = append(out, c)
		n++
	}
	return out
}

// dotWriter is what net/textproto's DotWriter makes of in, written in
// pieces of chunk octets (all at once if 0).
func dotWriter(in []byte, chunk int) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	dw := textproto.NewWriter(bw).DotWriter()
	if chunk <= 0 {
		chunk = len(in)
	}
	for p := in; len(p) > 0; {
		n := min(len(p), chunk)
		dw.Write(p[:n])
		p = p[n:]
	}
	dw.Close()
	bw.Flush()
	return out.Bytes()
}

// TestDotWriterDiffers pins down where writeBody and DotWriter differ
// (see FuzzWriteBodyDotWriter), so that a change on either side shows.
func TestDotWriterDiffers(t *testing.T) {
	long := strings.Repeat("x", MaxLineLen+1)
	for _, tc := range []struct{ in, ours, theirs string }{
		{"a\r\r\nb\n", "a\r\r\nb\r\n.\r\n", "a\r\r\r\nb\r\n.\r\n"},
		{"abc\r", "abc\r\r\n.\r\n", "abc\r\n.\r\n"},
		{"", ".\r\n", "\r\n.\r\n"},
		{long + "\n", long[:MaxLineLen] + "\r\n x\r\n.\r\n", long + "\r\n.\r\n"},
	} {
		ours, err := body(t, strings.NewReader(tc.in))
		if err != nil || string(ours) != tc.ours {
			t.Errorf("%q: writeBody gives %q (%v), want %q", tc.in, ours, err, tc.ours)
		}
		if theirs := dotWriter([]byte(tc.in), 0); string(theirs) != tc.theirs {
			t.Errorf("%q: DotWriter gives %q, not %q as documented", tc.in, theirs, tc.theirs)
		}
	}
}

// FuzzWriteChunks checks writeChunks against writeBody (which
// FuzzWriteBody checks against the reference): the data of the
// chunks is writeBody's output without the dot-stuffing and the final
// dot; the framing is checked by decodeChunks. big, when not 0, repeats
// the input to about big times 64 KiB, so that messages of several
// chunks are tried too. With fail set, the reader fails at the end or
// the commit is refused, and nothing with LAST may go out.
func FuzzWriteChunks(f *testing.F) {
	for _, s := range seeds() {
		f.Add([]byte(s), uint16(0), uint8(0), uint8(0))
		f.Add([]byte(s), uint16(7), uint8(17), uint8(0))
		f.Add([]byte(s), uint16(1), uint8(0), uint8(1))
		f.Add([]byte(s), uint16(0), uint8(33), uint8(2))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint16, big uint8, fail uint8) {
		if big > 0 && len(in) > 0 {
			in = bytes.Repeat(in, (int(big%40)<<16)/len(in)+1)
		}
		r := io.Reader(bytes.NewReader(in))
		switch {
		case chunk == 1:
			r = iotest.OneByteReader(r)
		case chunk == 2:
			r = iotest.HalfReader(r)
		case chunk > 0:
			r = &chunkReader{r: r, n: int(chunk)}
		}
		commit := func() bool { return true }
		switch fail % 3 {
		case 1:
			r = io.MultiReader(r, iotest.ErrReader(io.ErrUnexpectedEOF))
		case 2:
			commit = func() bool { return false }
		}
		var w writes
		n, err := writeChunks(&w, r, commit, testPrefix)
		var prefix []byte
		if len(w.w) > 0 {
			prefix = testPrefix
		}
		data, chunks, last := decodeChunks(t, w.all(), prefix)
		if chunks != n || len(w.w) != n {
			t.Fatalf("%d chunks in %d writes; writeChunks said %d", chunks, len(w.w), n)
		}
		if fail%3 != 0 {
			if err == nil || last {
				t.Fatalf("failed reader or no commit: error %v, LAST %v", err, last)
			}
			return
		}
		if err != nil || !last {
			t.Fatalf("error %v, LAST %v", err, last)
		}
		dot, err := body(t, bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		if want := unstuff(t, dot); !bytes.Equal(data, want) {
			t.Fatalf("the chunks' data differs from writeBody's:\n%.200q\n%.200q", data, want)
		}
		if len(data) <= maxChunk && n != 1 {
			t.Fatalf("%d octets in %d chunks", len(data), n)
		}
	})
}
