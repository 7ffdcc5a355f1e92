package deliver

import (
	"context"
	"io"
)

// ctxReader reads the message so that the delivery's context can end a
// read that never returns: a writer that stalls, alive and silent, or a
// person at a terminal who never types ^D. The read in flight runs in a
// goroutine; when ctx is done first, Read returns its cause at once and
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
