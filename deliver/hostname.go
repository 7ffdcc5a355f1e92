package deliver

import (
	"bufio"
	"os"
	"strings"
)

// Hostname returns this host's fully qualified name for EHLO, as
// `hostname -f` would find it, without any DNS query: the kernel's host name
// when it has a dot, else the first dotted name /etc/hosts gives it.
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	if strings.Contains(h, ".") {
		return h
	}
	f, err := os.Open("/etc/hosts")
	if err != nil {
		return h
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		names := fields[1:]
		for _, n := range names {
			if !strings.EqualFold(n, h) && !strings.EqualFold(strings.Split(n, ".")[0], h) {
				continue
			}
			for _, fq := range names {
				if strings.Contains(fq, ".") && strings.EqualFold(strings.Split(fq, ".")[0], h) {
					return fq
				}
			}
		}
	}
	return h
}
