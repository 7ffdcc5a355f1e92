package lookup

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// DefaultPort is the SMTP port used when a nexthop names none (RFC 5321
// section 4.5.4.2... in practice port 25, as Postfix's smtp(8) uses).
const DefaultPort = 25

// maxDomainLen is the longest domain name in presentation form without the
// trailing dot (RFC 1035 section 2.3.4: 255 octets on the wire).
const maxDomainLen = 253

// Nexthop is Postfix's ${nexthop} for this transport, parsed.
type Nexthop struct {
	// Host is the domain or onion name, in lower case, without brackets or
	// a trailing dot, and in ASCII (IDNA) form.
	Host string
	// Port is the port given after the host, or 0 when none was given.
	Port uint16
	// Literal is set when the host was in brackets: as for Postfix's
	// smtp(8), brackets mean "this host, no lookups".
	Literal bool
}

// String returns the nexthop in Postfix's notation.
func (n Nexthop) String() string {
	s := n.Host
	if n.Literal {
		s = "[" + s + "]"
	}
	if n.Port != 0 {
		s += ":" + strconv.Itoa(int(n.Port))
	}
	return s
}

// ParseNexthop parses Postfix's nexthop notation: "[host]:port", "[host]",
// "host:port" or "host". The host is any domain name; whether it is a usable
// onion is decided later, by Resolve.
func ParseNexthop(s string) (Nexthop, error) {
	var n Nexthop
	if s == "" {
		return n, errors.New("empty nexthop")
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return n, fmt.Errorf("nexthop %q: missing ]", s)
		}
		host, n.Literal = s[1:end], true
		switch rest := s[end+1:]; {
		case rest == "":
		case rest[0] == ':':
			port = rest[1:]
			if port == "" {
				return n, fmt.Errorf("nexthop %q: empty port", s)
			}
		default:
			return n, fmt.Errorf("nexthop %q: unexpected %q after ]", s, rest)
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if port == "" {
			return n, fmt.Errorf("nexthop %q: empty port", s)
		}
	}
	if port != "" {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return n, fmt.Errorf("nexthop %q: bad port %q", s, port)
		}
		n.Port = uint16(p)
	}
	if n.Literal {
		// A bracketed address literal is valid Postfix syntax; Resolve
		// skips it as a clear-net target.
		h := strings.TrimPrefix(strings.ToLower(host), "ipv6:")
		if ip := net.ParseIP(h); ip != nil {
			n.Host = ip.String()
			return n, nil
		}
	}
	h, err := NormalizeDomain(host)
	if err != nil {
		return n, fmt.Errorf("nexthop %q: %w", s, err)
	}
	n.Host = h
	return n, nil
}

// NormalizeDomain returns domain in the form used for comparisons, map keys
// and queries: lower case, ASCII (internationalized names are converted with
// IDNA), no trailing dot. It rejects what cannot be a domain name, so that
// junk never reaches a DNS query.
func NormalizeDomain(domain string) (string, error) {
	d := strings.TrimSuffix(domain, ".")
	if d == "" {
		return "", errors.New("empty domain")
	}
	ascii := true
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if !ascii {
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", fmt.Errorf("domain %q: %v", domain, err)
		}
		d = a
	}
	d = strings.ToLower(d)
	if len(d) > maxDomainLen {
		return "", fmt.Errorf("domain is %d characters long, at most %d are allowed", len(d), maxDomainLen)
	}
	if ip := net.ParseIP(d); ip != nil {
		return "", fmt.Errorf("%q is an IP address, not a domain name", domain)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" {
			return "", fmt.Errorf("domain %q has an empty label", domain)
		}
		if len(label) > 63 {
			return "", fmt.Errorf("domain %q has a label longer than 63 characters", domain)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return "", fmt.Errorf("domain %q contains %q", domain, c)
			}
		}
	}
	return d, nil
}

// AddressDomain returns the normalized domain of a mail address: what
// follows the last "@". Postfix may hand over a quoted local part that
// contains "@" itself, hence the last one.
func AddressDomain(addr string) (string, error) {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return "", fmt.Errorf("address %q has no domain", addr)
	}
	d, err := NormalizeDomain(addr[i+1:])
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	return d, nil
}
