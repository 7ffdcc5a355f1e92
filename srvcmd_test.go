package main

import (
	"testing"

	"github.com/onionmx/onionmx/internal/dnstest"
	"github.com/onionmx/onionmx/internal/oniontest"
)

// TestSRVRecordVerify: srv-record --verify against a DNS server: exit 0
// when DNS publishes the onion and port, 1 when it does not (saying what it
// has instead), 75 when DNS cannot be asked; with --dnssec require, only
// an authenticated answer verifies. The outcome is commented zone-file
// text after the record, so that stdout stays a valid zone fragment.
func TestSRVRecordVerify(t *testing.T) {
	o, other := oniontest.New(), oniontest.New()
	dns := dnstest.New(t)
	dns.Set("_onion-mx._tcp.match.example.", dnstest.Answer{SRV: []dnstest.SRV{{Weight: 5, Port: 25, Target: o}}, AD: true})
	dns.SetSRV("_onion-mx._tcp.several.example.",
		dnstest.SRV{Priority: 10, Weight: 5, Port: 25, Target: other},
		dnstest.SRV{Priority: 0, Weight: 5, Port: 25, Target: o})
	dns.SetSRV("_onion-mx._tcp.wrong.example.",
		dnstest.SRV{Priority: 0, Weight: 5, Port: 2525, Target: o},
		dnstest.SRV{Priority: 10, Weight: 5, Port: 25, Target: other})
	dns.Set("_onion-mx._tcp.nodata.example.", dnstest.NoData)
	dns.Set("_onion-mx._tcp.servfail.example.", dnstest.ServFail)
	dns.SetSRV("_onion-mx._tcp.unsigned.example.", dnstest.SRV{Weight: 5, Port: 25, Target: o})

	record := func(domain string) string {
		return "_onion-mx._tcp." + domain + ". 3600 IN SRV 0 5 25 " + o + ".\n"
	}
	for _, tc := range []struct {
		domain string
		dnssec string
		status int
		out    string
	}{
		{"match.example", "off", 0, "; verified: DNS publishes " + o + " port 25 for match.example\n"},
		{"match.example", "require", 0, "; verified: DNS publishes " + o + " port 25 for match.example, DNSSEC-authenticated\n"},
		{"several.example", "off", 0, "; verified: DNS publishes " + o + " port 25 for several.example\n" +
			"; DNS has 2 records:\n" +
			";\t_onion-mx._tcp.several.example. IN SRV 0 5 25 " + o + ".\n" +
			";\t_onion-mx._tcp.several.example. IN SRV 10 5 25 " + other + ".\n"},
		{"wrong.example", "off", 1, "; not published: DNS does not have " + o + " port 25 for wrong.example; it has instead:\n" +
			";\t_onion-mx._tcp.wrong.example. IN SRV 0 5 2525 " + o + ".\n" +
			";\t_onion-mx._tcp.wrong.example. IN SRV 10 5 25 " + other + ".\n"},
		{"none.example", "off", 1, "; not published: DNS has no record _onion-mx._tcp.none.example. (no such domain (NXDOMAIN))\n"},
		{"nodata.example", "off", 1, "; not published: DNS has no SRV record at _onion-mx._tcp.nodata.example.\n"},
		{"servfail.example", "off", 75, "; cannot verify: server " + dns.Addr() + " answered SERVFAIL\n"},
		{"unsigned.example", "require", 1, "; not verified: answer not authenticated by DNSSEC (the resolver did not set the AD bit)\n"},
	} {
		status, out, errOut := runCmd("", "srv-record", "--domain", tc.domain, "--onion", o, "--verify", "--dns", dns.Addr(), "--dnssec", tc.dnssec)
		if status != tc.status || out != record(tc.domain)+tc.out || errOut != "" {
			t.Errorf("%s, --dnssec %s: exit %d, stdout:\n%s\nstderr %q\nwant exit %d, stdout:\n%s", tc.domain, tc.dnssec, status, out, errOut, tc.status, record(tc.domain)+tc.out)
		}
	}
	for _, q := range dns.Queries() {
		if q.Name == "_onion-mx._tcp.unsigned.example." && !q.DO {
			t.Errorf("query %v without DO", q)
		}
	}
}
