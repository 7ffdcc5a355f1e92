// Package dnstest is an in-process DNS server for tests. It answers over
// UDP and TCP on one loopback port with answers set per name (SRV records,
// NXDOMAIN, SERVFAIL, NODATA, a delay, no answer at all), and records every
// query it receives, so that a test can prove that a name was never looked
// up: that mapped and .onion destinations do not leak to DNS.
//
// Typical use:
//
//	dns := dnstest.New(t)
//	dns.SetSRV("_onion-mx._tcp.example.org.", dnstest.SRV{Port: 25, Target: onion})
//	dns.Set("_onion-mx._tcp.broken.example.", dnstest.ServFail)
//	r := &lookup.Resolver{DNS: dns.Resolver()}
//	...
//	if q := dns.Queries(); len(q) != 0 { t.Errorf("unexpected queries %v", q) }
//
// An answer with AD set stands for a validating resolver's answer for a
// signed zone; Query records whether the query carried the DO bit.
//
// Names are compared without regard to case, with or without the trailing
// dot. A name without an answer gets the default answer, NXDOMAIN unless
// SetDefault changes it.
package dnstest

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// SRV is one SRV record (RFC 2782).
type SRV struct {
	Priority uint16
	Weight   uint16
	Port     uint16
	// Target is a host name, with or without the trailing dot; "." is the
	// RFC 2782 "service decidedly not available".
	Target string
}

// Answer is what the server says about one name.
type Answer struct {
	// RCode is the response code: dnsmessage.RCodeSuccess (the zero
	// value), RCodeNameError (NXDOMAIN), RCodeServerFailure (SERVFAIL)...
	RCode dnsmessage.RCode
	// SRV are the records returned to an SRV query when RCode is success;
	// none is NODATA. Queries of other types get NODATA.
	SRV []SRV
	// Delay is how long to wait before answering; longer than the client's
	// timeout, it is a timeout.
	Delay time.Duration
	// Drop leaves the query unanswered.
	Drop bool
	// Truncate answers UDP queries with the TC bit and no records, so that
	// the client asks again over TCP.
	Truncate bool
	// AD sets the AD (authenticated data) bit: the answer as a validating
	// resolver gives it for a DNSSEC-signed zone (RFC 4035 section 3.2.3).
	AD bool
}

// Common answers.
var (
	NXDomain = Answer{RCode: dnsmessage.RCodeNameError}
	ServFail = Answer{RCode: dnsmessage.RCodeServerFailure}
	NoData   = Answer{}
	Refused  = Answer{RCode: dnsmessage.RCodeRefused}
	Timeout  = Answer{Drop: true}
)

// Query is a query the server received.
type Query struct {
	Name string // lower case, fully qualified: "_onion-mx._tcp.example.org."
	Type dnsmessage.Type
	Net  string // "udp" or "tcp"
	// EDNS is set when the query had an OPT record (RFC 6891), and DO when
	// that record asked for DNSSEC records (RFC 3225).
	EDNS, DO bool
}

func (q Query) String() string {
	s := q.Name + " " + q.Type.String() + " (" + q.Net
	if q.DO {
		s += ", DO"
	}
	return s + ")"
}

// Server is a DNS server on 127.0.0.1. Its methods are safe for concurrent
// use; answers may be changed while it runs.
type Server struct {
	udp  net.PacketConn
	tcp  net.Listener
	done chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	answers map[string]Answer
	def     Answer
	queries []Query
	conns   map[net.Conn]bool
	closed  bool
}

// New starts a server on a free loopback port, UDP and TCP, and stops it
// when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	s, err := Start()
	if err != nil {
		t.Fatalf("dnstest: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// Start starts a server on a free loopback port, UDP and TCP. The caller
// must Close it.
func Start() (*Server, error) {
	// One port for both protocols: Go's resolver falls back from UDP to TCP
	// at the same address. A free UDP port may be taken for TCP; retry.
	var lastErr error
	for range 20 {
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		tcp, err := net.Listen("tcp", udp.LocalAddr().String())
		if err != nil {
			udp.Close()
			lastErr = err
			continue
		}
		s := &Server{
			udp:     udp,
			tcp:     tcp,
			done:    make(chan struct{}),
			answers: make(map[string]Answer),
			def:     NXDomain,
			conns:   make(map[net.Conn]bool),
		}
		s.wg.Add(2)
		go s.serveUDP()
		go s.serveTCP()
		return s, nil
	}
	return nil, lastErr
}

// Addr returns the "127.0.0.1:port" the server answers on, for --dns.
func (s *Server) Addr() string { return s.udp.LocalAddr().String() }

// Resolver returns a Go resolver that sends every query to this server.
func (s *Server) Resolver() *net.Resolver {
	addr := s.Addr()
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// Set sets the answer for name.
func (s *Server) Set(name string, a Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[canonical(name)] = a
}

// SetSRV sets SRV records for name.
func (s *Server) SetSRV(name string, records ...SRV) {
	s.Set(name, Answer{SRV: records})
}

// SetDefault sets the answer for names that have none (NXDOMAIN at first).
func (s *Server) SetDefault(a Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.def = a
}

// Queries returns the queries received so far, in order.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

// Names returns the names of the queries received so far, in order, one
// entry per query.
func (s *Server) Names() []string {
	var names []string
	for _, q := range s.Queries() {
		names = append(names, q.Name)
	}
	return names
}

// Reset forgets the queries received so far.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queries = nil
}

// Close stops the server and waits for its goroutines, including those
// holding back a delayed answer.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	s.udp.Close()
	s.tcp.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func canonical(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// maxMsg is the largest DNS message over TCP (RFC 1035 section 4.2.2: a
// two-byte length).
const maxMsg = 65535

func (s *Server) serveUDP() {
	defer s.wg.Done()
	buf := make([]byte, maxMsg)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		q := append([]byte(nil), buf[:n]...)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if resp := s.respond(q, "udp"); resp != nil {
				s.udp.WriteTo(resp, from)
			}
		}()
	}
}

func (s *Server) serveTCP() {
	defer s.wg.Done()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.serveTCPConn(c)
		}()
	}
}

func (s *Server) serveTCPConn(c net.Conn) {
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return
		}
		msg := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, msg); err != nil {
			return
		}
		resp := s.respond(msg, "tcp")
		if resp == nil {
			continue
		}
		out := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
		if _, err := c.Write(append(out, resp...)); err != nil {
			return
		}
	}
}

// respond records the query in msg and returns the response, or nil for
// none.
func (s *Server) respond(msg []byte, network string) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(msg)
	if err != nil || h.Response {
		return nil
	}
	q, err := p.Question()
	if err != nil {
		return nil
	}
	name := canonical(q.Name.String())
	edns, do := queryOPT(p)

	s.mu.Lock()
	s.queries = append(s.queries, Query{Name: name, Type: q.Type, Net: network, EDNS: edns, DO: do})
	a, ok := s.answers[name]
	if !ok {
		a = s.def
	}
	s.mu.Unlock()

	if a.Drop {
		return nil
	}
	if a.Delay > 0 {
		select {
		case <-time.After(a.Delay):
		case <-s.done:
			return nil
		}
	}
	resp, err := build(h, q, a, network, edns, do)
	if err != nil {
		return nil
	}
	return resp
}

// queryOPT reports whether the rest of a query (after its question) has an
// OPT record, and whether its DO bit is set.
func queryOPT(p dnsmessage.Parser) (edns, do bool) {
	if p.SkipAllQuestions() != nil || p.SkipAllAnswers() != nil || p.SkipAllAuthorities() != nil {
		return false, false
	}
	for {
		h, err := p.AdditionalHeader()
		if err != nil {
			return edns, do
		}
		if h.Type == dnsmessage.TypeOPT {
			return true, h.DNSSECAllowed()
		}
		if p.SkipAdditional() != nil {
			return false, false
		}
	}
}

func build(qh dnsmessage.Header, q dnsmessage.Question, a Answer, network string, edns, do bool) ([]byte, error) {
	h := dnsmessage.Header{
		ID:                 qh.ID,
		Response:           true,
		OpCode:             qh.OpCode,
		Authoritative:      true,
		RecursionDesired:   qh.RecursionDesired,
		RecursionAvailable: true,
		AuthenticData:      a.AD,
		RCode:              a.RCode,
	}
	truncate := a.Truncate && network == "udp"
	h.Truncated = truncate
	b := dnsmessage.NewBuilder(nil, h)
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if a.RCode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeSRV && !truncate {
		for _, r := range a.SRV {
			target, err := dnsmessage.NewName(canonical(r.Target))
			if r.Target == "." || r.Target == "" {
				target, err = dnsmessage.NewName(".")
			}
			if err != nil {
				return nil, err
			}
			rh := dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET, TTL: 60}
			if err := b.SRVResource(rh, dnsmessage.SRVResource{
				Priority: r.Priority, Weight: r.Weight, Port: r.Port, Target: target,
			}); err != nil {
				return nil, err
			}
		}
	}
	if edns {
		// An EDNS query gets an OPT record back, with the DO bit copied
		// (RFC 6891 section 7, RFC 3225 section 3).
		if err := b.StartAdditionals(); err != nil {
			return nil, err
		}
		var opt dnsmessage.ResourceHeader
		if err := opt.SetEDNS0(1232, dnsmessage.RCodeSuccess, do); err != nil {
			return nil, err
		}
		if err := b.OPTResource(opt, dnsmessage.OPTResource{}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}
