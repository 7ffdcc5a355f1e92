package table

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Timeouts of a connection.
const (
	// DefaultIOTimeout bounds reading the rest of a request once its first
	// byte came, and writing a reply: 100 s, the I/O timeout of Postfix's
	// socketmap and tcp table clients (socketmap_table(5), tcp_table(5)).
	DefaultIOTimeout = 100 * time.Second
	// DefaultIdleTimeout bounds the wait for the next request. Postfix's
	// socketmap client closes a connection after 10 s idle or 100 s of
	// age; waiting longer than both means the server never closes a
	// connection the client is about to reuse, and still frees dead ones.
	DefaultIdleTimeout = 120 * time.Second
	// DefaultMaxConns bounds the connections served at once by Serve;
	// Postfix opens one per trivial-rewrite process (default_process_limit
	// is 100).
	DefaultMaxConns = 1024
)

// Protocol is a Postfix table protocol.
type Protocol int

const (
	// Socketmap is socketmap_table(5): netstrings "NAME KEY" and
	// "OK DATA", "NOTFOUND ", "TEMP reason", "PERM reason".
	Socketmap Protocol = iota
	// TCPTable is tcp_table(5): "get KEY\n" and "200 DATA\n", "500 text\n",
	// "400 text\n", %XX-encoded.
	TCPTable
)

func (p Protocol) String() string {
	switch p {
	case Socketmap:
		return "socketmap"
	case TCPTable:
		return "tcptable"
	}
	return fmt.Sprintf("Protocol(%d)", int(p))
}

func (p Protocol) codec() codec {
	if p == TCPTable {
		return tcpCodec{}
	}
	return socketmapCodec{}
}

// codec reads requests and writes answers of one protocol.
type codec interface {
	// readRequest reads one request and returns its key. A
	// *RequestError is a malformed request, answered with a PERM.
	readRequest(r *bufio.Reader) (string, error)
	// writeAnswer writes the reply for ans.
	writeAnswer(w *bufio.Writer, ans Answer) error
	// bufSize is the read buffer a request needs.
	bufSize() int
}

// RequestError is a malformed request. It is answered (PERM, or 500 for a
// tcp table); when Fatal, the stream cannot be trusted any further and the
// connection is closed after the answer.
type RequestError struct {
	Msg   string
	Fatal bool
}

func (e *RequestError) Error() string { return "malformed request: " + e.Msg }

// Conn is a connection to a table client: a net.Conn, or stdin/stdout
// (StdioConn). Deadlines that cannot be set are ignored.
type Conn interface {
	io.ReadWriteCloser
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// Server serves one protocol on connections.
type Server struct {
	Answerer *Answerer
	Protocol Protocol
	// Zero values mean the defaults above.
	IOTimeout   time.Duration
	IdleTimeout time.Duration
	MaxConns    int
	// Log, when set, receives one line per connection that ended with an
	// error (a malformed request, a timeout, a broken connection).
	Log func(format string, args ...any)
	// Fail, when set, is the answer to every well-formed request, as a
	// TEMP: a server whose configuration is broken still speaks the
	// protocol under spawn(8), so that Postfix defers the mail and logs
	// why, instead of reading an error message as a malformed reply.
	Fail error
}

func (s *Server) logf(format string, args ...any) {
	if s.Log != nil {
		s.Log(format, args...)
	}
}

// Serve accepts connections on l and serves each until it ends, many at
// once. When ctx is done it closes l, lets each connection finish the
// request in progress, and returns once all have ended.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	limit := s.MaxConns
	if limit <= 0 {
		limit = DefaultMaxConns
	}
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	defer wg.Wait()
	var tempDelay time.Duration
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		c, err := l.Accept()
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				// Out of file descriptors and the like: wait and retry,
				// as net/http does.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.logf("accept: %v; retrying in %v", err, tempDelay)
				select {
				case <-time.After(tempDelay):
				case <-ctx.Done():
					return nil
				}
				continue
			}
			return err
		}
		tempDelay = 0
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			defer c.Close()
			if err := s.ServeConn(ctx, c); err != nil {
				s.logf("%s: %v", c.RemoteAddr(), err)
			}
		}()
	}
}

// isTemporaryAccept reports whether an accept failed for want of resources
// or because of one client, while the listener itself is fine.
func isTemporaryAccept(err error) bool {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.ECONNABORTED} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// ServeConn answers the requests on one connection in order, as many as the
// client sends (Postfix keeps the connection open), until the client closes
// it, a timeout expires, a request is malformed beyond repair, or ctx is
// done. It returns nil when the connection ended between requests (closed
// by the client, idle for IdleTimeout, or ctx done). It does not close c.
func (s *Server) ServeConn(ctx context.Context, c Conn) error {
	codec := s.Protocol.codec()
	ioTimeout := cmp.Or(s.IOTimeout, DefaultIOTimeout)
	idleTimeout := cmp.Or(s.IdleTimeout, DefaultIdleTimeout)
	// On shutdown, end the wait for the next request at once.
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()

	bw := bufio.NewWriter(c)
	// Replies wait in bw until the server would wait for input: pipelined
	// requests get their replies in one write, and no reply is held back
	// while the client waits for it.
	br := bufio.NewReaderSize(flushReader{c, bw}, codec.bufSize())
	for {
		c.SetReadDeadline(time.Now().Add(idleTimeout))
		if ctx.Err() != nil {
			return nil
		}
		if _, err := br.Peek(1); err != nil {
			var we *writeError
			switch {
			case errors.As(err, &we):
				return we
			case errors.Is(err, io.EOF):
				return nil
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, os.ErrDeadlineExceeded):
				// Idle: Postfix closes its end sooner; a normal end.
				return nil
			}
			return err
		}
		c.SetReadDeadline(time.Now().Add(ioTimeout))
		key, err := codec.readRequest(br)
		var ans Answer
		var reqErr *RequestError
		switch {
		case err == nil && s.Fail != nil:
			ans = Answer{Class: Temp, Reason: s.Fail.Error()}
		case err == nil:
			ans = s.Answerer.Lookup(ctx, key)
		case errors.As(err, &reqErr):
			ans = Answer{Class: Perm, Reason: reqErr.Msg}
		case errors.As(err, new(*writeError)):
			return err
		case err == io.EOF:
			return nil // only line ends before the end
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errors.New("connection closed in the middle of a request")
		default:
			return err
		}
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		if err := codec.writeAnswer(bw, ans); err != nil {
			return err
		}
		if reqErr != nil && reqErr.Fatal {
			if err := bw.Flush(); err != nil {
				return err
			}
			return reqErr
		}
	}
}

// flushReader flushes w before each read of r.
type flushReader struct {
	r io.Reader
	w *bufio.Writer
}

func (f flushReader) Read(p []byte) (int, error) {
	if f.w.Buffered() > 0 {
		if err := f.w.Flush(); err != nil {
			return 0, &writeError{err}
		}
	}
	return f.r.Read(p)
}

// writeError is a failure to write replies, met while reading: it must not
// pass for an idle or broken input.
type writeError struct{ err error }

func (e *writeError) Error() string { return "writing replies: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// StdioConn makes a connection of the standard input and output, for
// spawn(8), which connects both to the client's socket. Only sockets are
// treated as sockets (fstat: S_ISSOCK): they get deadlines. A pipe or a
// terminal is used as the plain blocking file it is, without deadlines,
// and the client is trusted to close its end: net.FileConn would set
// O_NONBLOCK on its file description, which the other processes sharing it
// (the shell, the terminal, the writer at the other end) then see, and
// which makes the blocking reads and writes of an *os.File fail with
// EAGAIN.
func StdioConn(r io.Reader, w io.Writer) Conn {
	c := &stdioConn{r: r, w: w}
	if f, ok := r.(*os.File); ok && IsSocket(f) {
		if nc, err := net.FileConn(f); err == nil {
			c.r, c.rd = nc, nc
			c.closers = append(c.closers, nc)
		}
	}
	if f, ok := w.(*os.File); ok && IsSocket(f) {
		if nc, err := net.FileConn(f); err == nil {
			c.w, c.wd = nc, nc
			c.closers = append(c.closers, nc)
		}
	}
	return c
}

// IsSocket reports whether f is a socket (fstat: S_ISSOCK).
func IsSocket(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// SameSocket reports whether a and b are the same socket, as stdout and
// stderr are under spawn(8): then nothing may be written to b but the
// protocol.
func SameSocket(a, b *os.File) bool {
	if a == nil || b == nil {
		return false
	}
	fa, err1 := a.Stat()
	fb, err2 := b.Stat()
	return err1 == nil && err2 == nil && fa.Mode()&os.ModeSocket != 0 && os.SameFile(fa, fb)
}

type stdioConn struct {
	r       io.Reader
	w       io.Writer
	rd, wd  interface{ SetDeadline(time.Time) error }
	closers []io.Closer
}

func (c *stdioConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *stdioConn) Write(p []byte) (int, error) { return c.w.Write(p) }

func (c *stdioConn) Close() error {
	for _, cl := range c.closers {
		cl.Close()
	}
	return nil
}

func (c *stdioConn) SetReadDeadline(t time.Time) error {
	if c.rd == nil {
		return os.ErrNoDeadline
	}
	return c.rd.SetDeadline(t)
}

func (c *stdioConn) SetWriteDeadline(t time.Time) error {
	if c.wd == nil {
		return os.ErrNoDeadline
	}
	return c.wd.SetDeadline(t)
}

// maxReason bounds the reason text of a reply: Postfix logs the first 200
// characters of a socketmap server's error.
const maxReason = 1000
