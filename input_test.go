package main

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMessageInputRestores: messageInput leaves the input's file
// description as it found it once restored: blocking stays blocking, and
// an input that came non-blocking stays non-blocking.
func TestMessageInputRestores(t *testing.T) {
	for _, nonblock := range []bool{false, true} {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		fd, err := unix.Dup(int(r.Fd())) // Fd makes the description blocking
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.SetNonblock(fd, nonblock); err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "input")
		in, _, restore := messageInput(f)
		if got := isNonblock(t, fd); !got {
			t.Errorf("came non-blocking %v: not non-blocking while delivering", nonblock)
		}
		restore()
		if got := isNonblock(t, fd); got != nonblock {
			t.Errorf("came non-blocking %v: non-blocking %v after", nonblock, got)
		}
		// f and in may be two *os.File of one descriptor (as os.Stdin and
		// messageInput's are): one closes it, the other must never be
		// finalized, or its finalizer closes whatever has the number then.
		in.Close()
		if in != f {
			sameFD = append(sameFD, f)
		}
	}
}

// sameFD keeps the files whose descriptor another file closed.
var sameFD []*os.File

func isNonblock(t *testing.T, fd int) bool {
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return flags&unix.O_NONBLOCK != 0
}
