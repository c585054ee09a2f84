package transport

import (
	"net"
	"testing"
)

// wrappedConn embeds the runtime's connection, as a listener's wrapper
// that counts or changes bytes might: it has a SyscallConn, but its
// descriptor's bytes are not necessarily its own.
type wrappedConn struct{ *net.TCPConn }

// TestSocketOfOnlyRuntimeConns: the poller and the broadcast's direct
// writes use the descriptor of the runtime's own connections only.
func TestSocketOfOnlyRuntimeConns(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if socketOf(c) == nil {
		t.Error("no socket for a *net.TCPConn")
	}
	if socketOf(wrappedConn{c.(*net.TCPConn)}) != nil {
		t.Error("a socket for a type that only embeds a *net.TCPConn")
	}
}
