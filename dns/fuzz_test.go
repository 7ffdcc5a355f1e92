package dns

import (
	"errors"
	"net"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// records is an SRVResolver that returns the same records for every name.
// FuzzDNSResponse feeds arbitrary bytes to the answer handling as the
// response, over UDP or TCP, to an SRV query (ID 1, "_onion-mx._tcp.example.org. SRV"). It
// never panics; a message that is not a response carrying that ID and
// question is never an answer; only NOERROR gives records, and with DNSSEC
// required only with a trusted AD bit; and every target that comes out is
// a host name or ".". (What lookup makes of any records: lookup's
// FuzzSRVRecords.)
func FuzzDNSResponse(f *testing.F) {
	o := "2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion."
	ra := dnsmessage.Header{RecursionAvailable: true}
	ad := dnsmessage.Header{RecursionAvailable: true, AuthenticData: true}
	var opt dnsmessage.ResourceHeader
	opt.SetEDNS0(1232, dnsmessage.RCodeSuccess, true)
	optRR := dnsmessage.Resource{Header: opt, Body: &dnsmessage.OPTResource{}}
	for _, msg := range [][]byte{
		message(f, ra, []dnsmessage.Resource{srvRR("_onion-mx._tcp.example.org.", o, 25)}, nil),
		message(f, ad, []dnsmessage.Resource{srvRR("_onion-mx._tcp.example.org.", o, 25), srvRR("_onion-mx._tcp.example.org.", "mx.example.org.", 25)}, []dnsmessage.Resource{optRR}),
		message(f, ad, []dnsmessage.Resource{cnameRR("_onion-mx._tcp.example.org.", "a.example."), srvRR("a.example.", "mail."+o, 2525)}, nil),
		message(f, ra, []dnsmessage.Resource{srvRR("_onion-mx._tcp.example.org.", ".", 0), srvRR("_onion-mx._tcp.example.org.", "expyuzz4wqqyqhjn.onion.", 25)}, nil),
		message(f, dnsmessage.Header{RCode: dnsmessage.RCodeNameError}, nil, nil),
		message(f, dnsmessage.Header{RCode: dnsmessage.RCodeServerFailure}, nil, nil),
		message(f, dnsmessage.Header{Truncated: true}, nil, nil),
		message(f, dnsmessage.Header{}, nil, nil),
	} {
		f.Add(msg, false, false, false)
		f.Add(msg, true, true, true)
	}
	f.Fuzz(func(t *testing.T, msg []byte, require, trusted, tcp bool) {
		network := "udp"
		if tcp {
			network = "tcp"
		}
		resp, err := parseResponse(msg, 1, srvQuestion, network)
		if err != nil {
			return
		}
		if len(msg) < 12 || msg[0] != 0 || msg[1] != 1 || msg[2]&0x80 == 0 {
			t.Fatalf("accepted %x: not a response with ID 1", msg)
		}
		c := &Client{}
		if require {
			c.DNSSEC = DNSSECRequire
		}
		_, srvs, next, err := c.decide(resp, "_onion-mx._tcp.example.org.", nameserver{addr: "192.0.2.1:53", trustAD: trusted})
		var de *net.DNSError
		switch {
		case next:
			if err == nil || len(srvs) != 0 {
				t.Fatalf("asks the next server, with records %v and error %v", srvs, err)
			}
			return
		case err != nil:
			if len(srvs) != 0 {
				t.Fatalf("records %v with error %v", srvs, err)
			}
			if errors.Is(err, ErrNotAuthenticated) && !require {
				t.Fatalf("not authenticated without DNSSEC required")
			}
			if errors.As(err, &de) && de.IsNotFound && resp.rcode != dnsmessage.RCodeNameError {
				t.Fatalf("not found with RCODE %v", resp.rcode)
			}
			return
		}
		if resp.rcode != dnsmessage.RCodeSuccess || resp.truncated && (tcp || len(srvs) > 0) {
			t.Fatalf("records %v from RCODE %v, truncated %v", srvs, resp.rcode, resp.truncated)
		}
		if require && len(srvs) > 0 && (msg[3]&0x20 == 0 || !trusted) {
			t.Fatalf("records %v counted without a trusted AD bit", srvs)
		}
		for _, s := range srvs {
			if s.Target != "." && !isHostName(s.Target) {
				t.Fatalf("target %q is not a host name", s.Target)
			}
		}
	})
}
