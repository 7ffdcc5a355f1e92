package check

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/onionmx/onionmx/internal/printable"
)

// The output follows the monitoring-plugin format: one status line,
// "ONIONMX <STATUS> - <summary> | <performance data>", then one line per
// target (the "long text"). The performance data has one entry per target:
//
//	'<label>'=<seconds>s;<warn>;<crit>;0;<timeout>
//
// in seconds, from the start of the connect to the end of the reply to
// EHLO, with the thresholds as plain numbers in the same unit, and the
// value "U" (undetermined, without a unit) for a target that did not
// answer. The text never contains "|", which would start performance data.

// NotTried is the outcome of the targets of a check whose SocksPort probe
// failed.
const NotTried Outcome = -1

// verdict decides the status and the summary from the results; see the
// package documentation.
func verdict(r *Report) (Status, string) {
	if r.Probe != nil {
		// oneLine: a SocksPort's path may hold a "|".
		if isPermission(r.Probe) {
			return Unknown, oneLine(r.Probe.Error()) + " (a configuration problem: run as a user that may open it)"
		}
		return Critical, oneLine(r.Probe.Error()) + "; no target tried"
	}
	var (
		open, inconclusive, slow, failed []string
		internal, noRoute                []string
		tried, answered, refused         int
		slowest                          time.Duration
	)
	for _, res := range r.Results {
		switch res.Outcome {
		case NoRoute:
			noRoute = append(noRoute, res.Label+": "+res.Detail)
			failed = append(failed, res.Label+" (no route)")
		case Internal:
			internal = append(internal, res.Label+": "+res.Detail)
		case Refused:
			tried++
			refused++
			failed = append(failed, res.Label)
		case Transit:
			tried++
			failed = append(failed, res.Label)
		case Answered:
			tried++
			switch {
			case res.Elapsed > r.Crit:
				failed = append(failed, fmt.Sprintf("%s (%s > --crit %s)", res.Label, seconds(res.Elapsed), seconds(r.Crit)))
			case res.Elapsed > r.Warn:
				slow = append(slow, fmt.Sprintf("%s (%s > --warn %s)", res.Label, seconds(res.Elapsed), seconds(r.Warn)))
				fallthrough
			default:
				answered++
				slowest = max(slowest, res.Elapsed)
			}
		}
		switch res.Relay {
		case RelayOpen:
			open = append(open, res.Label)
		case RelayInconclusive:
			inconclusive = append(inconclusive, res.Label)
		}
	}
	total := len(r.Results)
	var parts []string
	if len(open) > 0 {
		parts = append(parts, fmt.Sprintf("OPEN RELAY: %s accepted RCPT TO:<%s>, a foreign domain, from anyone on the Tor network",
			strings.Join(open, ", "), ProbeAddress))
	}
	count := fmt.Sprintf("%d of %d targets answered EHLO", answered, total)
	if answered > 0 {
		count += " (slowest " + seconds(slowest) + ")"
	}
	parts = append(parts, count)
	if len(failed) > 0 {
		parts = append(parts, "failed: "+strings.Join(failed, ", "))
	}
	if len(slow) > 0 {
		parts = append(parts, "slow: "+strings.Join(slow, ", "))
	}
	if len(inconclusive) > 0 {
		parts = append(parts, "relay test inconclusive: "+strings.Join(inconclusive, ", "))
	}
	summary := strings.Join(parts, "; ")
	switch {
	case len(open) > 0:
		return Critical, summary
	case len(internal) > 0:
		return Unknown, strings.Join(internal, "; ")
	case tried == 0:
		return Unknown, "no target could be checked: " + strings.Join(noRoute, "; ")
	case answered == 0 && refused == 0:
		return Critical, summary + "; none answered through Tor: the local Tor is the common factor"
	case answered == 0:
		summary += "; Tor works: the far end answered, with an error"
	}
	if len(failed) > 0 || len(slow) > 0 || len(inconclusive) > 0 {
		return Warning, summary
	}
	if r.RelayTest {
		summary += "; none relays to a foreign domain"
	}
	return OK, summary
}

// Write writes the plugin output.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "ONIONMX %s - %s", r.Status, oneLine(r.Summary))
	if len(r.Results) > 0 {
		b.WriteString(" |")
		for _, res := range r.Results {
			b.WriteByte(' ')
			b.WriteString(r.perfdata(res))
		}
	}
	b.WriteByte('\n')
	for _, res := range r.Results {
		b.WriteString(oneLine(res.Label + ": " + r.longText(res)))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteUnknown writes the output of a check that could not run: a usage
// or configuration error.
func WriteUnknown(w io.Writer, msg string) error {
	_, err := fmt.Fprintf(w, "ONIONMX UNKNOWN - %s\n", oneLine(msg))
	return err
}

func (r *Report) perfdata(res Result) string {
	value := "U"
	if res.Outcome == Answered {
		value = strconv.FormatFloat(res.Elapsed.Seconds(), 'f', 3, 64) + "s"
	}
	return fmt.Sprintf("%s=%s;%s;%s;0;%s", perfLabel(res.Label), value,
		number(r.Warn), number(r.Crit), number(r.Timeout))
}

// perfLabel quotes a label. The guidelines allow anything but "=" inside
// quotes (a quote doubled); Icinga's advise against quotes, "=" and spaces
// altogether, so those become "_".
func perfLabel(l string) string {
	l = strings.Map(func(r rune) rune {
		if r <= ' ' || r == '\'' || r == '=' || r == '|' || r == 0x7f {
			return '_'
		}
		return r
	}, l)
	return "'" + l + "'"
}

func (r *Report) longText(res Result) string {
	var s string
	switch res.Outcome {
	case NotTried:
		return "NOT CHECKED - the SocksPort does not work"
	case NoRoute:
		return "NO ROUTE - " + res.Detail
	case Internal:
		return "UNKNOWN - " + res.Detail
	case Transit, Refused:
		s = "FAILED - " + res.Detail
	case Answered:
		word, note := "OK", ""
		switch {
		case res.Elapsed > r.Crit:
			word, note = "FAILED", ", more than --crit "+seconds(r.Crit)
		case res.Elapsed > r.Warn:
			word, note = "SLOW", ", more than --warn "+seconds(r.Warn)
		}
		if res.Relay == RelayOpen {
			word = "OPEN RELAY"
		}
		s = fmt.Sprintf("%s - EHLO answered in %s%s (connect %s)", word, seconds(res.Elapsed), note, seconds(res.Connect))
	}
	if res.Greeting != "" {
		s += "; greeting: " + res.Greeting
	}
	if !strings.Contains(strings.ToLower(res.Arg), res.Target.Host) {
		s += fmt.Sprintf("; target %s from %s", res.Target.Nexthop(), res.Source)
	}
	switch res.Relay {
	case RelayOpen:
		s += "; relay test failed: " + res.RelayDetail
	case RelayRejected:
		s += "; relay test passed: " + res.RelayDetail
	case RelayInconclusive:
		s += "; relay test inconclusive: " + res.RelayDetail
	}
	return s
}

// seconds formats a duration in seconds with milliseconds: "1.234s".
func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "s"
}

// number formats a threshold in seconds without a unit: "20", "0.5".
func number(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}

// isPermission reports a SocksPort that exists but may not be opened by
// this user: a configuration problem, not a broken Tor.
func isPermission(err error) bool { return errors.Is(err, fs.ErrPermission) }

// maxText bounds each piece of remote text in the output.
const maxText = 300

// clean makes a piece of remote text fit the output: one printable line
// (printable.Line), short.
func clean(s string) string { return oneLine(printable.Line(s, maxText)) }

// oneLine keeps a line of the output, made of pieces already bounded,
// printable and on one line, without "|", which would start the
// performance data.
func oneLine(s string) string { return strings.ReplaceAll(printable.Line(s, len(s)), "|", "/") }
