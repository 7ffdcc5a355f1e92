package main

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// proxy stands between Tor's onion service and the receiving Postfix. It
// passes everything through, and follows the client's commands to know
// which of the server's replies answers the end of the message data (the
// final dot, or BDAT ... LAST). Each SIGUSR1 adds 3 to a budget of drops:
// while the budget lasts, that reply is withheld and both connections are
// closed, as a failing proxy or network would do. The receiver has stored
// the message by then: onionmx must say "message may be sent more than
// once", and Postfix's retry makes a real duplicate.
func proxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on")
	to := fs.String("to", "", "the receiver's address")
	logFile := fs.String("log", "", "log file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lf, err := os.OpenFile(*logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	logger := log.New(lf, "", log.LstdFlags|log.Lmicroseconds)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	var budget atomic.Int64
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	go func() {
		for range sig {
			logger.Printf("drop budget now %d", budget.Add(3))
		}
	}()
	logger.Printf("listening on %s, forwarding to %s", *listen, *to)
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go relay(c, *to, &budget, logger)
	}
}

// session is one proxied connection.
type session struct {
	mu sync.Mutex
	// expected counts the replies the client's commands so far call for
	// (the greeting is the first); drop holds the numbers of the replies
	// to the end of data that are to be dropped.
	expected int
	drop     map[int]bool
	budget   *atomic.Int64 // the drops left, shared by all sessions
}

func relay(client net.Conn, to string, budget *atomic.Int64, logger *log.Logger) {
	defer client.Close()
	server, err := net.Dial("tcp", to)
	if err != nil {
		logger.Printf("dial %s: %v", to, err)
		return
	}
	defer server.Close()
	s := &session{expected: 1, drop: map[int]bool{}, budget: budget}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.clientToServer(client, server, logger)
		server.(*net.TCPConn).CloseWrite()
	}()
	s.serverToClient(server, client, logger)
	client.Close()
	server.Close()
	<-done
}

// clientToServer copies the client's stream, counting the replies its
// commands call for. After STARTTLS nothing can be followed: it copies
// blindly (the receiver here offers none).
func (s *session) clientToServer(client io.Reader, server io.Writer, logger *log.Logger) {
	r := bufio.NewReaderSize(client, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// An overlong command: pass it on; the server answers it once.
			if _, err := server.Write(line); err != nil {
				return
			}
			rest, err := r.ReadBytes('\n')
			line = append([]byte(nil), rest...)
			if err != nil {
				server.Write(line)
				return
			}
		} else if err != nil {
			server.Write(line)
			return
		}
		cmd := strings.ToUpper(string(bytes.TrimRight(line, "\r\n")))
		verb, arg, _ := strings.Cut(cmd, " ")
		switch verb {
		case "DATA":
			s.count(1) // 354
			if _, err := server.Write(line); err != nil {
				return
			}
			if !s.copyData(r, server, logger) {
				return
			}
			continue
		case "BDAT":
			f := strings.Fields(arg)
			if len(f) == 0 {
				s.count(1)
				break
			}
			n, perr := strconv.ParseInt(f[0], 10, 64)
			if perr != nil {
				s.count(1)
				break
			}
			// The reply's fate is decided before the chunk goes out: the
			// server may answer as soon as its last octet arrives.
			if len(f) > 1 && f[1] == "LAST" {
				s.endOfData(logger)
			} else {
				s.count(1)
			}
			if _, err := server.Write(line); err != nil {
				return
			}
			if _, err := io.CopyN(server, r, n); err != nil {
				return
			}
			continue
		case "STARTTLS":
			s.count(1)
			server.Write(line)
			io.Copy(server, r)
			return
		default:
			s.count(1)
		}
		if _, err := server.Write(line); err != nil {
			return
		}
	}
}

// copyData copies message data up to and including the final dot.
func (s *session) copyData(r *bufio.Reader, server io.Writer, logger *log.Logger) bool {
	atLineStart := true
	for {
		line, err := r.ReadSlice('\n')
		end := err == nil && atLineStart && string(line) == ".\r\n"
		if end {
			// Before the dot goes out: the server may answer at once.
			s.endOfData(logger)
		}
		if len(line) > 0 {
			if _, werr := server.Write(line); werr != nil {
				return false
			}
		}
		if err == bufio.ErrBufferFull {
			atLineStart = false
			continue
		}
		if err != nil || end {
			return err == nil
		}
		atLineStart = true
	}
}

func (s *session) count(n int) {
	s.mu.Lock()
	s.expected += n
	s.mu.Unlock()
}

// endOfData records that the end of data is going out. It is called
// before the end is written to the server: a server that answers at once
// must find the decision made.
func (s *session) endOfData(logger *log.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expected++
	if take(s.budget) {
		s.drop[s.expected] = true
		logger.Printf("will drop reply %d (the reply to the end of data)", s.expected)
	}
}

// take takes one drop from budget, if there is one left. Sessions end
// their data at the same time: a load then an add could take the last
// drop twice and leave the budget below zero, to swallow part of the
// next SIGUSR1's.
func take(budget *atomic.Int64) bool {
	for {
		b := budget.Load()
		if b <= 0 {
			return false
		}
		if budget.CompareAndSwap(b, b-1) {
			return true
		}
	}
}

// serverToClient copies the server's replies, withholding the reply to
// the end of data when it is to be dropped, and then hanging up. Only a
// 2xx is withheld: the receiver stored the message, and the duplicate
// onionmx then announces is real. A refusal passes, and the drop goes
// back to the budget.
func (s *session) serverToClient(server io.Reader, client io.Writer, logger *log.Logger) {
	r := bufio.NewReaderSize(server, 64<<10)
	n := 0
	var reply []byte
	for {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// Not a reply line this proxy can follow: pass the rest blindly.
			client.Write(append(reply, line...))
			io.Copy(client, r)
			return
		}
		if err != nil {
			client.Write(append(reply, line...))
			return
		}
		reply = append(reply, line...)
		if len(line) >= 4 && line[3] == '-' {
			continue
		}
		n++
		s.mu.Lock()
		drop := s.drop[n]
		s.mu.Unlock()
		switch {
		case drop && reply[0] == '2':
			logger.Printf("dropped the reply to the end of data and hung up: %s", bytes.TrimRight(reply, "\r\n"))
			return
		case drop:
			s.budget.Add(1)
			logger.Printf("passed the reply to the end of data, not a 2xx (nothing stored), and kept the drop: %s", bytes.TrimRight(reply, "\r\n"))
		}
		if _, err := client.Write(reply); err != nil {
			return
		}
		reply = reply[:0]
	}
}
