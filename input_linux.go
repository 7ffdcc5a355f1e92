package main

import "golang.org/x/sys/unix"

// growPipe asks for a pipe buffer of 1 MiB, /proc/sys/fs/pipe-max-size's
// default: a read then takes up to that much at once, where the 64 KiB
// default makes sixteen. Refused (a lower limit, a user over its quota of
// pipe memory), the pipe stays as it is.
func growPipe(fd int) {
	unix.FcntlInt(uintptr(fd), unix.F_SETPIPE_SZ, 1<<20)
}
