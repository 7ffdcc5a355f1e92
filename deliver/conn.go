package deliver

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/onionmx/onionmx/internal/printable"
	"github.com/onionmx/onionmx/internal/reply"
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

// writeWithin writes p, giving every piece of progressPiece octets d to
// go out (no deadline if d is 0): a slow link that keeps moving is not a
// stalled one, as with smtp(8)'s smtp_data_xfer_timeout, however large
// the write (a BDAT chunk is 1 MiB).
func (c *sessionConn) writeWithin(p []byte, d time.Duration) (int, error) {
	var n int
	var err error
	for rest := p; len(rest) > 0 && err == nil; {
		piece := rest[:min(len(rest), progressPiece)]
		if d > 0 {
			c.Conn.SetWriteDeadline(time.Now().Add(d))
		}
		var m int
		m, err = c.Conn.Write(piece)
		n += m
		rest = rest[m:]
	}
	if c.log != nil {
		c.mu.Lock()
		if !c.muted {
			transcript(c.log, "C: ", p[:n])
		}
		c.mu.Unlock()
	}
	return n, err
}

// progressPiece is how much of a write must go out within the write
// timeout: 64 KiB in 3 minutes is 364 octets a second.
const progressPiece = 64 << 10

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
		fmt.Fprintf(w, "%s%s\n", prefix, printable.Line(string(line), reply.MaxReply))
	}
}

// logSent puts commands that go out muted, with the body, into the
// transcript.
func (c *sessionConn) logSent(cmds string) {
	if c.log != nil {
		c.mu.Lock()
		transcript(c.log, "C: ", []byte(cmds))
		c.mu.Unlock()
	}
}
