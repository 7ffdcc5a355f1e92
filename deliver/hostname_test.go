package deliver

import (
	"strings"
	"testing"
)

func TestHostsName(t *testing.T) {
	hosts := `# a comment
127.0.0.1 localhost
127.0.1.1 mx1.example.org mx1 # Debian's line for this host
10.0.0.2 other.example.org other
`
	for h, want := range map[string]string{"mx1": "mx1.example.org", "MX1": "mx1.example.org", "other": "other.example.org", "vm": "", "localhost": ""} {
		if got := hostsName(strings.NewReader(hosts), h); got != want {
			t.Errorf("hostsName(%q) = %q, want %q", h, got, want)
		}
	}
}

// TestHostname: whatever this machine is, the name has a dot (Postfix's
// myhostname always has one), and a guess says so.
func TestHostname(t *testing.T) {
	name, qualified := Hostname()
	if !strings.Contains(name, ".") {
		t.Fatalf("Hostname() = %q: no dot", name)
	}
	if !qualified && !strings.HasSuffix(name, "."+DefaultDomain) {
		t.Fatalf("Hostname() = %q, a guess, without .%s", name, DefaultDomain)
	}
}
