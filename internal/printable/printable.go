// Package printable makes text from outside — a remote server's reply, a
// DNS answer, a static map's entry, a request from Postfix — fit one line
// of output or of a log, the one way every package does it.
package printable

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Line returns s as one line of printable text of at most max bytes, and
// "..." where it was cut (on a character boundary). Line ends at the end
// are dropped; control characters inside become spaces, so that a
// multi-line reply reads as one line. Bytes that are not UTF-8 and other
// characters that are not printable (C1 controls, line and paragraph
// separators, bidirectional overrides and other format characters) become
// '?': visible, and unable to split or reorder the line they are shown
// in.
func Line(s string, max int) string {
	s = strings.TrimRight(s, "\r\n")
	if len(s) > max {
		s = Cut(s, max) + "..."
	}
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		switch {
		case r < ' ' || r == 0x7f:
			return ' '
		case !unicode.IsPrint(r):
			return '?'
		}
		return r
	}, s)
}

// Cut returns s cut to at most max bytes without splitting a UTF-8
// sequence.
func Cut(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max]
}
