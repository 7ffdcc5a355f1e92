package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// message is one soak message: what was handed to sendmail, exactly.
type message struct {
	index  int
	sender string // "<>" for the null sender
	rcpts  []string
	data   []byte
}

// Sizes: most mail is small, some is large. Messages 0 and 1 are the
// smallest and the largest, so that every run has both ends.
const (
	minSize = 1 << 10
	maxSize = 10 << 20
)

func messageSize(i int, r *rand.Rand) int {
	switch i {
	case 0:
		return minSize
	case 1:
		return maxSize
	}
	logUniform := func(lo, hi float64) int {
		return int(math.Exp(math.Log(lo) + r.Float64()*(math.Log(hi)-math.Log(lo))))
	}
	switch p := r.Float64(); {
	case p < 0.80:
		return logUniform(minSize, 16<<10)
	case p < 0.95:
		return logUniform(16<<10, 1<<20)
	default:
		return logUniform(1<<20, maxSize)
	}
}

// Lines that SMTP transparency and line handling can get wrong, mixed
// into the body now and then. No bare CR: the sending Postfix's queue
// file has it, onionmx sends it as it is (deliver's body tests), and the
// receiving Postfix's mailbox has a space instead.
var trickyLines = []string{".", "..", ".leading dot", "From the start of a line", "trailing spaces   ", "", "\ttab"}

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// makeMessage builds message i of run from pool, the recipients to pick
// from. The same run, seed and index give the same message.
func makeMessage(run string, seed uint64, i int, pool []string) *message {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	m := &message{index: i, sender: "alice@send.onionmx.test"}
	if i%10 == 3 {
		m.sender = "<>"
	}
	n := 1 + r.IntN(3)
	for _, k := range r.Perm(len(pool))[:min(n, len(pool))] {
		m.rcpts = append(m.rcpts, pool[k])
	}
	size := messageSize(i, r)
	var b bytes.Buffer
	b.Grow(size + 1024)
	fmt.Fprintf(&b, "From: <alice@send.onionmx.test>\n")
	fmt.Fprintf(&b, "To: <%s>\n", strings.Join(m.rcpts, ">, <"))
	fmt.Fprintf(&b, "Subject: soak %s message %d\n", run, i)
	fmt.Fprintf(&b, "Message-ID: <soak-%s-%d@send.onionmx.test>\n", run, i)
	fmt.Fprintf(&b, "Date: %s\n", time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "X-Soak: %s %d\n", run, i)
	fmt.Fprintf(&b, "MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n")
	for b.Len() < size {
		if r.IntN(40) == 0 {
			b.WriteString(trickyLines[r.IntN(len(trickyLines))])
			b.WriteByte('\n')
			continue
		}
		n := 60 + r.IntN(17)
		for range n {
			b.WriteByte(alphabet[r.IntN(len(alphabet))])
		}
		b.WriteByte('\n')
	}
	m.data = b.Bytes()
	return m
}

// ledgerLine is m's line in the ledger (readLedger's format), submitted
// at t.
func (m *message) ledgerLine(t time.Time) string {
	sum := sha256.Sum256(m.data)
	return fmt.Sprintf("%d %d %s %d %s %s\n", m.index, len(m.data), hex.EncodeToString(sum[:]), t.UnixNano(), m.sender, strings.Join(m.rcpts, ","))
}

// submit hands messages [from, to) to the sending Postfix's sendmail at
// rate messages per second (0: as fast as sendmail takes them), and
// appends a ledger line for each one that sendmail took:
//
//	INDEX SIZE SHA256 SUBMITTED_UNIX_NS SENDER RCPT,RCPT...
func submit(args []string) error {
	fs := flag.NewFlagSet("submit", flag.ContinueOnError)
	ledger := fs.String("ledger", "", "ledger file to append to")
	run := fs.String("run", "", "run id")
	seed := fs.Uint64("seed", 1, "seed")
	from := fs.Int("from", 0, "first index")
	to := fs.Int("to", 0, "last index + 1")
	rate := fs.Float64("rate", 0, "messages per second (0: no limit)")
	conf := fs.String("conf", "", "the sending Postfix's config directory")
	rcpts := fs.String("rcpts", "", "comma-separated recipients to pick from")
	parallel := fs.Int("parallel", 4, "sendmail processes at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *ledger == "" || *run == "" || *conf == "" || *rcpts == "" {
		return errors.New("-ledger, -run, -conf and -rcpts are required")
	}
	pool := strings.Split(*rcpts, ",")
	out, err := os.OpenFile(*ledger, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()

	var (
		mu     sync.Mutex
		failed error
		wg     sync.WaitGroup
	)
	jobs := make(chan int)
	for range *parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				m := makeMessage(*run, *seed, i, pool)
				t := time.Now()
				cmd := exec.Command("sendmail", append([]string{"-i", "-C", *conf, "-f", m.sender, "--"}, m.rcpts...)...)
				cmd.Stdin = bytes.NewReader(m.data)
				msg, err := cmd.CombinedOutput()
				line := m.ledgerLine(t) // its sha256 outside the lock
				mu.Lock()
				if err != nil {
					if failed == nil {
						failed = fmt.Errorf("sendmail for message %d: %v: %s", i, err, msg)
					}
				} else {
					out.WriteString(line)
				}
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	for i := *from; i < *to; i++ {
		if *rate > 0 {
			due := start.Add(time.Duration(float64(i-*from) / *rate * float64(time.Second)))
			time.Sleep(time.Until(due))
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return failed
}
