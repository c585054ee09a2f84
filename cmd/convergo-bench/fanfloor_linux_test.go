package main

import (
	"errors"
	"syscall"
	"testing"
)

// A send the socket refuses is an error, not a frame silently lost that
// the reader would wait 30 s for.
func TestSendFrameReportsRefusal(t *testing.T) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fds[0])
	defer syscall.Close(fds[1])
	if err := sendFrame(fds[0], make([]byte, 178)); err != nil {
		t.Fatalf("a send to an open socket: %v", err)
	}
	if err := sendFrame(-1, make([]byte, 178)); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("a send to no descriptor: %v, want EBADF", err)
	}
}
