package deliver

import (
	"bytes"
	"errors"
	"io"
	"net"
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

func FuzzWriteBody(f *testing.F) {
	for _, s := range []string{"", "a\n", "a\r", ".\n", "abc\r\n.\r\n", strings.Repeat("z", 2000)} {
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
		// What goes out is valid SMTP: CRLF lines of at most 1000
		// octets (1001 with a stuffing dot), no bare LF.
		for _, l := range bytes.SplitAfter(got, []byte("\r\n")) {
			if len(l) > 1001 || bytes.IndexByte(bytes.TrimSuffix(l, []byte("\r\n")), '\n') >= 0 {
				t.Fatalf("bad line %q", l)
			}
		}
	})
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

// BenchmarkBody compares writeBody with a plain copy, both from memory
// to a loopback TCP connection whose reader discards: 8 MiB of
// 76-character lines each time. The body must not be what limits a
// delivery.
func BenchmarkBody(b *testing.B) {
	msg := message(8 << 20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	for _, bc := range []struct {
		name string
		send func(w io.Writer, r io.Reader) error
	}{
		{"copy", func(w io.Writer, r io.Reader) error {
			_, err := io.CopyBuffer(struct{ io.Writer }{w}, r, make([]byte, bodyBufSize))
			return err
		}},
		{"writeBody", func(w io.Writer, r io.Reader) error { return writeBody(w, r, func() bool { return true }) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if err := bc.send(c, bytes.NewReader(msg)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
