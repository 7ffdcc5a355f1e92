package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// entry is one ledger line: a message sendmail took.
type entry struct {
	size      int
	sum       string
	submitted time.Time
	rcpts     []string
}

// copyOf is one delivered file holding a soak message for one recipient.
type copyOf struct {
	file string
	at   time.Time
}

type key struct {
	index int
	rcpt  string
}

// attempt is what the sending Postfix logged for one recipient of a queue
// file.
type attempt struct {
	bounced  int
	deferred []string // the reasons
}

var (
	soakHeader   = regexp.MustCompile(`(?m)^X-Soak: (\S+) (\d+)$`)
	messageIDRe  = regexp.MustCompile(`: ([0-9A-Za-z]+): message-id=<soak-(\S+)-(\d+)@send\.onionmx\.test>`)
	statusRe     = regexp.MustCompile(`: ([0-9A-Za-z]+): to=<([^>]*)>,.* status=([a-z]+) ?(.*)$`)
	deliveredTo  = regexp.MustCompile(`(?m)^Delivered-To: (\S+)$`)
	traceHeaders = regexp.MustCompile(`^((Received|Return-Path|X-Original-To|Delivered-To):|[ \t])`)
)

// verify checks the receiving Maildirs against the ledger and prints the
// soak's report (Markdown). It fails (status 1) on a message lost,
// corrupted, delivered to a recipient it was not for, duplicated without
// an explanation, or bounced, and on an onionmx process over 32 MiB.
func verify(args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	ledgerFile := fs.String("ledger", "", "the ledger")
	run := fs.String("run", "", "run id")
	mail := fs.String("mail", "", "the receiver's Maildir root")
	sendlog := fs.String("sendlog", "", "the sending Postfix's log")
	bounces := fs.String("bounces", "", "the sending Postfix's Maildir root (bounces come back there)")
	stops := fs.String("stops", "", "file of 'STOP_NS START_NS' lines: the sending Postfix's stops")
	watchFile := fs.String("watch", "", "soak watch's output")
	clean := fs.Int("clean", 0, "messages [0, clean) were sent without faults")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ledger, err := readLedger(*ledgerFile)
	if err != nil {
		return err
	}
	copies, problems, err := scanMaildirs(*mail, *run, ledger)
	if err != nil {
		return err
	}
	qids, attempts, err := readSendLog(*sendlog, *run)
	if err != nil {
		return err
	}
	windows := readStops(*stops)

	var (
		lost, corrupt, unexplained, delivered, dups int
		causes                                      = map[string]int{}
		latencies                                   = map[bool][]time.Duration{}
		report                                      []string
	)
	problem := func(format string, a ...any) {
		if len(report) < 30 {
			report = append(report, fmt.Sprintf(format, a...))
		}
	}
	for _, p := range problems {
		corrupt++
		problem("%s", p)
	}
	indexes := make([]int, 0, len(ledger))
	for i := range ledger {
		indexes = append(indexes, i)
	}
	sort.Ints(indexes)
	for _, i := range indexes {
		e := ledger[i]
		for _, rcpt := range e.rcpts {
			k := key{i, strings.ToLower(rcpt)}
			cs := copies[k]
			delete(copies, k)
			if len(cs) == 0 {
				lost++
				problem("LOST: message %d for %s (queue id %s): not in any mailbox", i, rcpt, qids[i])
				continue
			}
			delivered++
			slices.SortFunc(cs, func(a, b copyOf) int { return a.at.Compare(b.at) })
			latencies[i < *clean] = append(latencies[i < *clean], cs[0].at.Sub(e.submitted))
			extra := len(cs) - 1
			if extra == 0 {
				continue
			}
			dups += extra
			if need := explain(cs, attempts[qids[i]+" "+k.rcpt], windows, causes); need > 0 {
				unexplained += need
				problem("DUPLICATE: message %d for %s (queue id %s) delivered %d times, and nothing says %d of them may be: %s", i, rcpt, qids[i], len(cs), need, filesOf(cs))
			}
		}
	}
	for k, cs := range copies {
		corrupt += len(cs)
		problem("MISDELIVERED: message %d in %s's mailbox, not one of its recipients: %s", k.index, k.rcpt, filesOf(cs))
	}
	var bounced, retries int
	reasons := map[string]int{}
	for k, a := range attempts { // this run's queue files only
		bounced += a.bounced
		retries += len(a.deferred)
		for _, d := range a.deferred {
			reasons[normalize(d)]++
		}
		if a.bounced > 0 {
			problem("BOUNCED: queue id and recipient %s", k)
		}
	}
	returned := countFiles(*bounces)
	if returned > 0 {
		problem("BOUNCES: %d messages came back to the sender's mailboxes under %s", returned, *bounces)
	}
	peak, nproc, over, rss := readWatch(*watchFile)

	// The report.
	var b strings.Builder
	pct := func(ds []time.Duration, p float64) string {
		if len(ds) == 0 {
			return "-"
		}
		slices.Sort(ds)
		return fmt.Sprintf("%.2f s", ds[min(len(ds)-1, int(float64(len(ds))*p))].Seconds())
	}
	fmt.Fprintf(&b, "| | |\n|---|---|\n")
	fmt.Fprintf(&b, "| messages submitted | %d (%d recipients) |\n", len(ledger), recipients(ledger))
	fmt.Fprintf(&b, "| delivered, byte for byte (sha256) | %d of %d recipients |\n", delivered, recipients(ledger))
	fmt.Fprintf(&b, "| lost | %d |\n| corrupted or misdelivered | %d |\n", lost, corrupt)
	fmt.Fprintf(&b, "| duplicates | %d (%d unexplained) |\n", dups, unexplained)
	fmt.Fprintf(&b, "| bounced | %d in the log, %d bounce messages |\n", bounced, returned)
	fmt.Fprintf(&b, "| deferrals (retries) | %d |\n", retries)
	for _, clean := range []bool{true, false} {
		name := "with faults"
		if clean {
			name = "without faults"
		}
		ds := latencies[clean]
		fmt.Fprintf(&b, "| submission to mailbox, %s: p50 / p95 / p99 (%d) | %s / %s / %s |\n", name, len(ds), pct(ds, 0.50), pct(ds, 0.95), pct(ds, 0.99))
	}
	fmt.Fprintf(&b, "| onionmx processes seen | %d; peak RSS %.1f MiB; over 32 MiB: %d |\n", nproc, float64(peak)/1024, over)
	if len(causes) > 0 {
		fmt.Fprintf(&b, "\nDuplicates and their causes:\n\n")
		for _, c := range sortedCounts(causes) {
			fmt.Fprintf(&b, "- %s\n", c)
		}
	}
	if len(reasons) > 0 {
		fmt.Fprintf(&b, "\nDeferrals by reason (the sending Postfix's log; onions, ids and numbers replaced):\n\n")
		for j, c := range sortedCounts(reasons) {
			if j == 15 {
				fmt.Fprintf(&b, "- ... (%d reasons in all)\n", len(reasons))
				break
			}
			fmt.Fprintf(&b, "- %s\n", c)
		}
	}
	if rss != "" {
		fmt.Fprintf(&b, "\nLong-running processes: open descriptors and resident size after the warm-up, after each round of faults, and at the end (\"gone\": restarted by a fault):\n\n%s", rss)
	}
	if len(report) > 0 {
		fmt.Fprintf(&b, "\nProblems (the first 30):\n\n")
		for _, r := range report {
			fmt.Fprintf(&b, "- %s\n", r)
		}
	}
	fmt.Print(b.String())
	if lost+corrupt+unexplained+bounced+returned+over > 0 {
		return fmt.Errorf("FAILED: %d lost, %d corrupted or misdelivered, %d unexplained duplicates, %d bounced, %d bounce messages, %d onionmx processes over 32 MiB", lost, corrupt, unexplained, bounced, returned, over)
	}
	return nil
}

// explain finds the causes of the extra copies of one message for one
// recipient (cs, sorted by arrival; a, what the sending Postfix logged for
// it, nil if nothing), counts them in causes, and returns how many copies
// nothing explains.
func explain(cs []copyOf, a *attempt, windows []window, causes map[string]int) int {
	extra := len(cs) - 1
	said := 0
	if a != nil {
		for _, d := range a.deferred {
			if strings.Contains(d, "message may be sent more than once") && said < extra {
				said++
				causes["onionmx said: "+normalize(d)]++
			}
		}
	}
	// What onionmx could not say: its pipe(8) was stopped with the
	// sending Postfix after the end of data went out, and nobody read its
	// answer. Any copy but the last (the delivery Postfix logged as sent)
	// may have arrived then, one a stop at most: a stop orphans one
	// delivery of a message.
	need, used := extra-said, map[int]bool{}
	for _, c := range cs[:extra] {
		if need == 0 {
			break
		}
		if w, ok := inWindow(windows, c.at, used); ok {
			causes[fmt.Sprintf("the sending Postfix was stopped at %s with the end of data in flight: pipe(8) was gone, nobody read onionmx's answer", w.Format("15:04:05.000"))]++
			need--
		}
	}
	return need
}

func readLedger(file string) (map[int]*entry, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[int]*entry{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 6 {
			return nil, fmt.Errorf("ledger: bad line %q", sc.Text())
		}
		i, _ := strconv.Atoi(f[0])
		size, _ := strconv.Atoi(f[1])
		ns, _ := strconv.ParseInt(f[3], 10, 64)
		out[i] = &entry{size: size, sum: f[2], submitted: time.Unix(0, ns), rcpts: strings.Split(f[5], ",")}
	}
	return out, sc.Err()
}

// scanMaildirs reads every delivered file. A soak message must be the
// file's tail, byte for byte, after nothing but trace headers.
func scanMaildirs(root, run string, ledger map[int]*entry) (map[key][]copyOf, []string, error) {
	copies := map[key][]copyOf{}
	var problems []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Base(filepath.Dir(path)) == "tmp" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		m := soakHeader.FindSubmatch(data)
		if m == nil || string(m[1]) != run {
			if mentions(data, run) {
				// An extra copy, perhaps, that would pass unseen beside
				// the good ones.
				problems = append(problems, fmt.Sprintf("CORRUPTED: %s holds a message of this run without its X-Soak header as sent", path))
			}
			return nil // not this run's (the harness's own probes)
		}
		i, _ := strconv.Atoi(string(m[2]))
		e := ledger[i]
		if e == nil {
			problems = append(problems, fmt.Sprintf("UNKNOWN: %s holds message %d, which the ledger does not list", path, i))
			return nil
		}
		if len(data) < e.size {
			problems = append(problems, fmt.Sprintf("CORRUPTED: %s holds message %d in %d bytes, shorter than the %d sent", path, i, len(data), e.size))
			return nil
		}
		pre, tail := data[:len(data)-e.size], data[len(data)-e.size:]
		if sum := sha256.Sum256(tail); hex.EncodeToString(sum[:]) != e.sum {
			problems = append(problems, fmt.Sprintf("CORRUPTED: %s: the last %d bytes are not message %d as sent (sha256 differs)", path, e.size, i))
			return nil
		}
		if len(pre) > 0 && pre[len(pre)-1] != '\n' {
			problems = append(problems, fmt.Sprintf("CORRUPTED: %s: message %d does not start at a line", path, i))
			return nil
		}
		// Not even a blank line: it would make the message's own header
		// its body.
		for _, l := range strings.Split(strings.TrimSuffix(string(pre), "\n"), "\n") {
			if len(pre) > 0 && !traceHeaders.MatchString(l) {
				problems = append(problems, fmt.Sprintf("CORRUPTED: %s: %q before message %d: more than trace headers", path, l, i))
				return nil
			}
		}
		to := deliveredTo.FindSubmatch(pre)
		if to == nil {
			problems = append(problems, fmt.Sprintf("CORRUPTED: %s: no Delivered-To header", path))
			return nil
		}
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		k := key{i, strings.ToLower(string(to[1]))}
		copies[k] = append(copies[k], copyOf{file: path, at: st.ModTime()})
		return nil
	})
	return copies, problems, err
}

// mentions reports whether data names run the way makeMessage's header
// does: in the Subject, the Message-ID or the X-Soak header.
func mentions(data []byte, run string) bool {
	for _, m := range []string{"soak " + run + " message ", "<soak-" + run + "-", "X-Soak: " + run + " "} {
		if bytes.Contains(data, []byte(m)) {
			return true
		}
	}
	return false
}

// readSendLog returns the queue id of each message of the run, and what
// was logged for each "QUEUEID RCPT".
func readSendLog(file, run string) (map[int]string, map[string]*attempt, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	qids := map[int]string{}
	ours := map[string]bool{}
	attempts := map[string]*attempt{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := messageIDRe.FindStringSubmatch(line); m != nil && m[2] == run {
			i, _ := strconv.Atoi(m[3])
			qids[i] = m[1]
			ours[m[1]] = true
			continue
		}
		m := statusRe.FindStringSubmatch(line)
		if m == nil || !ours[m[1]] {
			continue
		}
		k := m[1] + " " + strings.ToLower(m[2])
		a := attempts[k]
		if a == nil {
			a = &attempt{}
			attempts[k] = a
		}
		switch m[3] {
		case "bounced", "expired":
			a.bounced++
		case "deferred":
			a.deferred = append(a.deferred, strings.TrimSuffix(strings.TrimPrefix(m[4], "("), ")"))
		}
	}
	return qids, attempts, sc.Err()
}

type window struct{ from, to time.Time }

func readStops(file string) []window {
	data, _ := os.ReadFile(file)
	var out []window
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		a, _ := strconv.ParseInt(f[0], 10, 64)
		b, _ := strconv.ParseInt(f[1], 10, 64)
		out = append(out, window{time.Unix(0, a), time.Unix(0, b)})
	}
	return out
}

// inWindow: t from 5 s before a stop (the receiver stores the message
// a little before the sender's Postfix is told to stop; virtual(8) may
// write it later still) to the start again, in a stop not yet used (by
// index), which it marks used.
func inWindow(ws []window, t time.Time, used map[int]bool) (time.Time, bool) {
	for i, w := range ws {
		if !used[i] && !t.Before(w.from.Add(-5*time.Second)) && !t.After(w.to) {
			used[i] = true
			return w.from, true
		}
	}
	return time.Time{}, false
}

var (
	onionRe  = regexp.MustCompile(`[a-z2-7]{56}\.onion`)
	numberRe = regexp.MustCompile(`\b[0-9A-F]{8,}\b|\d+(\.\d+)?`)
)

// normalize makes reasons that differ only in names and numbers equal.
func normalize(s string) string {
	s = onionRe.ReplaceAllString(s, "X.onion")
	s = numberRe.ReplaceAllString(s, "N")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

func sortedCounts(m map[string]int) []string {
	type kv struct {
		k string
		v int
	}
	var all []kv
	for k, v := range m {
		all = append(all, kv{k, v})
	}
	sort.Slice(all, func(i, j int) bool { return all[i].v > all[j].v || all[i].v == all[j].v && all[i].k < all[j].k })
	out := make([]string, len(all))
	for i, c := range all {
		out[i] = fmt.Sprintf("%d × %s", c.v, c.k)
	}
	return out
}

func recipients(ledger map[int]*entry) int {
	n := 0
	for _, e := range ledger {
		n += len(e.rcpts)
	}
	return n
}

func filesOf(cs []copyOf) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.file)
	}
	return strings.Join(s, " ")
}

func countFiles(root string) int {
	n := 0
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(path)) != "tmp" {
			n++
		}
		return nil
	})
	return n
}

// readWatch summarises soak watch's output: the peak RSS of any onionmx
// process (KiB), how many were seen, how many went over 32 MiB, and a
// table of the daemons' descriptors and resident size at each mark (after
// the warm-up, after each round of faults, at the end).
func readWatch(file string) (peak, n, over int, table string) {
	data, err := os.ReadFile(file)
	if err != nil {
		return 0, 0, 0, ""
	}
	type sample struct{ fds, rss int }
	samples := map[string]map[int]sample{}
	marks := 0
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 5 && f[0] == "proc":
			kb, _ := strconv.Atoi(f[3])
			n++
			peak = max(peak, kb)
			if kb > 32<<10 {
				over++
			}
		case len(f) == 7 && f[0] == "daemon":
			mark, _ := strconv.Atoi(f[1])
			fds, _ := strconv.Atoi(f[5])
			rss, _ := strconv.Atoi(f[6])
			k := f[2] + " " + f[3] + " " + f[4]
			if samples[k] == nil {
				samples[k] = map[int]sample{}
			}
			samples[k][mark] = sample{fds, rss}
			marks = max(marks, mark)
		}
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "| process (pid) | descriptors | RSS, MiB |\n|---|---|---|\n")
	var keys []string
	for k := range samples {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := strings.Fields(k)
		var fds, rss []string
		for m := 1; m <= marks; m++ {
			if s, ok := samples[k][m]; ok {
				fds = append(fds, strconv.Itoa(s.fds))
				rss = append(rss, fmt.Sprintf("%.1f", float64(s.rss)/1024))
			} else if len(fds) > 0 {
				fds = append(fds, "gone")
				rss = append(rss, "gone")
				break
			}
		}
		if len(fds) == 0 {
			continue // started by a fault: sampled later only
		}
		fmt.Fprintf(&b, "| %s (%s) | %s | %s |\n", f[0], f[1], strings.Join(fds, " → "), strings.Join(rss, " → "))
	}
	return peak, n, over, b.String()
}
