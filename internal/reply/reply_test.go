package reply

import (
	"bufio"
	"errors"
	"io"
	"net/textproto"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadReply(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		code  int
		lines []string
		err   string // wanted in the error; "" for none
	}{
		{name: "one line", in: "250 ok\r\n", code: 250, lines: []string{"ok"}},
		{name: "bare LF", in: "250 ok\n", code: 250, lines: []string{"ok"}},
		{name: "bare code", in: "250\r\n", code: 250, lines: []string{""}},
		{name: "bare code, bare LF", in: "354\n", code: 354, lines: []string{""}},
		{name: "code and space", in: "250 \r\n", code: 250, lines: []string{""}},
		{name: "multi-line", in: "250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n", code: 250, lines: []string{"mx.test", "PIPELINING", "8BITMIME"}},
		{name: "multi-line with bare continuation", in: "250-\r\n250 ok\r\n", code: 250, lines: []string{"", "ok"}},
		{name: "codes differ", in: "250-a\r\n251 b\r\n", err: "different codes, 250 and 251"},
		{name: "not a reply", in: "hello\r\n", err: `not an SMTP reply: "hello"`},
		{name: "letters in the code", in: "25x ok\r\n", err: "not an SMTP reply"},
		{name: "no separator", in: "250ok\r\n", err: "not an SMTP reply"},
		{name: "1xx", in: "150 ok\r\n", err: "not an SMTP reply"},
		{name: "line too long", in: "250 " + strings.Repeat("x", MaxLine) + "\r\n", err: "reply line longer than 2000 bytes"},
		{name: "longest line", in: "250 " + strings.Repeat("x", MaxLine-6) + "\r\n", code: 250, lines: []string{strings.Repeat("x", MaxLine-6)}},
		{name: "reply too long", in: strings.Repeat("250-"+strings.Repeat("x", 1000)+"\r\n", 70) + "250 end\r\n", err: "reply longer than 65536 bytes"},
		{name: "eof mid-line", in: "250 o", err: io.ErrUnexpectedEOF.Error()},
		{name: "eof mid-reply", in: "250-o\r\n", err: io.EOF.Error()},
		{name: "empty", in: "", err: io.EOF.Error()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// One byte at a time: every split of a line must work.
			r := NewReader(iotest.OneByteReader(strings.NewReader(tc.in)))
			rep, err := r.ReadReply()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %+v, %v; want error %q", rep, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rep.Code != tc.code || strings.Join(rep.Lines, "|") != strings.Join(tc.lines, "|") {
				t.Fatalf("got %d %q, want %d %q", rep.Code, rep.Lines, tc.code, tc.lines)
			}
		})
	}
}

// TestLimitsAreErrors: a reply over a limit is an *Error, and the Reader
// stays failed.
func TestLimitsAreErrors(t *testing.T) {
	r := NewReader(strings.NewReader(strings.Repeat("x", 10*MaxLine) + "\r\n250 ok\r\n"))
	for range 2 {
		_, err := r.ReadReply()
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("got %v, want an *Error", err)
		}
	}
}

// TestReadForTextproto: what go-smtp's client reads through Read. A bare
// code passes net/textproto, lines are handed on one at a time, and what
// follows a reply stays in the Reader.
func TestReadForTextproto(t *testing.T) {
	in := "220 mx.test\r\n250\r\n250-mx.test\r\n250-SIZE 1000\r\n250 PIPELINING\r\n354 go ahead\r\n"
	r := NewReader(strings.NewReader(in))
	tp := textproto.NewReader(bufio.NewReader(r))
	for _, want := range []struct {
		code int
		msg  string
	}{{220, "mx.test"}, {250, ""}, {250, "mx.test\nSIZE 1000\nPIPELINING"}} {
		code, msg, err := tp.ReadResponse(0)
		if err != nil || code != want.code || msg != want.msg {
			t.Fatalf("got %d %q %v, want %d %q", code, msg, err, want.code, want.msg)
		}
	}
	// The bufio.Reader above holds nothing: the next reply is ours.
	rep, err := r.ReadReply()
	if err != nil || rep.Code != 354 {
		t.Fatalf("after textproto: %+v %v, want the 354", rep, err)
	}
}

// TestReadKeepsLimits: go-smtp's path has the same limits, and the same
// idea of what a reply is.
func TestReadKeepsLimits(t *testing.T) {
	for _, in := range []string{
		"220 " + strings.Repeat("x", 1<<20) + "\r\n",
		strings.Repeat("250-EXTENSION\r\n", 1<<20) + "250 end\r\n",
		// Other codes on the continuation lines: net/textproto would keep
		// reading, and keep it all.
		strings.Repeat("250-a\r\n251-b\r\n", 1<<18) + "250 end\r\n",
		strings.Repeat("garbage\r\n", 1<<18),
	} {
		tp := textproto.NewReader(bufio.NewReader(NewReader(strings.NewReader(in))))
		_, _, err := tp.ReadResponse(0)
		var e *Error
		if !errors.As(err, &e) {
			t.Errorf("got %v, want an *Error", err)
		}
	}
}

func TestBuffered(t *testing.T) {
	r := NewReader(strings.NewReader("220 STARTTLS\r\nsmuggled\r\n"))
	if _, err := r.ReadReply(); err != nil {
		t.Fatal(err)
	}
	if n := r.Buffered(); n != len("smuggled\r\n") {
		t.Fatalf("Buffered() = %d, want the smuggled line", n)
	}
}

// FuzzReader: whatever a server sends, reading never panics, never
// returns a line over the limit, and both ways of reading agree.
func FuzzReader(f *testing.F) {
	for _, s := range []string{"250 ok\r\n", "250\r\n", "250-a\r\n250 b\r\n", "hello\r\n", "250-a\n251 b\n", "2"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := NewReader(strings.NewReader(string(in)))
		for range 100 {
			rep, err := r.ReadReply()
			if err != nil {
				break
			}
			size := 0
			for _, l := range rep.Lines {
				if len(l) > MaxLine {
					t.Fatalf("line of %d bytes", len(l))
				}
				size += len(l)
			}
			if size > MaxReply {
				t.Fatalf("reply of %d bytes", size)
			}
		}
		tp := textproto.NewReader(bufio.NewReader(NewReader(strings.NewReader(string(in)))))
		for range 100 {
			if _, _, err := tp.ReadResponse(0); err != nil {
				break
			}
		}
	})
}
