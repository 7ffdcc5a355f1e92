package printable

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLine(t *testing.T) {
	for in, want := range map[string]string{
		"ok":                      "ok",
		"a\x00b\x1bc\r\n":         "a b c",
		"\xff\xfe":                "?",
		strings.Repeat("é", 50):   strings.Repeat("é", 5) + "...",
		"line one\nline two\r\n":  "line one li...",
		"tab\there":               "tab here",
		"del\x7f nel\u0085":       "del  nel?",
		"ltr\u202eoverride\u2028": "ltr?overr...",
	} {
		if got := Line(in, 11); got != want {
			t.Errorf("Line(%q, 11) = %q, want %q", in, got, want)
		}
	}
}

func FuzzLine(f *testing.F) {
	f.Add("a\r\nb\x00\xff\u202e", 5)
	f.Fuzz(func(t *testing.T, s string, max int) {
		if max < 0 || max > 1<<16 {
			return
		}
		got := Line(s, max)
		if !utf8.ValidString(got) || strings.ContainsAny(got, "\r\n\t\x00\x7f") || len(got) > max+len("...") {
			t.Fatalf("Line(%q, %d) = %q", s, max, got)
		}
	})
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
	}{
		{"abc", 5, "abc"},
		{"abcdef", 3, "abc"},
		{"aé", 2, "a"},
		{"éé", 0, ""},
	} {
		if got := Cut(tc.in, tc.max); got != tc.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
		}
	}
}
