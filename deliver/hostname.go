package deliver

import (
	"bufio"
	"io"
	"os"
	"strings"
)

// DefaultDomain is what Postfix appends to a host name without a dot to
// form its myhostname when mydomain is not set ("localdomain").
const DefaultDomain = "localdomain"

// Hostname returns this host's fully qualified name for EHLO, formed as
// Postfix forms myhostname, and without any DNS query: the kernel's host
// name when it has a dot; else the first dotted name that /etc/hosts gives
// it; else the host name with ".localdomain" appended, as Postfix does
// with its default mydomain. qualified is false in that last case: the
// name is a guess, and the administrator should give one (--helo).
func Hostname() (name string, qualified bool) {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	if strings.Contains(h, ".") {
		return h, true
	}
	if f, err := os.Open("/etc/hosts"); err == nil {
		defer f.Close()
		if fq := hostsName(f, h); fq != "" {
			return fq, true
		}
	}
	return h + "." + DefaultDomain, false
}

// hostsName returns the first dotted name that an /etc/hosts file gives
// to host h, or "".
func hostsName(r io.Reader, h string) string {
	sc := bufio.NewScanner(r)
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
	return ""
}
