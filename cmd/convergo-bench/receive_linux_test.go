package main

import (
	"net"
	"syscall"
	"testing"
	"time"
)

// TestRxTimestamp: a segment read with recvmsg on a socket that asked for
// SO_TIMESTAMPNS carries the time it arrived, between the write and the
// read, and rxTimestamp finds it.
func TestRxTimestamp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	rc, err := client.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1)
	})
	if serr != nil {
		t.Fatal(serr)
	}
	p, oob := make([]byte, 16), make([]byte, syscall.CmsgSpace(16))
	recv := func(msg string) (oobn int) {
		t.Helper()
		if _, err := server.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		var n int
		var err error
		rerr := rc.Read(func(fd uintptr) bool {
			n, oobn, _, _, err = syscall.Recvmsg(int(fd), p, oob, 0)
			return err != syscall.EAGAIN
		})
		if rerr != nil || err != nil {
			t.Fatal(rerr, err)
		}
		if string(p[:n]) != msg {
			t.Fatalf("read %q, want %q", p[:n], msg)
		}
		return oobn
	}
	// The kernel turns receive timestamps on for the host shortly after
	// the first socket asks (a deferred static key): segments that came
	// before carry none, as the receiver allows (arrival.host -1).
	for end := time.Now().Add(5 * time.Second); ; {
		if _, ok := rxTimestamp(oob[:recv("probe")]); ok {
			break
		}
		if time.Now().After(end) {
			t.Fatal("no receive timestamps after 5 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := time.Now().UnixNano()
	if _, err := server.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// The read comes well after the arrival: 20 ms after the segment is
	// there to peek at, not after the write (on a loaded machine the
	// kernel may take longer than that to deliver it over loopback).
	var n, oobn int
	rerr := rc.Read(func(fd uintptr) bool {
		_, _, _, _, err = syscall.Recvmsg(int(fd), p, nil, syscall.MSG_PEEK)
		return err != syscall.EAGAIN
	})
	if rerr != nil || err != nil {
		t.Fatal(rerr, err)
	}
	time.Sleep(20 * time.Millisecond)
	rerr = rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, err = syscall.Recvmsg(int(fd), p, oob, 0)
		return err != syscall.EAGAIN
	})
	if rerr != nil || err != nil {
		t.Fatal(rerr, err)
	}
	readAt := time.Now().UnixNano()
	if string(p[:n]) != "hello" {
		t.Fatalf("read %q", p[:n])
	}
	at, ok := rxTimestamp(oob[:oobn])
	if !ok {
		t.Fatalf("no receive timestamp in %d bytes of control data", oobn)
	}
	if at < before || at > readAt-10*time.Millisecond.Nanoseconds() {
		t.Fatalf("arrival %d not between the write (%d) and 10 ms before the read (%d)", at, before, readAt)
	}
	if _, ok := rxTimestamp(nil); ok {
		t.Fatal("a timestamp in no control data")
	}
	if _, ok := rxTimestamp(oob[:3]); ok {
		t.Fatal("a timestamp in a cut control message")
	}
}
