package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// messageInput returns the file deliver reads the message from. Under
// pipe(8) that is a pipe: it is put in non-blocking mode, so that Go's
// poller can end a read with a deadline (an interruption, the delivery's
// deadline) rather than a goroutine and a copy per read, and its buffer
// is made as large as the system allows a user (1 MiB by default): fewer,
// larger reads. A socket is made non-blocking too. Anything else — a
// terminal, where O_NONBLOCK would outlive us in the shell, or a file — is
// left as it is. piped reports a pipe or a socket, whether or not it was
// changed.
//
// O_NONBLOCK belongs to the file description, which the process that
// started us may share (a script whose own standard input it is, with a
// fallback that reads it after us): restore gives it back as it was.
func messageInput(f *os.File) (_ *os.File, piped bool, restore func()) {
	var st unix.Stat_t
	fd := int(f.Fd())
	if unix.Fstat(fd, &st) != nil {
		return f, false, func() {}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFIFO:
		growPipe(fd)
	case unix.S_IFSOCK:
	default:
		return f, false, func() {}
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_NONBLOCK != 0 || unix.SetNonblock(fd, true) != nil {
		return f, true, func() {}
	}
	// os.NewFile sees O_NONBLOCK and hands the descriptor to the poller.
	return os.NewFile(uintptr(fd), f.Name()), true, func() { unix.SetNonblock(fd, false) }
}
