package deliver

import (
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// A deadliner is an input whose reads a deadline can end: a pipe or a
// socket that Go's poller watches (an *os.File in non-blocking mode), or
// something in front of one that forwards the deadline.
type deadliner interface {
	SetReadDeadline(time.Time) error
}

// interruptible returns r so that the end of ctx ends a read that never
// returns (a writer that stalls, alive and silent, or a person at a
// terminal who never types ^D) with ctx's cause. An input that takes a
// deadline gets one when ctx ends, at no cost per read; any other is read
// through a ctxReader. stop releases what watches ctx.
func interruptible(ctx context.Context, r io.Reader) (_ io.Reader, stop func() bool) {
	if d, ok := r.(deadliner); ok && d.SetReadDeadline(time.Time{}) == nil {
		stop = context.AfterFunc(ctx, func() { d.SetReadDeadline(time.Unix(1, 0)) })
		return &deadlineReader{r: r, ctx: ctx}, stop
	}
	return newCtxReader(ctx, r), func() bool { return false }
}

// deadlineReader turns the deadline that ended a read into ctx's cause.
type deadlineReader struct {
	r   io.Reader
	ctx context.Context
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && d.ctx.Err() != nil {
		err = context.Cause(d.ctx)
	}
	return n, err
}

// ctxReader reads an input that takes no deadline (a terminal, a file,
// an io.Reader of a test) so that the delivery's context can end a read
// that never returns. The read in flight runs in a goroutine; when ctx is done first, Read returns its cause at once and
// the read is left behind (the process is about to exit anyway). After
// that the reader is done for.
type ctxReader struct {
	r    io.Reader
	ctx  context.Context
	buf  []byte
	res  chan readResult
	busy bool // a read is in flight, into buf
}

type readResult struct {
	n     int
	err   error
	panic any // a panic of the read, raised again in Read's goroutine
}

func newCtxReader(ctx context.Context, r io.Reader) *ctxReader {
	return &ctxReader{r: r, ctx: ctx, res: make(chan readResult, 1)}
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !c.busy {
		if err := c.ctx.Err(); err != nil {
			return 0, context.Cause(c.ctx)
		}
		if len(c.buf) < len(p) {
			c.buf = make([]byte, len(p))
		}
		buf := c.buf[:len(p)]
		c.busy = true
		go func() {
			defer func() {
				if p := recover(); p != nil {
					c.res <- readResult{panic: p}
				}
			}()
			n, err := c.r.Read(buf)
			c.res <- readResult{n: n, err: err}
		}()
	}
	select {
	case r := <-c.res:
		c.busy = false
		if r.panic != nil {
			panic(r.panic)
		}
		return copy(p, c.buf[:r.n]), r.err
	case <-c.ctx.Done():
		return 0, context.Cause(c.ctx)
	}
}
