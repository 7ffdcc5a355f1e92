package main

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/rogpeppe/go-internal/testscript"

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

// TestScripts runs the command-line scripts in testdata/script. Each script
// gets its own fake Tor SocksPort ($SOCKS) that routes one onion ($ONION)
// to an in-process SMTP sink, which rejects recipients named unknown@ with
// 550 5.1.1. Extra commands:
//
//	exits N prog args...  runs prog and fails unless it exits with status N
//	delivered N           fails unless the sink accepted N messages
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			onion := oniontest.New()
			sink := smtptest.New(t, func(s *smtp.Server) { s.Domain = "recv.test" })
			sink.SetHooks(smtptest.Hooks{Rcpt: func(_ *smtp.Conn, to string) error {
				if strings.HasPrefix(to, "unknown@") {
					return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<" + to + ">: Recipient address rejected: User unknown"}
				}
				return nil
			}})
			socks := sockstest.New(t, func(r sockstest.Request) sockstest.Response {
				if r.Host == onion {
					return sockstest.Response{Dial: sink.Addr}
				}
				return sockstest.Response{Reply: 0xF0}
			})
			env.Setenv("ONION", onion)
			env.Setenv("SOCKS", socks.Addr)
			env.Values["sink"] = sink
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) < 2 {
					ts.Fatalf("usage: exits N prog args...")
				}
				want, err := strconv.Atoi(args[0])
				if err != nil {
					ts.Fatalf("exits: bad status %q", args[0])
				}
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
			},
			"delivered": func(ts *testscript.TestScript, neg bool, args []string) {
				if neg || len(args) != 1 {
					ts.Fatalf("usage: delivered N")
				}
				sink := ts.Value("sink").(*smtptest.Sink)
				if n := len(sink.Messages()); strconv.Itoa(n) != args[0] {
					ts.Fatalf("the sink accepted %d messages, want %s", n, args[0])
				}
			},
		},
	})
}
