// Package smtptest is an in-process SMTP sink for tests, on go-smtp's
// server side: it accepts mail on 127.0.0.1, records what it accepted, and
// lets a test make any step answer an error, hang or drop the connection.
package smtptest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// keepData is the largest body a Message keeps in full; larger ones keep
// only their size and hash, so that big-message tests stay small.
const keepData = 1 << 20

// Message is a message the sink accepted: its end of data was answered 2xx.
type Message struct {
	From   string
	To     []string
	Opts   smtp.MailOptions
	Size   int64
	SHA256 [32]byte
	Data   []byte // nil when Size > 1 MiB
	Helo   string
	TLS    bool // the message came over STARTTLS
}

// Hooks decide what the sink answers. A nil hook accepts. A hook may
// return an *smtp.SMTPError to answer with it, call Hang to never answer,
// or Drop to close the connection.
type Hooks struct {
	// Hello runs at EHLO/HELO (go-smtp creates the session there).
	Hello func(c *smtp.Conn) error
	Mail  func(c *smtp.Conn, from string) error
	Rcpt  func(c *smtp.Conn, to string) error
	// Data runs after the whole body was read, before the reply to the
	// end of data.
	Data func(c *smtp.Conn, m *Message) error
	// Body, when set, replaces the reading of the body: it gets the
	// body's reader and must consume it (or not, to stall the sender).
	Body func(c *smtp.Conn, r io.Reader) error
}

// Sink is a running SMTP server.
type Sink struct {
	Addr string

	done  chan struct{}
	mu    sync.Mutex
	hooks Hooks
	msgs  []Message
	conn  int
}

// New starts a sink. The configure functions, if any, set up go-smtp's
// server (its Domain, MaxMessageBytes, EnableSMTPUTF8 ...) before it
// serves. It stops when the test ends.
func New(t testing.TB, configure ...func(*smtp.Server)) *Sink {
	t.Helper()
	s := &Sink{done: make(chan struct{})}
	srv := smtp.NewServer(backend{s})
	srv.Domain = "sink.test"
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = 5 * time.Minute
	for _, f := range configure {
		f(srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() {
		close(s.done)
		// Shutdown waits for the connections to end by themselves (their
		// clients are gone by now). Close would close them under a BDAT
		// that go-smtp v0.25.1 reads without its lock: a data race that
		// go test -race reports.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return s
}

// SetHooks replaces the hooks; sessions already running keep theirs.
func (s *Sink) SetHooks(h Hooks) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = h
}

// Messages returns the messages accepted so far.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Connections returns the number of sessions (EHLO/HELO) seen so far.
func (s *Sink) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// SelfSignedTLS returns a server TLS configuration with a fresh
// self-signed certificate, for testing STARTTLS.
func SelfSignedTLS(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sink.test"},
		DNSNames:     []string{"sink.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// Hang blocks until the test ends: the step never answers.
func (s *Sink) Hang() error {
	<-s.done
	return &smtp.SMTPError{Code: 421, Message: "test over"}
}

// Drop closes the connection: the step never answers.
func (s *Sink) Drop(c *smtp.Conn) error {
	c.Conn().Close()
	return &smtp.SMTPError{Code: 421, Message: "dropped"}
}

type backend struct{ s *Sink }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.s.mu.Lock()
	b.s.conn++
	hooks := b.s.hooks
	b.s.mu.Unlock()
	if h := hooks.Hello; h != nil {
		if err := h(c); err != nil {
			return nil, err
		}
	}
	return &session{s: b.s, hooks: hooks, c: c, msg: Message{Helo: c.Hostname()}}, nil
}

type session struct {
	s     *Sink
	hooks Hooks
	c     *smtp.Conn
	msg   Message
}

func (x *session) Mail(from string, opts *smtp.MailOptions) error {
	if h := x.hooks.Mail; h != nil {
		if err := h(x.c, from); err != nil {
			return err
		}
	}
	x.msg.From = from
	if opts != nil {
		x.msg.Opts = *opts
	}
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if h := x.hooks.Rcpt; h != nil {
		if err := h(x.c, to); err != nil {
			return err
		}
	}
	x.msg.To = append(x.msg.To, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	if h := x.hooks.Body; h != nil {
		return h(x.c, r)
	}
	m := x.msg
	_, m.TLS = x.c.TLSConnectionState()
	hash := sha256.New()
	var keep limitedBuffer
	n, err := io.Copy(io.MultiWriter(hash, &keep), r)
	if err != nil {
		return err
	}
	m.Size = n
	copy(m.SHA256[:], hash.Sum(nil))
	if n <= keepData {
		m.Data = keep.b
	}
	if h := x.hooks.Data; h != nil {
		if err := h(x.c, &m); err != nil {
			return err
		}
	}
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, m)
	x.s.mu.Unlock()
	return nil
}

func (x *session) Reset() {
	x.msg = Message{Helo: x.msg.Helo}
}

func (x *session) Logout() error { return nil }

// limitedBuffer keeps the first keepData+1 bytes written to it.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := keepData + 1 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(len(p), room)]...)
	}
	return len(p), nil
}
