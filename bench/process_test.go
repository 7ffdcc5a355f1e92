package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/proctest"
	"github.com/onionmx/onionmx/internal/sockstest"
	"github.com/onionmx/onionmx/lookup"
	"github.com/onionmx/onionmx/tor"
)

// pathEnv is a zero-latency path: the fake SOCKS5 server (Delay 0: it
// relays with io.Copy, which splices on Linux) routes one onion to an SMTP
// sink that counts and discards (the lean one, or go-smtp's), another to
// a server that discards raw bytes; and a DNS server that must never be
// asked.
type pathEnv struct {
	socks     *sockstest.Server
	onion     string // to the lean SMTP sink
	gosmtp    string // to the go-smtp sink
	rawAddr   string // onion:port to the raw discard server
	lean      *leanSink
	sink      *countingSink
	discard   *discardServer
	dns       *dnstest.Server
	viaGoSMTP bool // deliver to the go-smtp sink
}

func newPathEnv(tb testing.TB) *pathEnv {
	e := &pathEnv{onion: oniontest.New(), gosmtp: oniontest.New(), lean: newLeanSink(tb), sink: newCountingSink(tb),
		discard: newDiscardServer(tb), dns: dnstest.New(tb)}
	raw := oniontest.New()
	e.rawAddr = raw + ":25"
	e.socks = sockstest.New(tb, func(r sockstest.Request) sockstest.Response {
		switch r.Host {
		case raw:
			return sockstest.Response{Dial: e.discard.Addr}
		case e.gosmtp:
			return sockstest.Response{Dial: e.sink.Addr}
		}
		return sockstest.Response{Dial: e.lean.Addr}
	})
	return e
}

// sinkCount returns the messages and the bytes of the last one that the
// sink in use counted.
func (e *pathEnv) sinkCount() (msgs, bytes int64) {
	if e.viaGoSMTP {
		return e.sink.msgs.Load(), e.sink.bytes.Load()
	}
	return e.lean.msgs.Load(), e.lean.bytes.Load()
}

// run is one process run.
type run struct {
	wall   time.Duration // start to exit
	cpu    time.Duration // user + system
	rss    int64         // peak resident size (VmHWM)
	faults int64         // page faults, minor and major
}

// start runs cmd to its end, sampling its peak memory when hwm is set.
func start(cmd *exec.Cmd, hwm bool) (run, string, error) {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return run{}, "", err
	}
	var peak <-chan int64
	if hwm {
		peak = proctest.PeakRSS(cmd.Process.Pid, 2*time.Millisecond)
	}
	err := cmd.Wait()
	r := run{wall: time.Since(t0)}
	if peak != nil {
		r.rss = <-peak
	}
	if cmd.ProcessState != nil {
		r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.faults = ru.Minflt + ru.Majflt
		}
	}
	if err != nil {
		err = fmt.Errorf("%s: %v: %s", cmd.Args[0], err, strings.TrimSpace(out.String()))
	}
	return r, out.String(), err
}

// deliverCmd is `onionmx deliver` as Postfix runs it, for a literal
// nexthop, with --dns pointing at a server that must not be asked.
func (e *pathEnv) deliverCmd(bin string, size int64, stdin io.Reader) *exec.Cmd {
	onion := e.onion
	if e.viaGoSMTP {
		onion = e.gosmtp
	}
	cmd := exec.Command(bin, "deliver", "--socks", e.socks.Addr, "--dns", e.dns.Addr(), "--helo", helo,
		"--size", strconv.FormatInt(size, 10), "-f", sender, "--nexthop", "["+onion+"]:25", "--", recipient)
	cmd.Stdin = stdin
	return cmd
}

// deliver runs one delivery of a size-byte message with the binary.
func (e *pathEnv) deliver(bin string, size int64, hwm bool) (run, error) {
	msg := &message{n: size}
	return e.check(msg, func() (run, string, error) { return start(e.deliverCmd(bin, size, msg), hwm) })
}

// deliverWith runs cmd, a delivery of a size-byte message from
// deliverCmd, and checks it as deliver does.
func (e *pathEnv) deliverWith(cmd *exec.Cmd, size int64) (run, error) {
	return e.check(cmd.Stdin.(*message), func() (run, string, error) { return start(cmd, false) })
}

// check runs a delivery of msg and checks that the sink got it, and no DNS
// query was made.
func (e *pathEnv) check(msg *message, deliver func() (run, string, error)) (run, error) {
	size := msg.n
	before, _ := e.sinkCount()
	r, out, err := deliver()
	if err != nil {
		return r, err
	}
	if !strings.Contains(out, ".onion: 250 ") {
		return r, fmt.Errorf("onionmx said %q", out)
	}
	msgs, got := e.sinkCount()
	if msgs != before+1 {
		return r, fmt.Errorf("the sink did not count the message")
	}
	// The sink gets CRLF line ends: one byte more per line.
	if want := size + msg.lfs; got != want {
		return r, fmt.Errorf("the sink got %d bytes, want %d", got, want)
	}
	return r, e.noDNS()
}

// rawCopy copies a size-byte message through the same proxy with the raw
// client (this test binary, run as a process).
func (e *pathEnv) rawCopy(size int64, hwm bool) (run, error) {
	exe, err := os.Executable()
	if err != nil {
		return run{}, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %s %d", rawEnv, e.socks.Addr, e.rawAddr, size))
	cmd.Stdin = &message{n: size}
	r, _, err := start(cmd, hwm)
	if err != nil {
		return r, err
	}
	if got := e.discard.bytes.Load(); got != size {
		return r, fmt.Errorf("the discard server got %d bytes, want %d", got, size)
	}
	return r, nil
}

func (e *pathEnv) noDNS() error {
	if q := e.dns.Queries(); len(q) != 0 {
		return fmt.Errorf("DNS queries on a literal route: %v", q)
	}
	return nil
}

// BenchmarkThroughput delivers messages of each -sizes with the real
// binary to the lean sink (path=onionmx) and to go-smtp's server
// (path=onionmx-to-gosmtp, for comparison: its reader costs more CPU than
// the sender), and copies the same bytes raw through the same proxy
// (path=raw), and reports MiB/s (message bytes over start-to-exit time),
// the peak RSS and the CPU time of the process.
func BenchmarkThroughput(b *testing.B) {
	bin := onionmxBin(b)
	e := newPathEnv(b)
	for _, s := range list(*flagSizes) {
		size, err := parseSize(s)
		if err != nil || size <= 0 {
			b.Fatalf("-sizes: bad size %q", s)
		}
		b.Run("size="+s, func(b *testing.B) {
			for _, path := range []string{"onionmx", "raw", "onionmx-to-gosmtp"} {
				b.Run("path="+path, func(b *testing.B) {
					var wall, cpu time.Duration
					var rss int64
					e.viaGoSMTP = path == "onionmx-to-gosmtp"
					for b.Loop() {
						var r run
						var err error
						if path == "raw" {
							r, err = e.rawCopy(size, true)
						} else {
							r, err = e.deliver(bin, size, true)
						}
						if err != nil {
							b.Fatal(err)
						}
						wall += r.wall
						cpu += r.cpu
						rss = max(rss, r.rss)
					}
					b.ReportMetric(float64(size)*float64(b.N)/(1<<20)/wall.Seconds(), "MiB/s")
					b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
					b.ReportMetric(ms(cpu)/float64(b.N), "cpu-ms/op")
				})
			}
		})
	}
}

// BenchmarkThroughputRatio is the body's target (the DATA writer at 0.9
// of a raw copy or better, from a pipe to a socket, in constant memory):
// each iteration copies a message of each -sizes raw through the proxy
// and then delivers it with the real binary to the lean sink, one right
// after the other, so that the ratio of the two compares runs that saw
// the same load on a shared machine. It reports both MiB/s, their ratio
// (onionmx/raw), the CPU time and the peak RSS of both processes.
func BenchmarkThroughputRatio(b *testing.B) {
	bin := onionmxBin(b)
	e := newPathEnv(b)
	for _, s := range list(*flagSizes) {
		size, err := parseSize(s)
		if err != nil || size <= 0 {
			b.Fatalf("-sizes: bad size %q", s)
		}
		b.Run("size="+s, func(b *testing.B) {
			var sum [2]run // raw, onionmx
			for b.Loop() {
				raw, err := e.rawCopy(size, true)
				if err != nil {
					b.Fatal(err)
				}
				on, err := e.deliver(bin, size, true)
				if err != nil {
					b.Fatal(err)
				}
				for i, r := range []run{raw, on} {
					sum[i].wall += r.wall
					sum[i].cpu += r.cpu
					sum[i].rss = max(sum[i].rss, r.rss)
				}
			}
			mibs := func(r run) float64 { return float64(size) * float64(b.N) / (1 << 20) / r.wall.Seconds() }
			b.ReportMetric(mibs(sum[1]), "onionmx-MiB/s")
			b.ReportMetric(mibs(sum[0]), "raw-MiB/s")
			b.ReportMetric(mibs(sum[1])/mibs(sum[0]), "ratio")
			b.ReportMetric(ms(sum[1].cpu)/float64(b.N), "onionmx-cpu-ms/op")
			b.ReportMetric(ms(sum[0].cpu)/float64(b.N), "raw-cpu-ms/op")
			b.ReportMetric(float64(sum[1].rss)/(1<<20), "onionmx-peak-RSS-MiB")
			b.ReportMetric(float64(sum[0].rss)/(1<<20), "raw-peak-RSS-MiB")
		})
	}
}

// A program is one of the processes the process benchmarks run.
type program struct {
	name string
	run  func() (run, error)
}

// programs are the processes Postfix starts, and what they are measured
// against, by the names BenchmarkProcess and BenchmarkProcessCPU report:
// /bin/true (fork and exec), an empty Go program (the Go runtime),
// `onionmx --help` and `--version` (package initialisation and the
// command line), and the delivery of a small message, also with
// GOMAXPROCS=1 as postfix-master.cf.example sets it.
func programs(b *testing.B, e *pathEnv, size int64) []program {
	bin, hello := onionmxBin(b), goHello(b)
	withEnv := func(cmd *exec.Cmd, env ...string) *exec.Cmd {
		cmd.Env = append(os.Environ(), env...)
		return cmd
	}
	return []program{
		{"true", func() (run, error) {
			r, _, err := start(exec.Command("/bin/true"), false)
			return r, err
		}},
		{"go-hello", func() (run, error) {
			r, _, err := start(exec.Command(hello), false)
			return r, err
		}},
		{"help", func() (run, error) {
			r, out, err := start(exec.Command(bin, "--help"), false)
			if err == nil && !strings.Contains(out, "deliver") {
				err = fmt.Errorf("--help said %q", out)
			}
			return r, err
		}},
		{"version", func() (run, error) {
			r, out, err := start(exec.Command(bin, "--version"), false)
			if err == nil && !strings.HasPrefix(out, "onionmx ") {
				err = fmt.Errorf("--version said %q", out)
			}
			return r, err
		}},
		{"deliver", func() (run, error) { return e.deliver(bin, size, false) }},
		{"deliver-maxprocs1", func() (run, error) {
			return e.deliverWith(withEnv(e.deliverCmd(bin, size, &message{n: size}), "GOMAXPROCS=1"), size)
		}},
	}
}

// BenchmarkProcess measures start-to-exit of one delivery of a 2 KiB
// message on a zero-latency path, as Postfix runs it once per message,
// against what starting a process costs (programs), and the delivery
// in-process (Client.Deliver, no process at all).
func BenchmarkProcess(b *testing.B) {
	e := newPathEnv(b)
	body := smallMessage()
	size := int64(len(body))
	var cases []program
	for _, p := range programs(b, e, size) {
		if p.name != "version" && p.name != "deliver-maxprocs1" {
			cases = append(cases, p)
		}
	}
	cases = append(cases, program{"Client.Deliver", func() (run, error) {
		c := &deliver.Client{
			Dialer:   &tor.SOCKSDialer{Network: "tcp", Addr: e.socks.Addr},
			Resolver: &lookup.Resolver{DNS: e.dns.Resolver()},
			Helo:     helo,
		}
		t0 := time.Now()
		res, err := c.Deliver(context.Background(), "["+e.onion+"]:25", &deliver.Message{
			Sender: sender, Recipients: []string{recipient}, Size: size, Body: bytes.NewReader(body),
		})
		r := run{wall: time.Since(t0)}
		if err == nil && !strings.HasPrefix(res.Reply(), "250 ") {
			err = fmt.Errorf("reply %q", res.Reply())
		}
		if err == nil {
			err = e.noDNS()
		}
		return r, err
	}})
	for _, c := range cases {
		b.Run("cmd="+c.name, func(b *testing.B) {
			var walls []time.Duration
			var faults int64
			for b.Loop() {
				r, err := c.run()
				if err != nil {
					b.Fatal(err)
				}
				walls = append(walls, r.wall)
				faults += r.faults
			}
			b.ReportMetric(ms(percentile(walls, 0.5)), "p50-ms")
			b.ReportMetric(ms(percentile(walls, 0.9)), "p90-ms")
			b.ReportMetric(float64(faults)/float64(b.N), "faults/op")
		})
	}
}

// BenchmarkProcessCPU measures the CPU (user + system, from rusage) of
// the programs, side by side: each iteration runs every program once, in
// turn, so that they share the machine's state. It reports each one's CPU
// in ms per run and the ratio of a delivery's to an empty Go program's,
// the figure to keep low on a busy relay (issue 10: at most 2.5). Run it
// with -benchtime=200x for 200 runs of each.
func BenchmarkProcessCPU(b *testing.B) {
	e := newPathEnv(b)
	progs := programs(b, e, int64(len(smallMessage())))
	cpu := map[string]time.Duration{}
	for b.Loop() {
		for _, p := range progs {
			r, err := p.run()
			if err != nil {
				b.Fatal(err)
			}
			cpu[p.name] += r.cpu
		}
	}
	for _, p := range progs {
		b.ReportMetric(ms(cpu[p.name])/float64(b.N), p.name+"-cpu-ms")
	}
	b.ReportMetric(float64(cpu["deliver"])/float64(cpu["go-hello"]), "deliver/go-hello")
	b.ReportMetric(float64(cpu["deliver-maxprocs1"])/float64(cpu["go-hello"]), "deliver-maxprocs1/go-hello")
}

// TestRawCopy is the smoke test of the raw baseline and of the message
// generator: the raw client (this binary, run as a process) copies 200 KiB
// through the proxy, and the generator's message is what it claims.
func TestRawCopy(t *testing.T) {
	e := newPathEnv(t)
	if _, err := e.rawCopy(200<<10, true); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int64{1, 100, 65527, 200 << 10} {
		m := &message{n: n}
		b, err := io.ReadAll(m)
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != n || b[len(b)-1] != '\n' || int64(bytes.Count(b, []byte{'\n'})) != m.lfs {
			t.Errorf("message of %d bytes: got %d bytes, last %q, %d LFs counted as %d", n, len(b), b[len(b)-1], bytes.Count(b, []byte{'\n'}), m.lfs)
		}
		if n > 1000 && (!bytes.HasPrefix(b, []byte(msgHead)) || bytes.Contains(b, []byte("\n.")) || bytes.Contains(b, []byte{'\r'})) {
			t.Errorf("message of %d bytes: unexpected content", n)
		}
	}
}

// goHello builds the smallest Go program that prints a line: the cost of
// the Go runtime's start alone.
func goHello(tb testing.TB) string {
	dir := tb.TempDir()
	src := filepath.Join(dir, "hello.go")
	if err := os.WriteFile(src, []byte("package main\n\nimport \"os\"\n\nfunc main() { os.Stdout.WriteString(\"hello\\n\") }\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, "hello")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-trimpath", "-o", bin, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build hello: %v\n%s", err, out)
	}
	return bin
}
