package postfixsetup

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
)

// QueueError is a removal refused because mail in the queue waits for
// delivery over Tor. The transport is chosen again at each attempt: once
// onionmx's tables are gone, Postfix would hand that mail to its default
// transport, over the clear net, and look .onion names up in DNS.
type QueueError struct {
	Count   int
	Example string // one such recipient and why it waits
}

func (e *QueueError) Error() string {
	return fmt.Sprintf("%d recipient(s) in the queue wait for delivery over Tor (%s): without onionmx's tables, Postfix would send them by its default transport, over the clear net, and look .onion names up in DNS; let them be delivered first, or hold them (postsuper -h) or delete them, then run --remove again", e.Count, e.Example)
}

// queuedForOnions reads postqueue -j's output: the recipients outside the
// hold queue that are .onion addresses, or whose last delay reason names
// an onion (what onionmx says when it defers), and one of them as an
// example.
func queuedForOnions(out string) (n int, example string, err error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var m struct {
			Queue      string `json:"queue_name"`
			ID         string `json:"queue_id"`
			Recipients []struct {
				Address string `json:"address"`
				Reason  string `json:"delay_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return 0, "", fmt.Errorf("postqueue -j: %v", err)
		}
		if m.Queue == "hold" {
			continue
		}
		for _, r := range m.Recipients {
			domain := strings.ToLower(strings.TrimSuffix(r.Address[strings.LastIndexByte(r.Address, '@')+1:], "."))
			if !strings.HasSuffix(domain, ".onion") && !strings.Contains(strings.ToLower(r.Reason), ".onion") {
				continue
			}
			if n++; example == "" {
				example = fmt.Sprintf("%s, queue id %s", r.Address, m.ID)
				if r.Reason != "" {
					example += ": " + r.Reason
				}
			}
		}
	}
	return n, example, sc.Err()
}

// checkQueue refuses a removal while mail waits for an onion. postqueue
// needs a running Postfix; a stopped one's queue is counted in its
// directories, and mail there is a note (it cannot be told apart), not a
// refusal.
func checkQueue(ctx context.Context, p *Postfix, res *Result) error {
	if !p.Running(ctx) {
		dir, err := p.Effective(ctx, "queue_directory")
		if err != nil {
			return err
		}
		if n := countQueued(dir); n > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("Postfix is not running, so the %d message(s) in its queue could not be checked: any that waits for an onion would go by the default transport, over the clear net, once Postfix starts without onionmx; start it with onionmx still set up until they are delivered, then run --remove (it checks a running Postfix's queue)", n))
		}
		return nil
	}
	out, err := p.run(ctx, "", p.command("postqueue", "-j"))
	if err != nil {
		return err
	}
	n, example, err := queuedForOnions(out)
	if err != nil {
		return err
	}
	if n > 0 {
		return &QueueError{Count: n, Example: example}
	}
	return nil
}

// countQueued counts the queue files of a stopped Postfix (not the held
// ones: they stay until released).
func countQueued(queueDir string) int {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred"} {
		filepath.WalkDir(filepath.Join(queueDir, q), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
	}
	return n
}
