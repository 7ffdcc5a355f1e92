package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/onionmx/onionmx/deliver"
)

func TestEximEnviron(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    *eximEnv
		wantErr string
	}{
		{"both", map[string]string{"ONIONMX_SENDER": "a@b.test", "ONIONMX_NEXTHOP": "[x.onion]:25"}, &eximEnv{"a@b.test", "[x.onion]:25"}, ""},
		{"null sender, recipients' domain", map[string]string{"ONIONMX_SENDER": "", "ONIONMX_NEXTHOP": ""}, &eximEnv{"", ""}, ""},
		{"no ONIONMX_SENDER", map[string]string{"ONIONMX_NEXTHOP": ""}, nil, "--exim: no ONIONMX_SENDER in the environment"},
		{"no ONIONMX_NEXTHOP", map[string]string{"ONIONMX_SENDER": ""}, nil, "--exim: no ONIONMX_NEXTHOP in the environment"},
		{"newline in ONIONMX_SENDER", map[string]string{"ONIONMX_SENDER": "a@b.test\r\nRCPT TO:<x@y.test>", "ONIONMX_NEXTHOP": ""}, nil, `--exim: ONIONMX_SENDER "a@b.test\r\nRCPT TO:<x@y.test>" contains a control character`},
		{"a list", map[string]string{"ONIONMX_SENDER": "", "ONIONMX_NEXTHOP": "[x.onion]:25,[y.onion]:2525"}, &eximEnv{"", "[x.onion]:25,[y.onion]:2525"}, ""},
		{"no port", map[string]string{"ONIONMX_SENDER": "", "ONIONMX_NEXTHOP": "[x.onion]"}, nil, `--exim: ONIONMX_NEXTHOP "[x.onion]" has no port`},
		{"no port in a list", map[string]string{"ONIONMX_SENDER": "", "ONIONMX_NEXTHOP": "[x.onion]:25, [y.onion]"}, nil, `--exim: ONIONMX_NEXTHOP "[x.onion]:25, [y.onion]" has no port`},
		{"NUL in ONIONMX_NEXTHOP", map[string]string{"ONIONMX_SENDER": "", "ONIONMX_NEXTHOP": "[x.onion]\x00"}, nil, "--exim: ONIONMX_NEXTHOP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := eximEnviron(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if tc.wantErr != "" {
				var e *deliver.Error
				if !errors.As(err, &e) || e.Status != "4.3.5" || !strings.HasPrefix(e.Msg, tc.wantErr) {
					t.Fatalf("got %v, %v; want a 4.3.5 error starting %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || *got != *tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestUnderExim(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"onionmx", "deliver", "--exim", "--", "u@x.test"}, true},
		{[]string{"onionmx", "deliver", "-exim", "--", "u@x.test"}, true},
		{[]string{"onionmx", "deliver", "--exim=true"}, true},
		{[]string{"onionmx", "--exim"}, true},
		{[]string{"onionmx", "deliver", "-f", "", "--", "u@x.test"}, false},
		{[]string{"onionmx", "deliver", "--eximious"}, false},
		{[]string{"exim"}, false},
	} {
		if got := underExim(tc.args); got != tc.want {
			t.Errorf("underExim(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// TestEximConfigStatus: under --exim, a configuration error exits 75,
// whatever found it; without, 78.
func TestEximConfigStatus(t *testing.T) {
	for _, args := range [][]string{
		{"onionmx", "deliver", "--exim", "--bogus"},
		{"onionmx", "deliver", "--exim", "--socks", "nonsense", "--", "u@x.test"},
		{"onionmx", "deliver", "--exim", "--timeout", "0s", "--", "u@x.test"},
		{"onionmx", "--exim", "nocommand"},
	} {
		var out strings.Builder
		if status := run(args, strings.NewReader(""), &out, &out); status != deliver.ExTempFail || !strings.HasPrefix(out.String(), "4.3.5 ") {
			t.Errorf("%q: status %d, output %q; want 75 and 4.3.5", args, status, out.String())
		}
		out.Reset()
		plain := append([]string{}, args...)
		for i, a := range plain {
			if a == "--exim" {
				plain = append(plain[:i], plain[i+1:]...)
				break
			}
		}
		if status := run(plain, strings.NewReader(""), &out, &out); status != deliver.ExConfig {
			t.Errorf("%q: status %d, output %q; want 78", plain, status, out.String())
		}
	}
}

func TestEximBatch(t *testing.T) {
	for _, tc := range []struct {
		rcpts []string
		ok    bool
	}{
		{[]string{"u@a.test"}, true},
		{[]string{"u@a.test", "v@A.Test", "w@a.test."}, true},
		{[]string{`"x@b.test"@a.test`, "v@a.test"}, true}, // an "@" in a quoted local part
		{[]string{"u@a.test", "v@b.test"}, false},
		{[]string{"u@a.test", "v@a.test", "w@sub.a.test"}, false},
		{[]string{"u@a.test", `"v@a.test"@b.test`}, false},
	} {
		err := eximBatch(tc.rcpts)
		var e *deliver.Error
		if tc.ok != (err == nil) || err != nil && (!errors.As(err, &e) || e.Exit() != deliver.ExConfig) {
			t.Errorf("eximBatch(%q) = %v, want ok %v (else a configuration error)", tc.rcpts, err, tc.ok)
		}
	}
}
