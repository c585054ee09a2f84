//go:build !linux

package transport

import (
	"net"
	"syscall"
)

// poller is the epoll loop of live connections on Linux (poll_linux.go);
// elsewhere every live connection is read by a goroutine of its own.
type poller struct{}

type pollState struct{}

func newPoller(*Server) *poller { return &poller{} }

func (*poller) add(*liveConn, bool) bool { return false }
func (*poller) rearm(*liveConn)          {}
func (*poller) remove(*liveConn)         {}
func (*poller) close()                   {}

// socketOf is nil: live connections are written by the pool's writers
// only (liveConn.writeDirect is Linux's).
func socketOf(net.Conn) syscall.RawConn { return nil }

func (c *liveConn) sendNow(uintptr) {}
