package postfixsetup

import (
	"strings"
	"testing"
)

func TestQueuedForOnions(t *testing.T) {
	const onion = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion"
	for _, tc := range []struct {
		name, out string
		n         int
	}{
		{"empty queue", "", 0},
		{"clear-net mail only", `{"queue_name": "deferred", "queue_id": "A1", "recipients": [{"address": "bob@example.org", "delay_reason": "connect to mx.example.org[192.0.2.1]:25: Connection refused"}]}`, 0},
		{"a .onion recipient", `{"queue_name": "active", "queue_id": "A2", "recipients": [{"address": "bob@` + strings.ToUpper(onion) + `"}]}`, 1},
		{"deferred by onionmx", `{"queue_name": "deferred", "queue_id": "A3", "recipients": [{"address": "bob@example.org", "delay_reason": "connect to ` + onion + `:25 via Tor: general SOCKS server failure (SOCKS reply 01)"}, {"address": "carol@example.net", "delay_reason": ""}]}`, 1},
		{"held", `{"queue_name": "hold", "queue_id": "A4", "recipients": [{"address": "bob@` + onion + `"}]}`, 0},
		{"two messages", `{"queue_name": "incoming", "queue_id": "A5", "recipients": [{"address": "a@` + onion + `."}]}` + "\n" + `{"queue_name": "deferred", "queue_id": "A6", "recipients": [{"address": "b@` + onion + `"}]}`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, example, err := queuedForOnions(tc.out)
			if err != nil || n != tc.n {
				t.Fatalf("got %d (%q), %v; want %d", n, example, err, tc.n)
			}
			if n > 0 && !strings.Contains(example, "queue id A") {
				t.Fatalf("example %q names no queue id", example)
			}
		})
	}
	if _, _, err := queuedForOnions("not json"); err == nil {
		t.Fatal("no error for output that is not postqueue -j's")
	}
}
