// Package sockstest is an in-process SOCKS5 server for tests: it speaks
// enough of RFC 1928 and RFC 1929 for golang.org/x/net/proxy, records every
// CONNECT with its credentials, and lets the test decide what each CONNECT
// gets — any reply code (Tor's onion codes included), a hang, a connection
// to a test server, or an in-process handler. It can also delay every chunk
// it relays, to stand in for the latency of a Tor circuit.
package sockstest

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Request is one CONNECT the server received.
type Request struct {
	Host     string // as sent: a domain name is never resolved
	Port     uint16
	ATYP     byte   // 1 IPv4, 3 domain name, 4 IPv6
	User     string // RFC 1929 credentials, empty without
	Password string
}

// Addr returns "host:port".
func (r Request) Addr() string { return net.JoinHostPort(r.Host, strconv.Itoa(int(r.Port))) }

// Response is what the server does with a CONNECT.
type Response struct {
	// Reply is the SOCKS reply code; 0 succeeds.
	Reply byte
	// Dial is the address to relay a successful CONNECT to.
	Dial string
	// Handle serves a successful CONNECT in-process instead of Dial; it
	// gets the client's side of the connection and must close it.
	Handle func(net.Conn)
	// Hang never answers the CONNECT.
	Hang bool
}

// Server is a running SOCKS5 server on 127.0.0.1.
type Server struct {
	// Addr is the server's host:port.
	Addr string
	// Delay, if set, holds every relayed chunk that long in each direction,
	// and the CONNECT reply twice as long (a rendezvous is a round trip).
	// The SOCKS handshake before the CONNECT reply is never delayed: with
	// Tor it is spoken with the local Tor.
	Delay time.Duration
	// EarlyDial, with Delay, dials the target of a CONNECT halfway through
	// the CONNECT reply's delay, as an onion service connects to its target
	// when the BEGIN cell reaches it, and starts relaying the target's
	// first bytes from then: a greeting the target sends at once (SMTP's
	// 220) reaches the client right after the CONNECT reply, as with Tor,
	// rather than Delay later.
	EarlyDial bool

	connect func(Request) Response
	ln      net.Listener
	done    chan struct{}

	mu       sync.Mutex
	requests []Request
	wg       sync.WaitGroup
}

// New starts a server whose CONNECTs are answered by connect. It stops
// when the test ends.
func New(t testing.TB, connect func(Request) Response) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String(), connect: connect, ln: ln, done: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and waits for its connections to end.
func (s *Server) Close() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	s.ln.Close()
	s.wg.Wait()
}

// Requests returns the CONNECTs received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(c)
		}()
	}
}

// closeOnDone closes c when the server stops, so that no handler outlives it.
func (s *Server) closeOnDone(c net.Conn) func() {
	stop := make(chan struct{})
	go func() {
		select {
		case <-s.done:
			c.Close()
		case <-stop:
		}
	}()
	return func() { close(stop) }
}

func (s *Server) handle(c net.Conn) {
	defer c.Close()
	defer s.closeOnDone(c)()
	req, err := s.handshake(c)
	if err != nil {
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	resp := s.connect(req)
	if resp.Hang {
		<-s.done
		return
	}
	if s.EarlyDial && s.Delay > 0 && resp.Reply == 0 && resp.Handle == nil && resp.Dial != "" {
		s.dialEarly(c, resp.Dial)
		return
	}
	s.sleep(2 * s.Delay)
	reply := []byte{5, resp.Reply, 0, 1, 127, 0, 0, 1, 0, 0}
	if resp.Reply != 0 {
		c.Write(reply)
		return
	}
	switch {
	case resp.Handle != nil:
		c.Write(reply)
		resp.Handle(c)
	case resp.Dial != "":
		up, err := net.Dial("tcp", resp.Dial)
		if err != nil {
			reply[1] = 5 // connection refused
			c.Write(reply)
			return
		}
		defer up.Close()
		defer s.closeOnDone(up)()
		c.Write(reply)
		s.relay(c, up)
	default:
		reply[1] = 1
		c.Write(reply)
	}
}

func (s *Server) sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.done:
	}
}

// relay copies both ways until either side closes.
func (s *Server) relay(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		if s.Delay > 0 {
			s.delayedCopy(dst, src)
		} else {
			io.Copy(dst, src)
		}
		// Half-close so the other side sees the end, then let it finish.
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// delayedCopy holds each chunk for Delay before passing it on, keeping
// chunks in order; a pipeline of chunks in flight, as on a real path.
func (s *Server) delayedCopy(dst, src net.Conn) {
	s.writeChunks(dst, s.readChunks(src))
}

// chunk is a piece of relayed data and when it may be passed on.
type chunk struct {
	b  []byte
	at time.Time
}

// readChunks reads src until it ends, stamping each chunk with the time it
// may be passed on: Delay after it was read.
func (s *Server) readChunks(src net.Conn) <-chan chunk {
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(s.Delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// writeChunks writes the chunks to dst, each at its time.
func (s *Server) writeChunks(dst net.Conn, ch <-chan chunk) {
	for c := range ch {
		s.sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			for range ch {
			}
			return
		}
	}
}

// dialEarly serves a successful CONNECT to addr for EarlyDial: the target
// is dialled after Delay, what it sends is read from then on, and the
// CONNECT reply goes out after another Delay, ahead of that data.
func (s *Server) dialEarly(c net.Conn, addr string) {
	reply := []byte{5, 0, 0, 1, 127, 0, 0, 1, 0, 0}
	s.sleep(s.Delay)
	up, err := net.Dial("tcp", addr)
	if err != nil {
		s.sleep(s.Delay)
		reply[1] = 5 // connection refused
		c.Write(reply)
		return
	}
	defer up.Close()
	defer s.closeOnDone(up)()
	down := s.readChunks(up)
	s.sleep(s.Delay)
	if _, err := c.Write(reply); err != nil {
		go func() {
			for range down {
			}
		}()
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.writeChunks(c, down)
		c.(*net.TCPConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		s.delayedCopy(up, c)
		up.(*net.TCPConn).CloseWrite()
	}()
	wg.Wait()
}

var errProtocol = errors.New("sockstest: protocol error")

// handshake reads the method negotiation, optional RFC 1929
// authentication and the CONNECT request.
func (s *Server) handshake(c net.Conn) (Request, error) {
	var req Request
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 5 {
		return req, errProtocol
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return req, err
	}
	method := byte(0xff)
	for _, m := range methods {
		if m == 2 {
			method = 2 // prefer username/password, as Tor does
		} else if m == 0 && method != 2 {
			method = 0
		}
	}
	if _, err := c.Write([]byte{5, method}); err != nil || method == 0xff {
		return req, errProtocol
	}
	if method == 2 {
		var v [2]byte
		if _, err := io.ReadFull(c, v[:]); err != nil || v[0] != 1 {
			return req, errProtocol
		}
		user := make([]byte, v[1])
		if _, err := io.ReadFull(c, user); err != nil {
			return req, err
		}
		var pl [1]byte
		if _, err := io.ReadFull(c, pl[:]); err != nil {
			return req, err
		}
		pass := make([]byte, pl[0])
		if _, err := io.ReadFull(c, pass); err != nil {
			return req, err
		}
		req.User, req.Password = string(user), string(pass)
		if _, err := c.Write([]byte{1, 0}); err != nil {
			return req, err
		}
	}
	var h [4]byte
	if _, err := io.ReadFull(c, h[:]); err != nil || h[0] != 5 || h[1] != 1 {
		return req, errProtocol
	}
	req.ATYP = h[3]
	switch h[3] {
	case 1, 4:
		ip := make([]byte, map[byte]int{1: 4, 4: 16}[h[3]])
		if _, err := io.ReadFull(c, ip); err != nil {
			return req, err
		}
		req.Host = net.IP(ip).String()
	case 3:
		var l [1]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return req, err
		}
		name := make([]byte, l[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return req, err
		}
		req.Host = string(name)
	default:
		return req, errProtocol
	}
	var p [2]byte
	if _, err := io.ReadFull(c, p[:]); err != nil {
		return req, err
	}
	req.Port = binary.BigEndian.Uint16(p[:])
	return req, nil
}

// Closed returns a loopback address where nothing listens: a SocksPort
// that is down.
func Closed(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
