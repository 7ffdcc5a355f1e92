package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/onionmx/onionmx/deliver"
	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"
	"github.com/onionmx/onionmx/internal/smtptest"
	"github.com/onionmx/onionmx/internal/sockstest"
)

func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		playRole(role) // a helper process of a test; it exits
	}
	testscript.Main(cleanupM{m}, map[string]func(){"onionmx": main})
}

// resolver is the name under which the fake Tor reaches the script's DNS
// server over TCP, for --dns-via-tor.
const resolver = "dns.example:53"

// sinkNames are the SMTP sinks of each script, each behind an onion of
// the same name in the environment (see TestScripts).
var sinkNames = []string{"ONION", "OPEN", "SAFE", "PICKY", "SLOW"}

// TestScripts runs the command-line scripts in testdata/script. Each script
// gets its own fakes, in its environment:
//
//	$SOCKS     a fake Tor SocksPort: each onion below to its SMTP sink,
//	           $RESOLVER to $DNS over TCP, anything else refused (reply F0)
//	$DNS       a DNS server, empty until the script adds records (srv, dns)
//	$RESOLVER  dns.example:53, the resolver's name through Tor
//	$DOWN      an address where nothing listens
//	$ONION     a sink, recv.test, that rejects unknown@ (550 5.1.1), refuse@ (550
//	           5.7.1 no thanks) and long@ (a reply of many long lines)
//	$ONION2    an onion without a service (F0)
//	$SMTP      $ONION's SMTP server itself, host:port: not a SocksPort
//	$OPEN      a sink that accepts every recipient: an open relay
//	$SAFE      a sink that rejects every recipient as relaying (554 5.7.1)
//	$PICKY     a sink that rejects senders in .invalid at RCPT TO (550
//	           5.1.8), and the others' recipients as relaying
//	$SLOW      a sink that answers EHLO after 300ms
//	$MYHOSTNAME this host's name as deliver forms it (deliver.Hostname)
//
// Conditions: [helo-guessed] when that name is a guess (no domain).
// Extra commands:
//
//	exits N prog args...           runs prog and fails unless it exits N
//	delivered [SINK] N             the sink (ONION) accepted N messages
//	sessions SINK N                the sink had N connections
//	mailfrom SINK ADDR             the sink's last MAIL FROM was <ADDR>
//	srv [-ad] NAME PRIO WEIGHT PORT TARGET
//	                               $DNS adds the SRV record to NAME's
//	                               answer (-ad: with the AD bit)
//	dns NAME servfail|nodata       $DNS answers so for NAME
//	dnsq [-n N] [do|nodo|tcp]...   every query $DNS had (N of them) was so
//	dnsreset                       $DNS forgets its queries
//	connects ADDR...               the fake Tor's CONNECTs, in order
//	torlog FILE                    writes them to FILE, one a line:
//	                               "ADDR ATYP USER:PASSWORD"
//	netstrings FILE KEY...         writes socketmap requests for KEYs
func TestScripts(t *testing.T) {
	hostname, qualified := deliver.Hostname()
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			dns := dnstest.New(t)
			sinks := map[string]*sink{}
			routes := map[string]string{resolver: dns.Addr()}
			for _, name := range sinkNames {
				s := newSink(t, name)
				onion := oniontest.New()
				sinks[name], routes[onion+":25"] = s, s.Addr
				env.Setenv(name, onion)
			}
			socks := sockstest.New(t, func(r sockstest.Request) sockstest.Response {
				if addr, ok := routes[r.Addr()]; ok {
					return sockstest.Response{Dial: addr}
				}
				return sockstest.Response{Reply: 0xF0}
			})
			env.Setenv("SMTP", sinks["ONION"].Addr)
			env.Setenv("ONION2", oniontest.New())
			env.Setenv("SOCKS", socks.Addr)
			env.Setenv("DNS", dns.Addr())
			env.Setenv("RESOLVER", resolver)
			env.Setenv("DOWN", sockstest.Closed(t))
			env.Setenv("MYHOSTNAME", hostname)
			env.Values["sinks"] = sinks
			env.Values["dns"] = &scriptDNS{Server: dns, records: map[string][]dnstest.SRV{}}
			env.Values["socks"] = socks
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "helo-guessed" {
				return !qualified, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":      cmdExits,
			"delivered":  cmdDelivered,
			"sessions":   cmdSessions,
			"mailfrom":   cmdMailFrom,
			"srv":        cmdSRV,
			"dns":        cmdDNS,
			"dnsq":       cmdDNSQueries,
			"dnsreset":   func(ts *testscript.TestScript, _ bool, _ []string) { ts.Value("dns").(*scriptDNS).Reset() },
			"connects":   cmdConnects,
			"torlog":     cmdTorLog,
			"netstrings": cmdNetstrings,
		},
	})
}

// A sink is a script's SMTP server, with the last MAIL FROM it saw.
type sink struct {
	*smtptest.Sink
	mu   sync.Mutex
	from string
}

// newSink starts the sink called name (TestScripts).
func newSink(t *testing.T, name string) *sink {
	domain := strings.ToLower(name) + ".test"
	if name == "ONION" {
		domain = "recv.test"
	}
	s := &sink{Sink: smtptest.New(t, func(srv *smtp.Server) { srv.Domain = domain })}
	relayDenied := func(to string) error {
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "<" + to + ">: Relay access denied"}
	}
	h := smtptest.Hooks{Mail: func(_ *smtp.Conn, from string) error {
		s.mu.Lock()
		s.from = from
		s.mu.Unlock()
		return nil
	}}
	switch name {
	case "ONION":
		long := strings.Repeat("very long reason ", 100)
		h.Rcpt = func(_ *smtp.Conn, to string) error {
			switch {
			case strings.HasPrefix(to, "unknown@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + to + ">: Recipient address rejected: User unknown"}
			case strings.HasPrefix(to, "refuse@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no thanks"}
			case strings.HasPrefix(to, "long@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: long + "\n" + long + "\n" + long}
			}
			return nil
		}
	case "SAFE":
		h.Rcpt = func(_ *smtp.Conn, to string) error { return relayDenied(to) }
	case "PICKY":
		// Postfix's smtpd_delay_reject: the sender restrictions answer
		// at RCPT TO.
		h.Rcpt = func(_ *smtp.Conn, to string) error {
			s.mu.Lock()
			from := s.from
			s.mu.Unlock()
			if strings.HasSuffix(from, ".invalid") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 8}, Message: "<" + from + ">: Sender address rejected: Domain not found"}
			}
			return relayDenied(to)
		}
	case "SLOW":
		h.Hello = func(*smtp.Conn) error { time.Sleep(300 * time.Millisecond); return nil }
	}
	s.SetHooks(h)
	return s
}

func scriptSink(ts *testscript.TestScript, name string) *sink {
	s, ok := ts.Value("sinks").(map[string]*sink)[name]
	if !ok {
		ts.Fatalf("no sink %q", name)
	}
	return s
}

func wantInt(ts *testscript.TestScript, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		ts.Fatalf("%q is not a number", s)
	}
	return n
}

func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits N prog args...")
	}
	want := wantInt(ts, args[0])
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exits: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
}

func cmdDelivered(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) == 1 {
		args = []string{"ONION", args[0]}
	}
	if neg || len(args) != 2 {
		ts.Fatalf("usage: delivered [SINK] N")
	}
	if n := len(scriptSink(ts, args[0]).Messages()); n != wantInt(ts, args[1]) {
		ts.Fatalf("%s accepted %d messages, want %s", args[0], n, args[1])
	}
}

func cmdSessions(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: sessions SINK N")
	}
	if n := scriptSink(ts, args[0]).Connections(); n != wantInt(ts, args[1]) {
		ts.Fatalf("%s had %d sessions, want %s", args[0], n, args[1])
	}
}

func cmdMailFrom(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mailfrom SINK ADDR")
	}
	s := scriptSink(ts, args[0])
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.from != args[1] {
		ts.Fatalf("the last MAIL FROM of %s was <%s>, want <%s>", args[0], s.from, args[1])
	}
}

// scriptDNS is a script's DNS server, with the SRV records srv gave it.
type scriptDNS struct {
	*dnstest.Server
	records map[string][]dnstest.SRV
}

func cmdSRV(ts *testscript.TestScript, neg bool, args []string) {
	ad := len(args) > 0 && args[0] == "-ad"
	if ad {
		args = args[1:]
	}
	if neg || len(args) != 5 {
		ts.Fatalf("usage: srv [-ad] NAME PRIO WEIGHT PORT TARGET")
	}
	d := ts.Value("dns").(*scriptDNS)
	n := func(s string) uint16 { return uint16(wantInt(ts, s)) }
	name := args[0]
	d.records[name] = append(d.records[name], dnstest.SRV{Priority: n(args[1]), Weight: n(args[2]), Port: n(args[3]), Target: args[4]})
	d.Set(name, dnstest.Answer{SRV: d.records[name], AD: ad})
}

func cmdDNS(ts *testscript.TestScript, neg bool, args []string) {
	answers := map[string]dnstest.Answer{"servfail": dnstest.ServFail, "nodata": dnstest.NoData}
	a, ok := dnstest.Answer{}, false
	if len(args) == 2 {
		a, ok = answers[args[1]]
	}
	if neg || !ok {
		ts.Fatalf("usage: dns NAME servfail|nodata")
	}
	ts.Value("dns").(*scriptDNS).Set(args[0], a)
}

func cmdDNSQueries(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("usage: dnsq [-n N] [do|nodo|tcp]...")
	}
	qs := ts.Value("dns").(*scriptDNS).Queries()
	if len(args) >= 2 && args[0] == "-n" {
		if len(qs) != wantInt(ts, args[1]) {
			ts.Fatalf("%d queries %v, want %s", len(qs), qs, args[1])
		}
		args = args[2:]
	}
	if len(qs) == 0 {
		ts.Fatalf("no DNS queries")
	}
	for _, q := range qs {
		for _, want := range args {
			ok := map[string]bool{"do": q.DO, "nodo": !q.DO, "tcp": q.Net == "tcp"}
			if v, known := ok[want]; !known {
				ts.Fatalf("dnsq: unknown property %q", want)
			} else if !v {
				ts.Fatalf("query %v is not %s", q, want)
			}
		}
	}
}

func torRequests(ts *testscript.TestScript) []sockstest.Request {
	return ts.Value("socks").(*sockstest.Server).Requests()
}

func cmdConnects(ts *testscript.TestScript, neg bool, args []string) {
	var got []string
	for _, r := range torRequests(ts) {
		got = append(got, r.Addr())
	}
	if neg || strings.Join(got, " ") != strings.Join(args, " ") {
		ts.Fatalf("CONNECTs %v, want %v", got, args)
	}
}

func cmdTorLog(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: torlog FILE")
	}
	var b strings.Builder
	for _, r := range torRequests(ts) {
		fmt.Fprintf(&b, "%s %d %s:%s\n", r.Addr(), r.ATYP, r.User, r.Password)
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(b.String()), 0o644))
}

func cmdNetstrings(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: netstrings FILE KEY...")
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(netstrings(args[1:]...)), 0o644))
}

// netstrings encodes socketmap requests for the onionmx map.
func netstrings(keys ...string) string {
	var b strings.Builder
	for _, k := range keys {
		req := "onionmx " + k
		fmt.Fprintf(&b, "%d:%s,", len(req), req)
	}
	return b.String()
}
