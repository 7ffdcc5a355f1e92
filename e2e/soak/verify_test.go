package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// soakFixture is a run of two messages: a ledger, the sending Postfix's
// log, and the receiver's Maildirs as deliver writes them.
type soakFixture struct {
	dir, run string
	msgs     []*message
	log      strings.Builder
	n        int
	stops    string // the stops file's lines
}

func newFixture(t *testing.T) *soakFixture {
	f := &soakFixture{dir: t.TempDir(), run: "T1"}
	pool := []string{"u1@a.test", "u2@b.test"}
	ledger := ""
	for i := range 2 {
		m := makeMessage(f.run, 7, i+2, pool)
		f.msgs = append(f.msgs, m)
		ledger += m.ledgerLine(time.Now())
		fmt.Fprintf(&f.log, "Nov 30 05:00:00 send postfix/cleanup[1]: Q%d: message-id=<soak-%s-%d@send.onionmx.test>\n", i, f.run, m.index)
	}
	os.WriteFile(filepath.Join(f.dir, "ledger"), []byte(ledger), 0o644)
	return f
}

// deliver writes a copy of message m for rcpt into the Maildir, and
// returns its file.
func (f *soakFixture) deliver(t *testing.T, m *message, rcpt string, data []byte) string {
	return f.deliverAfter(t, rcpt, "", data)
}

// deliverAfter writes a copy for rcpt whose trace headers are followed by
// between, then data.
func (f *soakFixture) deliverAfter(t *testing.T, rcpt, between string, data []byte) string {
	f.n++
	dir := filepath.Join(f.dir, "mail", strings.Split(rcpt, "@")[0], "new")
	os.MkdirAll(dir, 0o755)
	head := fmt.Sprintf("Return-Path: <a@b>\nDelivered-To: %s\nReceived: from x\n\tby y with ESMTP id R%d\n%s", rcpt, f.n, between)
	file := filepath.Join(dir, fmt.Sprint(f.n))
	if err := os.WriteFile(file, append([]byte(head), data...), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func (f *soakFixture) all(t *testing.T) {
	for _, m := range f.msgs {
		for _, r := range m.rcpts {
			f.deliver(t, m, r, m.data)
		}
	}
}

func (f *soakFixture) verify(t *testing.T) (string, error) {
	t.Helper()
	os.WriteFile(filepath.Join(f.dir, "maillog"), []byte(f.log.String()), 0o644)
	os.MkdirAll(filepath.Join(f.dir, "bounces"), 0o755)
	os.WriteFile(filepath.Join(f.dir, "stops"), []byte(f.stops), 0o644)
	// verify prints the report: catch it.
	out, err := os.CreateTemp(f.dir, "out")
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = out
	verr := verify([]string{"-ledger", filepath.Join(f.dir, "ledger"), "-run", f.run, "-mail", filepath.Join(f.dir, "mail"),
		"-sendlog", filepath.Join(f.dir, "maillog"), "-bounces", filepath.Join(f.dir, "bounces"), "-stops", filepath.Join(f.dir, "stops")})
	os.Stdout = stdout
	out.Close()
	b, _ := os.ReadFile(out.Name())
	return string(b), verr
}

func TestVerify(t *testing.T) {
	t.Run("every copy once", func(t *testing.T) {
		f := newFixture(t)
		f.all(t)
		if out, err := f.verify(t); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	t.Run("lost", func(t *testing.T) {
		f := newFixture(t)
		m := f.msgs[0]
		f.deliver(t, m, m.rcpts[0], m.data) // only the first recipient's
		f.deliver(t, f.msgs[1], f.msgs[1].rcpts[0], f.msgs[1].data)
		out, err := f.verify(t)
		if err == nil || !strings.Contains(out, "LOST: message") {
			t.Fatalf("err %v; report:\n%s", err, out)
		}
	})
	t.Run("one byte changed", func(t *testing.T) {
		f := newFixture(t)
		f.all(t)
		m := f.msgs[0]
		bad := []byte(string(m.data))
		bad[len(bad)-2] ^= 1
		f.deliver(t, m, m.rcpts[0], bad)
		out, err := f.verify(t)
		if err == nil || !strings.Contains(out, "CORRUPTED") {
			t.Fatalf("err %v; report:\n%s", err, out)
		}
	})
	t.Run("duplicate nobody explains", func(t *testing.T) {
		f := newFixture(t)
		f.all(t)
		m := f.msgs[1]
		f.deliver(t, m, m.rcpts[0], m.data)
		out, err := f.verify(t)
		if err == nil || !strings.Contains(out, "DUPLICATE: message") {
			t.Fatalf("err %v; report:\n%s", err, out)
		}
	})
	t.Run("duplicate onionmx announced", func(t *testing.T) {
		f := newFixture(t)
		f.all(t)
		m := f.msgs[1]
		f.deliver(t, m, m.rcpts[0], m.data)
		fmt.Fprintf(&f.log, "Nov 30 05:00:01 send postfix/pipe[2]: Q1: to=<%s>, relay=onionmx, delay=1, dsn=4.4.2, status=deferred (lost connection with host x.onion[25] while sending end of data -- message may be sent more than once)\n", m.rcpts[0])
		out, err := f.verify(t)
		if err != nil || !strings.Contains(out, "1 × onionmx said: lost connection") {
			t.Fatalf("err %v; report:\n%s", err, out)
		}
	})
	t.Run("bounced", func(t *testing.T) {
		f := newFixture(t)
		f.all(t)
		fmt.Fprintf(&f.log, "Nov 30 05:00:01 send postfix/pipe[2]: Q0: to=<%s>, relay=onionmx, delay=1, dsn=5.1.1, status=bounced (no)\n", f.msgs[0].rcpts[0])
		out, err := f.verify(t)
		if err == nil || !strings.Contains(out, "BOUNCED") {
			t.Fatalf("err %v; report:\n%s", err, out)
		}
	})
}

// TestVerifyCatches: corruptions and duplicates that verify let pass.
func TestVerifyCatches(t *testing.T) {
	t.Run("a blank line before the message", func(t *testing.T) {
		// The message's own header became body: not the message as sent.
		f := newFixture(t)
		m := f.msgs[0]
		f.deliverAfter(t, m.rcpts[0], "\n", m.data)
		for _, r := range m.rcpts[1:] {
			f.deliver(t, m, r, m.data)
		}
		for _, r := range f.msgs[1].rcpts {
			f.deliver(t, f.msgs[1], r, f.msgs[1].data)
		}
		out, err := f.verify(t)
		if err == nil || !strings.Contains(out, "CORRUPTED") {
			t.Fatalf("err %v; report:\n%s", err, out)
		}
	})
	for name, mangle := range map[string]func(string) string{
		"X-Soak with a CR":         func(s string) string { return strings.Replace(s, "\nMIME", "\r\nMIME", 1) },
		"X-Soak gone":              func(s string) string { return strings.Replace(s, "X-Soak: ", "X-Soap: ", 1) },
		"cut before X-Soak":        func(s string) string { return s[:strings.Index(s, "X-Soak")] },
		"X-Soak with a space more": func(s string) string { return strings.Replace(s, "X-Soak: ", "X-Soak:  ", 1) },
	} {
		t.Run("an extra copy, "+name, func(t *testing.T) {
			// The good copies all arrived; a bad one besides them must not
			// go unnoticed for want of a header to know it by.
			f := newFixture(t)
			f.all(t)
			m := f.msgs[0]
			f.deliver(t, m, m.rcpts[0], []byte(mangle(string(m.data))))
			out, err := f.verify(t)
			if err == nil || !strings.Contains(out, "CORRUPTED") {
				t.Fatalf("err %v; report:\n%s", err, out)
			}
		})
	}
	t.Run("two duplicates in one stop", func(t *testing.T) {
		// One stop of the sending Postfix orphans one delivery of a
		// message, not two: the second extra copy is unexplained.
		f := newFixture(t)
		f.all(t)
		m := f.msgs[0]
		stop := time.Now().Add(-time.Hour)
		f.stops = fmt.Sprintf("%d %d\n", stop.UnixNano(), stop.Add(3*time.Second).UnixNano())
		for _, d := range []time.Duration{-time.Second, time.Second} {
			file := f.deliver(t, m, m.rcpts[0], m.data)
			os.Chtimes(file, stop.Add(d), stop.Add(d))
		}
		out, err := f.verify(t)
		if err == nil || !strings.Contains(out, "DUPLICATE: message") || !strings.Contains(out, "(1 unexplained)") {
			t.Fatalf("err %v; report:\n%s", err, out)
		}
	})
	t.Run("one duplicate in each of two stops", func(t *testing.T) {
		f := newFixture(t)
		f.all(t)
		m := f.msgs[0]
		now := time.Now()
		for _, stop := range []time.Time{now.Add(-2 * time.Hour), now.Add(-time.Hour)} {
			f.stops += fmt.Sprintf("%d %d\n", stop.UnixNano(), stop.Add(3*time.Second).UnixNano())
			file := f.deliver(t, m, m.rcpts[0], m.data)
			os.Chtimes(file, stop.Add(time.Second), stop.Add(time.Second))
		}
		out, err := f.verify(t)
		if err != nil || !strings.Contains(out, "2 (0 unexplained)") {
			t.Fatalf("err %v; report:\n%s", err, out)
		}
	})
}

// TestVerifyDropThenStop: the copy that onionmx announced came first, the
// one of a stop second; then the final one. Both extra copies have their
// cause, whichever came first.
func TestVerifyDropThenStop(t *testing.T) {
	f := newFixture(t)
	f.all(t)
	m := f.msgs[0]
	stop := time.Now().Add(-time.Hour)
	f.stops = fmt.Sprintf("%d %d\n", stop.UnixNano(), stop.Add(3*time.Second).UnixNano())
	for _, at := range []time.Time{stop.Add(-time.Hour), stop.Add(time.Second)} {
		file := f.deliver(t, m, m.rcpts[0], m.data)
		os.Chtimes(file, at, at)
	}
	fmt.Fprintf(&f.log, "Nov 30 05:00:01 send postfix/pipe[2]: Q0: to=<%s>, relay=onionmx, delay=1, dsn=4.4.2, status=deferred (lost connection with host x.onion[25] while sending end of data -- message may be sent more than once)\n", m.rcpts[0])
	out, err := f.verify(t)
	if err != nil || !strings.Contains(out, "2 (0 unexplained)") {
		t.Fatalf("err %v; report:\n%s", err, out)
	}
}
