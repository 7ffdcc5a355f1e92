package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// watch looks at /proc every 50 ms for onionmx processes and keeps the
// peak resident size (VmHWM) each one reached by the last look: a process
// that lives less than one look may be missed, but such a one never held
// a large message. On SIGUSR1 it samples the open descriptors and the
// resident size of the long-running daemons: the processes of the pid
// files in -pids ("NAME PIDFILE" lines, e2e's registry) and each Postfix
// master's qmgr. On SIGTERM it writes what it saw to -out and exits:
//
//	proc PID KIND PEAK_KB LIFETIME_MS
//	daemon SAMPLE NAME PID START FDS RSS_KB
func watch(args []string) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	bin := fs.String("bin", "", "the onionmx binary's path")
	pids := fs.String("pids", "", "e2e's pid file registry")
	out := fs.String("out", "", "where to write the results")
	if err := fs.Parse(args); err != nil {
		return err
	}
	type proc struct {
		kind        string
		peak        int
		first, last time.Time
	}
	procs := map[string]*proc{} // by "PID START"
	var samples []string
	nsample := 0
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGUSR1 {
				nsample++
				samples = append(samples, sampleDaemons(*pids, nsample)...)
				continue
			}
			var b bytes.Buffer
			for k, p := range procs {
				pid, _, _ := strings.Cut(k, " ")
				fmt.Fprintf(&b, "proc %s %s %d %d\n", pid, p.kind, p.peak, p.last.Sub(p.first).Milliseconds())
			}
			for _, s := range samples {
				b.WriteString(s + "\n")
			}
			return os.WriteFile(*out, b.Bytes(), 0o644)
		case now := <-tick.C:
			ents, _ := os.ReadDir("/proc")
			for _, e := range ents {
				pid := e.Name()
				if pid[0] < '0' || pid[0] > '9' {
					continue
				}
				stat, err := os.ReadFile("/proc/" + pid + "/stat")
				if err != nil || !bytes.Contains(stat, []byte("(onionmx)")) {
					continue
				}
				if exe, err := os.Readlink("/proc/" + pid + "/exe"); err != nil || exe != *bin {
					continue
				}
				key := pid + " " + procStart(stat)
				p := procs[key]
				if p == nil {
					cmd, _ := os.ReadFile("/proc/" + pid + "/cmdline")
					f := strings.Split(string(cmd), "\x00")
					kind := "?"
					if len(f) > 1 {
						kind = f[1]
					}
					p = &proc{kind: kind, first: now}
					procs[key] = p
				}
				p.last = now
				if kb := statusKB(pid, "VmHWM:"); kb > p.peak {
					p.peak = kb
				}
			}
		}
	}
}

// statField is field n (from 1, as proc(5) counts) of a /proc/PID/stat,
// "" if there is none. Fields are counted from the end of the command
// name, which may hold spaces and parentheses itself.
func statField(stat []byte, n int) string {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || n < 3 {
		return ""
	}
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < n-2 {
		return ""
	}
	return f[n-3]
}

// procStart is field 22 of /proc/PID/stat, the start time in clock ticks.
func procStart(stat []byte) string { return statField(stat, 22) }

func statusKB(pid, key string) int {
	f, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}

func sampleDaemons(registry string, n int) []string {
	data, err := os.ReadFile(registry)
	if err != nil {
		return nil
	}
	var out []string
	one := func(name, pid string) {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return
		}
		fds, _ := os.ReadDir("/proc/" + pid + "/fd")
		out = append(out, fmt.Sprintf("daemon %d %s %s %s %d %d", n, name, pid, procStart(stat), len(fds), statusKB(pid, "VmRSS:")))
	}
	for _, line := range strings.Split(string(data), "\n") {
		name, file, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		pid := strings.TrimSpace(string(b))
		one(name, pid)
		if strings.HasPrefix(name, "postfix-") {
			// The queue manager lives as long as the master.
			kids, _ := filepath.Glob("/proc/[0-9]*/stat")
			for _, k := range kids {
				st, err := os.ReadFile(k)
				if err != nil || !bytes.Contains(st, []byte("(qmgr)")) {
					continue
				}
				if statField(st, 4) == pid { // the parent's pid
					one(name+"/qmgr", filepath.Base(filepath.Dir(k)))
				}
			}
		}
	}
	return out
}
