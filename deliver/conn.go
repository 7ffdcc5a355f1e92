package deliver

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// sessionConn is the connection an SMTP session runs over. It adds:
//
//   - a deadline for every write (go-smtp clears its own after each
//     command), so a peer that stops reading cannot hold us;
//   - an optional transcript for people testing by hand, without the
//     message body.
type sessionConn struct {
	net.Conn
	writeTimeout time.Duration

	mu    sync.Mutex
	log   io.Writer // transcript, or nil
	muted bool      // the body is being sent: keep it out of the transcript
}

func (c *sessionConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.log != nil {
		c.mu.Lock()
		transcript(c.log, "S: ", p[:n])
		c.mu.Unlock()
	}
	return n, err
}

func (c *sessionConn) Write(p []byte) (int, error) {
	return c.writeWithin(p, c.writeTimeout)
}

// writeWithin writes p within d (no deadline if d is 0).
func (c *sessionConn) writeWithin(p []byte, d time.Duration) (int, error) {
	if d > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(d))
	}
	n, err := c.Conn.Write(p)
	if c.log != nil {
		c.mu.Lock()
		if !c.muted {
			transcript(c.log, "C: ", p[:n])
		}
		c.mu.Unlock()
	}
	return n, err
}

// mute keeps the message body out of the transcript, noting it instead.
func (c *sessionConn) mute(on bool, note string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.muted = on
	if c.log != nil && note != "" {
		fmt.Fprintf(c.log, "C: %s\n", note)
	}
}

// transcript writes protocol bytes as lines with a direction prefix.
func transcript(w io.Writer, prefix string, b []byte) {
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		line = bytes.TrimRight(line, "\r\n")
		fmt.Fprintf(w, "%s%s\n", prefix, oneLine(string(line)))
	}
}

// isTimeout reports an error that says a deadline passed.
func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
