package deliver

import "testing"

func TestIsFromLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"From a@b.test Mon Nov 30 05:30:00 2026\n", true}, // Exim's message_prefix
		{"From MAILER-DAEMON Mon Nov 30 05:30:00 2026\n", true},
		{"From: a@b.test\n", false},
		{"From : a@b.test\n", false}, // RFC 5322 obsolete syntax
		{"From \t: a@b.test\n", false},
		{"from a@b.test\n", false}, // mbox's line is "From " exactly
		{">From a@b.test\n", false},
		{"From ", false}, // too short to tell: not refused
		{"", false},
	} {
		if got := isFromLine([]byte(tc.in)); got != tc.want {
			t.Errorf("isFromLine(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
