package smtptest

import (
	"net"
	"sync"
	"testing"
)

// Raw is a server for tests of what a broken or hostile remote can do:
// each connection is handed to a function that writes whatever it likes —
// replies of any size or shape, or none — and reads as much as it wants.
type Raw struct {
	Addr string

	mu    sync.Mutex
	conns int
	open  map[net.Conn]bool
}

// NewRaw starts a Raw server on 127.0.0.1; serve runs once per connection,
// which is closed when serve returns. It stops when the test ends, closing
// the connections still open, so a serve that waits on its connection
// returns then.
func NewRaw(t testing.TB, serve func(c net.Conn)) *Raw {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Raw{Addr: ln.Addr().String(), open: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for c := range r.open {
			c.Close()
		}
		r.mu.Unlock()
		wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns++
			r.open[c] = true
			r.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					c.Close()
					r.mu.Lock()
					delete(r.open, c)
					r.mu.Unlock()
				}()
				serve(c)
			}()
		}
	}()
	return r
}

// Connections returns the number of connections accepted so far.
func (r *Raw) Connections() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns
}
