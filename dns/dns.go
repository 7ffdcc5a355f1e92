// Package dns is onionmx's DNS client: it asks for SRV records, over UDP
// and TCP to the system's resolvers or to one server, or as DNS over TCP
// through Tor; it parses the answers itself, in bounded memory, and can
// require them authenticated by DNSSEC (the AD bit of a validating
// resolver).
package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/onionmx/onionmx/internal/timeout"
)

// DNSSEC says whether SRV answers must be authenticated.
type DNSSEC int

const (
	// DNSSECOff takes SRV answers as they come.
	DNSSECOff DNSSEC = iota
	// DNSSECRequire counts SRV records only when the resolver says it
	// validated them (the AD bit, RFC 4035 section 3.2.3); otherwise the
	// domain has no onion route.
	DNSSECRequire
)

func (d DNSSEC) String() string {
	if d == DNSSECRequire {
		return "require"
	}
	return "off"
}

// ParseDNSSEC parses a DNSSEC mode: "off" or "require". Its error says
// what is wanted; the caller names the value and where it came from.
func ParseDNSSEC(s string) (DNSSEC, error) {
	switch s {
	case "", "off":
		return DNSSECOff, nil
	case "require":
		return DNSSECRequire, nil
	}
	return 0, errors.New("want off or require")
}

// ErrNotAuthenticated is the cause of a lookup error when DNSSEC is
// required and the resolver did not vouch for the SRV records.
var ErrNotAuthenticated = errors.New("answer not authenticated by DNSSEC")

// Defaults and limits of the resolver configuration, from resolv.conf(5)
// and glibc's resolv.h.
const (
	// DefaultTimeout is the wait for one server's answer (RES_TIMEOUT).
	DefaultTimeout = 5 * time.Second
	// DefaultAttempts is how often each server is asked (RES_DFLRETRY).
	DefaultAttempts = 2
	// maxDNSTimeout and maxDNSAttempts cap "options timeout:" and
	// "options attempts:" (RES_MAXRETRANS, RES_MAXRETRY).
	maxDNSTimeout  = 30 * time.Second
	maxDNSAttempts = 5
	// maxNameservers is how many "nameserver" lines count (MAXNS).
	maxNameservers = 3
	// DefaultResolvConf is the system's resolver configuration.
	DefaultResolvConf = "/etc/resolv.conf"
)

// ViaTorTimeout is the wait for one answer through Tor. The first query
// may have to build a circuit to an exit before its stream opens, which
// takes seconds, not the milliseconds a local resolver takes; two attempts
// fit in the 30 s a lookup server gives one key.
const ViaTorTimeout = 15 * time.Second

// ednsUDPSize is the UDP payload size advertised with EDNS(0): the 1232
// bytes of DNS Flag Day 2020, which avoid IP fragmentation. A larger answer
// comes truncated and is asked again over TCP.
const ednsUDPSize = 1232

// maxCNAMEs bounds the CNAME chain followed inside one answer.
const maxCNAMEs = 8

// Client looks up SRV records by sending its own queries, so that it can
// ask for DNSSEC (the DO bit, RFC 3225) and read the answer's AD bit, which
// Go's resolver does not expose, and so that a query can travel through a
// SOCKS proxy. It is the SRVResolver onionmx uses.
//
// Each attempt asks every server in turn, over UDP with a random ID, and
// again over TCP when the answer is truncated; a response whose ID or
// question do not match the query is ignored. NXDOMAIN ends the lookup (the
// name does not exist, whoever is asked), as does any other answer; SERVFAIL,
// REFUSED, a lame referral, garbage or silence moves on to the next server,
// and when none answered the lookup fails with a temporary *net.DNSError.
// Returned records whose target is not a host name are dropped, as Go's
// resolver drops them.
//
// Its methods are safe for concurrent use.
type Client struct {
	// Servers are the name servers, "host:port", asked in order. With
	// none, those of ResolvConf are asked, read at every lookup.
	Servers []string
	// ResolvConf is the resolver configuration used without Servers; ""
	// means DefaultResolvConf. Its nameserver lines (at most 3) and the
	// options timeout:, attempts:, use-vc and trust-ad count.
	ResolvConf string
	// Dial connects to a server, network "udp" or "tcp". nil dials
	// directly; through Tor it is the SOCKS dialer, with TCP set.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TCP sends every query over TCP (RFC 7766), never UDP: the only way
	// through a SOCKS proxy.
	TCP bool
	// DNSSEC, when DNSSECRequire, sets the DO bit and counts SRV records
	// only when the answer has the AD bit set.
	DNSSEC DNSSEC
	// Timeout is the wait for one answer and Attempts the number of
	// rounds over the servers; zero means resolv.conf's value, or the
	// defaults above.
	Timeout  time.Duration
	Attempts int
}

// nameserver is a server to ask and whether its AD bit is believed.
type nameserver struct {
	addr    string
	trustAD bool
}

// dnsConfig is what one lookup goes by.
type dnsConfig struct {
	servers  []nameserver
	timeout  time.Duration
	attempts int
	tcp      bool
}

// config returns the servers and limits for one lookup.
func (c *Client) config() (*dnsConfig, error) {
	conf := &dnsConfig{timeout: DefaultTimeout, attempts: DefaultAttempts, tcp: c.TCP}
	if len(c.Servers) > 0 {
		// A server the administrator named (--dns, --dns-via-tor) is
		// trusted to validate: that is what naming it with --dnssec
		// require means.
		for _, s := range c.Servers {
			conf.servers = append(conf.servers, nameserver{addr: s, trustAD: true})
		}
	} else {
		path := c.ResolvConf
		if path == "" {
			path = DefaultResolvConf
		}
		rc, err := ReadResolvConf(path)
		if err != nil {
			return nil, err
		}
		for _, s := range rc.Servers {
			// As glibc since 2.31, the AD bit of a system resolver counts
			// only with "options trust-ad", which says the path to it is
			// safe; a resolver on this machine needs no such promise.
			conf.servers = append(conf.servers, nameserver{addr: s, trustAD: rc.TrustAD || isLoopback(s)})
		}
		conf.timeout, conf.attempts = rc.Timeout, rc.Attempts
		conf.tcp = conf.tcp || rc.UseVC
	}
	if c.Timeout > 0 {
		conf.timeout = c.Timeout
	}
	if c.Attempts > 0 {
		conf.attempts = c.Attempts
	}
	return conf, nil
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// ResolvConf is the part of resolv.conf(5) that SRV lookups of fully
// qualified names depend on (search domains and ndots do not apply).
type ResolvConf struct {
	Servers  []string // "ip:53", at most 3
	Timeout  time.Duration
	Attempts int
	UseVC    bool // options use-vc: TCP only
	TrustAD  bool // options trust-ad: the servers' AD bit is believed
}

// ReadResolvConf reads a resolv.conf(5) file. A file that does not exist,
// or names no server, means the local server (127.0.0.1 and ::1), as for
// glibc and Go.
func ReadResolvConf(path string) (*ResolvConf, error) {
	rc := &ResolvConf{Timeout: DefaultTimeout, Attempts: DefaultAttempts}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading resolver configuration: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			ip, err := netip.ParseAddr(f[1])
			if err != nil || len(rc.Servers) >= maxNameservers {
				continue
			}
			rc.Servers = append(rc.Servers, net.JoinHostPort(ip.String(), "53"))
		case "options":
			for _, o := range f[1:] {
				switch name, val, _ := strings.Cut(o, ":"); name {
				case "timeout":
					if n, err := strconv.Atoi(val); err == nil {
						rc.Timeout = min(max(time.Duration(n)*time.Second, time.Second), maxDNSTimeout)
					}
				case "attempts":
					if n, err := strconv.Atoi(val); err == nil {
						rc.Attempts = min(max(n, 1), maxDNSAttempts)
					}
				case "use-vc", "usevc", "tcp":
					rc.UseVC = true
				case "trust-ad":
					rc.TrustAD = true
				}
			}
		}
	}
	if len(rc.Servers) == 0 {
		rc.Servers = []string{"127.0.0.1:53", "[::1]:53"}
	}
	return rc, nil
}

// LookupSRV looks up the SRV records of _service._proto.name, or of name
// when service and proto are empty. It returns the owner name of the
// records (after CNAMEs), the records in the order of the answer, targets
// with their trailing dot, and:
//   - no records and no error for a name without SRV data (NODATA);
//   - a *net.DNSError with IsNotFound for a name that does not exist;
//   - a *net.DNSError wrapping ErrNotAuthenticated when DNSSEC is
//     required and the records are not authenticated;
//   - a temporary *net.DNSError when no server gave an answer.
func (c *Client) LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
	target := name
	if service != "" || proto != "" {
		target = "_" + service + "._" + proto + "." + name
	}
	if !strings.HasSuffix(target, ".") {
		target += "."
	}
	qname, err := dnsmessage.NewName(target)
	if err != nil || !isHostName(target) {
		return "", nil, &net.DNSError{Err: "not a valid domain name", Name: target, IsNotFound: true}
	}
	conf, err := c.config()
	if err != nil {
		return "", nil, &net.DNSError{Err: err.Error(), Name: target, IsTemporary: true}
	}
	q := dnsmessage.Question{Name: qname, Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET}
	var last error
	for range conf.attempts {
		for _, s := range conf.servers {
			if ctx.Err() != nil {
				if last == nil {
					last = &net.DNSError{Err: "timed out", Name: target, IsTimeout: true, IsTemporary: true}
				}
				return "", nil, last
			}
			resp, err := c.exchange(ctx, s.addr, q, conf)
			if err != nil {
				last = &net.DNSError{Err: exchangeError(s.addr, err), Name: target, Server: s.addr,
					IsTimeout: timeout.Is(err), IsTemporary: true}
				continue
			}
			cname, srvs, next, err := c.decide(resp, target, s)
			if next {
				last = err
				continue
			}
			return cname, srvs, err
		}
	}
	return "", nil, last
}

// decide turns a response into LookupSRV's results; next says that the
// response is no answer, and the next server is to be asked. It is all of
// the answer handling after parsing (FuzzDNSResponse).
func (c *Client) decide(resp *response, name string, s nameserver) (cname string, srvs []*net.SRV, next bool, err error) {
	dnsErr := func(text string) *net.DNSError {
		return &net.DNSError{Err: text, Name: name, Server: s.addr, IsTemporary: true}
	}
	switch {
	case resp.rcode == dnsmessage.RCodeNameError:
		return "", nil, false, &net.DNSError{Err: "no such domain (NXDOMAIN)", Name: name, Server: s.addr, IsNotFound: true}
	case resp.rcode == dnsmessage.RCodeServerFailure:
		return "", nil, true, dnsErr("server " + s.addr + " answered SERVFAIL")
	case resp.rcode != dnsmessage.RCodeSuccess:
		return "", nil, true, dnsErr("server " + s.addr + " answered " + rcodeName(resp.rcode))
	case resp.lame:
		// An answer that neither answers nor recurses: as glibc and Go,
		// ask the next server.
		return "", nil, true, dnsErr("server " + s.addr + " gave a lame referral")
	}
	if len(resp.srvs) > 0 && c.DNSSEC == DNSSECRequire {
		if !resp.ad {
			return "", nil, false, &net.DNSError{Err: ErrNotAuthenticated.Error() + " (the resolver did not set the AD bit)",
				Name: name, Server: s.addr, UnwrapErr: ErrNotAuthenticated}
		}
		if !s.trustAD {
			return "", nil, false, &net.DNSError{Err: ErrNotAuthenticated.Error() + " (the AD bit of " + s.addr +
				" is not trusted: it is not on this machine, and resolv.conf has no \"options trust-ad\")",
				Name: name, Server: s.addr, UnwrapErr: ErrNotAuthenticated}
		}
	}
	return resp.cname, resp.srvs, false, nil
}

func rcodeName(r dnsmessage.RCode) string {
	switch r {
	case dnsmessage.RCodeFormatError:
		return "FORMERR"
	case dnsmessage.RCodeNotImplemented:
		return "NOTIMP"
	case dnsmessage.RCodeRefused:
		return "REFUSED"
	}
	return "RCODE " + strconv.Itoa(int(r))
}

func exchangeError(server string, err error) string {
	if timeout.Is(err) {
		return "no answer from " + server + " (timed out)"
	}
	return "asking " + server + ": " + err.Error()
}

// errMismatch is a response that does not answer our query: another ID,
// another question, or not a DNS response at all. Over UDP it is ignored
// (it may be a forgery guessing the ID), as Go and glibc ignore it.
var errMismatch = errors.New("response does not match the query")

// exchange asks one server one question, within the configured timeout.
func (c *Client) exchange(ctx context.Context, server string, q dnsmessage.Question, conf *dnsConfig) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, conf.timeout)
	defer cancel()
	id := uint16(rand.Uint32())
	query, err := c.query(id, q)
	if err != nil {
		return nil, err
	}
	if !conf.tcp {
		resp, err := c.roundTrip(ctx, "udp", server, query, id, q)
		if err != nil || !resp.truncated {
			return resp, err
		}
		// Truncated: ask again over TCP (RFC 7766), with a new ID.
		id = uint16(rand.Uint32())
		if query, err = c.query(id, q); err != nil {
			return nil, err
		}
	}
	return c.roundTrip(ctx, "tcp", server, query, id, q)
}

// query builds the query message: recursion desired, EDNS(0), and with
// DNSSEC required the DO bit and the AD bit (RFC 6840 section 5.7: the
// client wants to know whether the answer was validated).
func (c *Client) query(id uint16, q dnsmessage.Question) ([]byte, error) {
	require := c.DNSSEC == DNSSECRequire
	b := dnsmessage.NewBuilder(make([]byte, 2, 128), dnsmessage.Header{ID: id, RecursionDesired: true, AuthenticData: require})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAdditionals(); err != nil {
		return nil, err
	}
	var opt dnsmessage.ResourceHeader
	if err := opt.SetEDNS0(ednsUDPSize, dnsmessage.RCodeSuccess, require); err != nil {
		return nil, err
	}
	if err := b.OPTResource(opt, dnsmessage.OPTResource{}); err != nil {
		return nil, err
	}
	msg, err := b.Finish()
	if err != nil {
		return nil, err
	}
	// The first two bytes are room for the TCP length prefix.
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
	return msg, nil
}

// roundTrip sends query (with its 2-byte length prefix) over network and
// reads the response to it.
func (c *Client) roundTrip(ctx context.Context, network, server string, query []byte, id uint16, q dnsmessage.Question) (*response, error) {
	dial := c.Dial
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	conn, err := dial(ctx, network, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	resp, err := c.readResponse(conn, network, query, id, q)
	if err != nil && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return resp, err
}

func (c *Client) readResponse(conn net.Conn, network string, query []byte, id uint16, q dnsmessage.Question) (*response, error) {
	if network == "tcp" {
		if _, err := conn.Write(query); err != nil {
			return nil, err
		}
		var l [2]byte
		if _, err := io.ReadFull(conn, l[:]); err != nil {
			return nil, err
		}
		msg := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(conn, msg); err != nil {
			return nil, err
		}
		return parseResponse(msg, id, q, network)
	}
	if _, err := conn.Write(query[2:]); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		resp, err := parseResponse(buf[:n], id, q, network)
		if errors.Is(err, errMismatch) {
			// Someone else's answer, or a forgery guessing our ID: wait
			// for ours, as Go and glibc do.
			continue
		}
		return resp, err
	}
}

// response is what an answer to an SRV query says.
type response struct {
	rcode     dnsmessage.RCode // extended with the OPT record's bits
	ad        bool             // the resolver validated the answer
	truncated bool
	lame      bool // no answer, not authoritative, no recursion
	cname     string
	srvs      []*net.SRV
}

// parseResponse reads msg, received over network ("udp" or "tcp"), as the
// response to query id with question q. It returns errMismatch when msg
// answers something else, and another error when its records cannot be
// parsed. The SRV records are those of the question's name, or of the end
// of the CNAME chain from it; records of other names and records whose
// target is not a host name are left out. A truncated UDP response is
// returned as such, unread.
func parseResponse(msg []byte, id uint16, q dnsmessage.Question, network string) (*response, error) {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil {
		return nil, errMismatch
	}
	if !h.Response || h.ID != id || h.OpCode != 0 {
		return nil, errMismatch
	}
	rq, err := p.Question()
	if err != nil || rq.Type != q.Type || rq.Class != q.Class || !strings.EqualFold(rq.Name.String(), q.Name.String()) {
		return nil, errMismatch
	}
	if err := p.SkipAllQuestions(); err != nil {
		return nil, errMismatch
	}
	resp := &response{rcode: h.RCode, ad: h.AuthenticData}
	if h.Truncated && network == "udp" {
		// The answer is incomplete; it is asked again over TCP. Over
		// TCP the flag is ignored, as Go ignores it: nothing is longer.
		resp.truncated = true
		return resp, nil
	}

	cnames := map[string]string{}
	type owned struct {
		owner string
		srv   *net.SRV
	}
	var all []owned
	answers := 0
	for {
		rh, err := p.AnswerHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("cannot parse DNS response: %w", err)
		}
		answers++
		owner := strings.ToLower(rh.Name.String())
		switch {
		case rh.Class != dnsmessage.ClassINET:
			err = p.SkipAnswer()
		case rh.Type == dnsmessage.TypeCNAME:
			var r dnsmessage.CNAMEResource
			if r, err = p.CNAMEResource(); err == nil {
				cnames[owner] = strings.ToLower(r.CNAME.String())
			}
		case rh.Type == dnsmessage.TypeSRV:
			var r dnsmessage.SRVResource
			if r, err = p.SRVResource(); err == nil {
				all = append(all, owned{owner, &net.SRV{Target: r.Target.String(), Port: r.Port, Priority: r.Priority, Weight: r.Weight}})
			}
		default:
			err = p.SkipAnswer() // RRSIGs among them
		}
		if err != nil {
			return nil, fmt.Errorf("cannot parse DNS response: %w", err)
		}
	}
	// The extended RCODE is in the OPT record (RFC 6891 section 6.1.3).
	// The sections after the answers are not needed otherwise; damage
	// there is ignored, as Go's resolver ignores it.
	hasAdditional := false
	if p.SkipAllAuthorities() == nil {
		for {
			rh, err := p.AdditionalHeader()
			if err != nil {
				break
			}
			hasAdditional = true
			if rh.Type == dnsmessage.TypeOPT {
				resp.rcode = rh.ExtendedRCode(h.RCode)
			}
			if p.SkipAdditional() != nil {
				break
			}
		}
	}
	resp.lame = resp.rcode == dnsmessage.RCodeSuccess && !h.Authoritative && !h.RecursionAvailable && answers == 0 && !hasAdditional

	name := strings.ToLower(q.Name.String())
	for range maxCNAMEs {
		next, ok := cnames[name]
		if !ok {
			break
		}
		name = next
	}
	resp.cname = name
	for _, o := range all {
		if o.owner == name && (o.srv.Target == "." || isHostName(o.srv.Target)) {
			resp.srvs = append(resp.srvs, o.srv)
		}
	}
	return resp, nil
}

// isHostName reports whether s, fully qualified, is a host name: labels of
// 1 to 63 letters, digits, hyphens and underscores (as in SRV owner names),
// 254 bytes at most with the final dot.
func isHostName(s string) bool {
	if len(s) < 2 || len(s) > 254 || !strings.HasSuffix(s, ".") {
		return false
	}
	for _, label := range strings.Split(s[:len(s)-1], ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
