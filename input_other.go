//go:build !linux

package main

// growPipe leaves the pipe as it is: only Linux can grow it.
func growPipe(int) {}
