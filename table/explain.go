package table

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	"github.com/onionmx/onionmx/internal/printable"
	"github.com/onionmx/onionmx/lookup"
)

// Explain writes, for people, what Postfix is told for the key and why, as
// transport-map text: a route is a line that can be pasted into a static
// map ("example.org<TAB>onionmx:[x.onion]:25<TAB># source"); everything else
// is a comment. With several SRV targets the line Postfix gets has an empty
// nexthop, and each target follows as a commented-out line, in the order
// deliver tries them, ready to be pinned. Skipped targets follow with their
// reasons.
func (ans Answer) Explain(w io.Writer) {
	k := ans.Key
	key := k.Domain
	if key == "" {
		key = k.Raw
	}
	if k.Address && k.Domain != "" {
		fmt.Fprintf(w, "# %s: Postfix asks for the address; the answer is that of its domain\n", printable.Line(k.Raw, maxReason))
	}
	used := make([]bool, len(ans.SRV))
	var skipped []lookup.Skipped
	switch ans.Class {
	case Found:
		route := ans.Route
		if route == nil {
			// A .onion domain onionmx cannot use: not a route.
			fmt.Fprintf(w, "# %s: OK %s, an empty nexthop (Postfix passes the domain): %s\n", printable.Line(key, maxReason), ans.Result, printable.Line(ans.Reason, maxReason))
			break
		}
		skipped = route.Skipped
		if len(route.Targets) == 1 {
			t := route.Targets[0]
			fmt.Fprintf(w, "%s\t%s\t# %s%s\n", key, ans.Result, route.Source, prefixed(" ", srvNote(ans.SRV, used, t.Addr())))
			break
		}
		if strings.HasSuffix(ans.Result, ":") {
			fmt.Fprintf(w, "%s\t%s\t# %s: %d targets; the empty nexthop makes deliver look them up again and try them in this order (equal priorities drawn by weight each time)\n",
				key, ans.Result, route.Source, len(route.Targets))
		} else {
			fmt.Fprintf(w, "%s\t%s\t# %s: %d targets, which deliver tries in this order\n", key, ans.Result, route.Source, len(route.Targets))
		}
		for i, t := range route.Targets {
			fmt.Fprintf(w, "#%s\t%s:%s\t# %d%s\n", key, transportOf(ans.Result), t.Nexthop(), i+1, prefixed(": ", srvNote(ans.SRV, used, t.Addr())))
		}
	case NotFound:
		fmt.Fprintf(w, "# %s: NOTFOUND, Postfix uses its next table or its default transport: %s\n", printable.Line(key, maxReason), printable.Line(reasonWithoutSkipped(ans), maxReason))
	case Temp:
		fmt.Fprintf(w, "# %s: TEMP, Postfix defers the mail: %s\n", printable.Line(key, maxReason), printable.Line(reasonWithoutSkipped(ans), maxReason))
	case Perm:
		fmt.Fprintf(w, "# %s: PERM, a malformed key: %s\n", printable.Line(key, maxReason), printable.Line(ans.Reason, maxReason))
	}
	var le *lookup.Error
	if errors.As(ans.Err, &le) && ans.Class != Found {
		skipped = le.Skipped
	}
	for _, s := range skipped {
		note := srvNote(ans.SRV, used, s.Target)
		if note != "" {
			note = " (" + note + ")"
		}
		fmt.Fprintf(w, "#\tskipped %s%s: %s\n", printable.Line(s.Target, maxReason), note, printable.Line(s.Reason, maxReason))
	}
}

// transportOf returns the transport of a transport-map value.
func transportOf(result string) string {
	t, _, _ := strings.Cut(result, ":")
	return t
}

// reasonWithoutSkipped is the reason without the list of skipped targets,
// which Explain lists one per line.
func reasonWithoutSkipped(ans Answer) string {
	var le *lookup.Error
	if errors.As(ans.Err, &le) && len(le.Skipped) > 0 {
		e := *le
		e.Skipped = nil
		return e.Error()
	}
	return ans.Reason
}

// srvNote finds the SRV record a target ("host:port", "host" or ".") came
// from and describes its priority and weight; "" when there is none. Each
// record is matched once.
func srvNote(records []*net.SRV, used []bool, target string) string {
	host, port := target, -1
	if h, p, err := net.SplitHostPort(target); err == nil {
		host = h
		if n, err := strconv.Atoi(p); err == nil {
			port = n
		}
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	for i, r := range records {
		if used[i] || strings.TrimSuffix(strings.ToLower(r.Target), ".") != host || port >= 0 && int(r.Port) != port {
			continue
		}
		used[i] = true
		return fmt.Sprintf("prio %d weight %d", r.Priority, r.Weight)
	}
	return ""
}

func prefixed(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}
