package lookup

import (
	"cmp"
	"context"
	"errors"
	"net"
	"slices"
	"strings"

	"github.com/onionmx/onionmx/dns"
)

// What the receiving side publishes: the SRV record that gives a mail
// domain its onion MX, and whether DNS has it (onionmx srv-record).

// SRVName is the owner name of a domain's onion MX record, fully
// qualified: "_onion-mx._tcp.example.org.".
func SRVName(domain string) string { return SRVService + domain + "." }

// Publication is what DNS publishes for a domain's onion MX.
type Publication int

const (
	// Published: DNS has a record for the onion and port.
	Published Publication = iota
	// PublishedOther: DNS has SRV records, none for that onion and port.
	PublishedOther
	// NotPublished: DNS has no SRV record there. Err is the NXDOMAIN
	// error, or nil when the name exists without SRV records.
	NotPublished
	// NotAuthenticated: DNSSEC was required and the answer was not
	// authenticated (Err, dns.ErrNotAuthenticated).
	NotAuthenticated
	// Unknown: DNS could not be asked, or did not answer (Err).
	Unknown
)

// A Verification is what VerifySRV found.
type Verification struct {
	Publication Publication
	Name        string     // the record's owner name, SRVName(domain)
	Records     []*net.SRV // what DNS has, by priority, weight, target, port
	Err         error
}

// VerifySRV asks r whether DNS publishes onion (lower case, no final dot)
// and port as domain's onion MX.
func VerifySRV(ctx context.Context, r SRVResolver, domain, onion string, port int) *Verification {
	v := &Verification{Name: SRVName(domain)}
	_, srvs, err := r.LookupSRV(ctx, "", "", v.Name)
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, dns.ErrNotAuthenticated):
		v.Publication, v.Err = NotAuthenticated, err
		return v
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		v.Publication, v.Err = NotPublished, err
		return v
	case err != nil:
		v.Publication, v.Err = Unknown, err
		return v
	case len(srvs) == 0:
		v.Publication = NotPublished
		return v
	}
	v.Records = slices.Clone(srvs)
	slices.SortFunc(v.Records, func(a, b *net.SRV) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(b.Weight, a.Weight),
			cmp.Compare(a.Target, b.Target), cmp.Compare(a.Port, b.Port))
	})
	v.Publication = PublishedOther
	for _, s := range srvs {
		if strings.TrimSuffix(strings.ToLower(s.Target), ".") == onion && int(s.Port) == port {
			v.Publication = Published
		}
	}
	return v
}
