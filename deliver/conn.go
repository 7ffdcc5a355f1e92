package deliver

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// sessionConn is the connection an SMTP session runs over. It adds what
// go-smtp's client lacks:
//
//   - every write gets a deadline (go-smtp sets none while the body is
//     written), so a peer that stops reading cannot hold us;
//   - what is read while capturing is on is kept, for the loop check on the
//     reply to EHLO, which go-smtp does not expose;
//   - an optional transcript for people testing by hand, without the
//     message body.
type sessionConn struct {
	net.Conn
	writeTimeout time.Duration

	mu        sync.Mutex
	capturing bool
	captured  bytes.Buffer
	log       io.Writer // transcript, or nil
	muted     bool      // the body is being sent: keep it out of the transcript
}

// maxCapture bounds what is kept of a reply to EHLO: enough for any sane
// reply, small enough not to matter.
const maxCapture = 16 << 10

func (c *sessionConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if c.capturing && c.captured.Len() < maxCapture {
			c.captured.Write(p[:min(n, maxCapture-c.captured.Len())])
		}
		if c.log != nil {
			transcript(c.log, "S: ", p[:n])
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *sessionConn) Write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	if c.log != nil && !c.muted {
		transcript(c.log, "C: ", p[:n])
	}
	c.mu.Unlock()
	return n, err
}

// capture starts or stops keeping what is read, and returns what was kept
// until now.
func (c *sessionConn) capture(on bool) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.capturing = on
	b := bytes.Clone(c.captured.Bytes())
	c.captured.Reset()
	return b
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

// replayConn hands go-smtp's client a connection whose first bytes are the
// greeting we already read ourselves (to tell a greeting failure from an
// EHLO failure, and to check it for loops), followed by the rest of the
// stream.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }
