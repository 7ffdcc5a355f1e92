package main

import (
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/onionmx/onionmx/table"
)

// TestEximExampleReadsocketTimeout: the routers of exim4.conf.example wait
// for the lookup server longer than the server takes at most to answer a
// key whose DNS does not answer (table.DefaultTimeout). Otherwise Exim
// gives up first, and logs "condition check lookup defer" instead of the
// server's TEMP and its reason.
func TestEximExampleReadsocketTimeout(t *testing.T) {
	b, err := os.ReadFile("exim4.conf.example")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ONIONMX_ANSWER = \$\{readsocket\{.*\}\{([0-9]+s)(:[^{}]*)?\}\}$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("no ONIONMX_ANSWER = ${readsocket{...}{...}{TIMEOUT...}} line in exim4.conf.example")
	}
	d, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if d <= table.DefaultTimeout {
		t.Errorf("the routers' readsocket waits %v, the lookup server may take %v to answer: Exim gives up first", d, table.DefaultTimeout)
	}
}
