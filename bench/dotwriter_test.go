package bench

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"testing"
)

// BenchmarkDotWriter measures, in memory, what the body costs the sender
// before it reaches the socket: the dot-stuffing and CRLF conversion of
// go-smtp's client (net/textproto's DotWriter, one byte at a time into a
// 4 KiB bufio.Writer, as go-smtp sets it up) against a writer that does
// the same a line at a time into 64 KiB. The output is counted and
// discarded. deliver's own writers (writeBody, writeChunks) are measured
// against the same DotWriter by deliver's BenchmarkBody, which can call
// them.
func BenchmarkDotWriter(b *testing.B) {
	body, _ := io.ReadAll(&message{n: 16 << 20})
	for _, impl := range []struct {
		name string
		new  func(w io.Writer) io.WriteCloser
	}{
		{"textproto", func(w io.Writer) io.WriteCloser {
			bw := bufio.NewWriter(w)
			return textproto.NewWriter(bw).DotWriter()
		}},
		{"linewise", func(w io.Writer) io.WriteCloser { return newLineDotWriter(w) }},
	} {
		b.Run("impl="+impl.name, func(b *testing.B) {
			var c counter
			for b.Loop() {
				w := impl.new(&c)
				for p := body; len(p) > 0; {
					n := min(len(p), 32<<10) // io.Copy's buffer
					w.Write(p[:n])
					p = p[n:]
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(body))*float64(b.N)/(1<<20)/b.Elapsed().Seconds(), "MiB/s")
		})
	}
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// lineDotWriter is textproto's DotWriter a line at a time: a "." at the
// start of a line is doubled, LF and CRLF become CRLF, and Close adds the
// final CRLF if needed and ".\r\n".
type lineDotWriter struct {
	bw      *bufio.Writer
	atStart bool // the next byte starts a line
	cr      bool // the last byte written was a CR
	wrote   bool // anything at all
}

func newLineDotWriter(w io.Writer) *lineDotWriter {
	return &lineDotWriter{bw: bufio.NewWriterSize(w, 64<<10), atStart: true}
}

func (d *lineDotWriter) Write(p []byte) (int, error) {
	n := len(p)
	d.wrote = d.wrote || n > 0
	for len(p) > 0 {
		if d.atStart && p[0] == '.' {
			d.bw.WriteByte('.')
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			d.bw.Write(p)
			d.atStart, d.cr = false, p[len(p)-1] == '\r'
			break
		}
		line := p[:i]
		crSent := d.cr && i == 0 // the CR ended the previous piece
		if i > 0 && line[i-1] == '\r' {
			line = line[:i-1]
		}
		d.bw.Write(line)
		if crSent {
			d.bw.WriteByte('\n')
		} else {
			d.bw.WriteString("\r\n")
		}
		d.atStart, d.cr = true, false
		p = p[i+1:]
	}
	return n, nil
}

func (d *lineDotWriter) Close() error {
	if !d.atStart || !d.wrote {
		d.bw.WriteString("\r\n")
	}
	d.bw.WriteString(".\r\n")
	return d.bw.Flush()
}

// TestLineDotWriter checks the line-wise writer against textproto's on
// bodies written in awkward pieces, so that the figures compare like with
// like.
func TestLineDotWriter(t *testing.T) {
	bodies := []string{"", "a", ".", "a\n", ".\n..\n", "a\r\nb\nc", "\r\n.\r\n", "x\ry\n", "..a\n.b\r\n\n.", string(smallMessage())}
	for _, body := range bodies {
		for _, piece := range []int{1, 2, 3, 7, 1 << 20} {
			var want, got bytes.Buffer
			tw := textproto.NewWriter(bufio.NewWriter(&want)).DotWriter()
			lw := newLineDotWriter(&got)
			for p := []byte(body); len(p) > 0; {
				n := min(len(p), piece)
				tw.Write(p[:n])
				lw.Write(p[:n])
				p = p[n:]
			}
			tw.Close()
			lw.Close()
			if !bytes.Equal(want.Bytes(), got.Bytes()) {
				t.Errorf("body %q in pieces of %d: got %q, textproto %q", body, piece, got.Bytes(), want.Bytes())
			}
		}
	}
}
