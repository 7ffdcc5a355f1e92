package deliver

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestInterruptible checks both ways a read that never returns is ended:
// with a deadline on an input that takes one (a pipe Go's poller
// watches, as onionmx deliver makes stdin), and with a ctxReader on any
// other; either way the read returns the context's cause, and data that
// came before it is read.
func TestInterruptible(t *testing.T) {
	pipe := func(t *testing.T, nonblock bool) (*os.File, *os.File) {
		r, w, err := os.Pipe() // os.Pipe's ends are non-blocking already
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		if nonblock {
			return r, w
		}
		// The same pipe, blocking (Fd puts the open file description,
		// which the duplicate shares, in blocking mode): no deadlines.
		fd, err := syscall.Dup(int(r.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "blocking")
		t.Cleanup(func() { f.Close() })
		return f, w
	}
	for _, tc := range []struct {
		name     string
		nonblock bool
		want     string
	}{
		{"deadline", true, "*deliver.deadlineReader"},
		{"goroutine", false, "*deliver.ctxReader"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w := pipe(t, tc.nonblock)
			cause := errors.New("SIGTERM")
			ctx, cancel := context.WithCancelCause(context.Background())
			in, stop := interruptible(ctx, r)
			defer stop()
			if got := typeName(in); got != tc.want {
				t.Fatalf("reader is %s, want %s", got, tc.want)
			}
			w.Write([]byte("first"))
			buf := make([]byte, 64)
			if n, err := in.Read(buf); err != nil || string(buf[:n]) != "first" {
				t.Fatalf("Read = %q, %v", buf[:n], err)
			}
			time.AfterFunc(50*time.Millisecond, func() { cancel(cause) })
			done := make(chan error, 1)
			go func() {
				_, err := in.Read(buf)
				done <- err
			}()
			select {
			case err := <-done:
				if err != cause {
					t.Fatalf("Read after the cancellation: %v, want %v", err, cause)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the read was not ended")
			}
			if _, err := io.ReadAll(in); err != cause {
				t.Fatalf("reads after that: %v, want %v", err, cause)
			}
		})
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *deadlineReader:
		return "*deliver.deadlineReader"
	case *ctxReader:
		return "*deliver.ctxReader"
	}
	return "other"
}
