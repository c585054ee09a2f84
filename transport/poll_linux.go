//go:build linux

package transport

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poller is the server's one epoll loop of live connections: each polled
// connection's socket is registered once, level-triggered with
// EPOLLONESHOT, so a readable socket is reported once and then disarmed
// until its reader has read what arrived and re-armed it (rearm). A
// reported connection goes to the server's pool of readers; between
// messages a connection holds no goroutine and no buffer.
//
// Go's runtime keeps its own registration of the socket (net.Conn reads
// and deadlines use it); this one only tells when to start reading. The
// events carry a connection id, never reused, so an event of a connection
// that ended meanwhile finds no connection. The loop's goroutine runs
// while connections are registered, like the pinger; the epoll and wake-up
// descriptors are made at the first registration and closed by Shutdown.
type poller struct {
	s       *Server
	mu      sync.Mutex
	epfd    int // -1 until the first registration
	evfd    int // eventfd: wakes the loop to see whether it should end
	failed  error
	conns   map[uint64]*liveConn
	next    uint64
	running bool
}

// pollState is a connection's registration with the poller.
type pollState struct {
	mu    sync.Mutex
	id    uint64 // 0: not polled
	fd    int
	added bool // in the epoll set
	done  bool // removed: never re-armed again
}

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

func newPoller(s *Server) *poller {
	return &poller{s: s, epfd: -1, evfd: -1, conns: map[uint64]*liveConn{}}
}

// add registers c, armed at once if arm (else its first rearm arms it).
// It reports false when c cannot be polled: its socket cannot be had, or
// epoll failed; c's reading is then a goroutine's.
func (p *poller) add(c *liveConn, arm bool) bool {
	if c.sock == nil {
		return false
	}
	fd := -1
	if c.sock.Control(func(f uintptr) { fd = int(f) }) != nil || fd < 0 {
		return false
	}
	// Under c's poll lock, so that a session that ended first (remove saw
	// no id) is not registered for ever.
	c.poll.mu.Lock()
	if c.poll.done {
		c.poll.mu.Unlock()
		return true // ended: nothing to read
	}
	p.mu.Lock()
	if err := p.openLocked(); err != nil {
		p.mu.Unlock()
		c.poll.mu.Unlock()
		return false
	}
	p.next++
	id := p.next
	p.conns[id] = c
	if !p.running {
		p.running = true
		p.s.bg.Add(1)
		go func() { defer p.s.bg.Done(); p.run() }()
	}
	p.mu.Unlock()
	c.poll.id, c.poll.fd = id, fd
	c.poll.mu.Unlock()
	if arm {
		p.rearm(c)
	}
	return true
}

func (p *poller) openLocked() error {
	if p.failed != nil || p.epfd >= 0 {
		return p.failed
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		p.failed = fmt.Errorf("epoll_create1: %w", err)
		p.s.log.Warn("live connections will be read by goroutines", "err", p.failed)
		return p.failed
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err == nil {
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN})
	}
	if err != nil {
		_ = unix.Close(epfd)
		if evfd >= 0 {
			_ = unix.Close(evfd)
		}
		p.failed = fmt.Errorf("eventfd: %w", err)
		p.s.log.Warn("live connections will be read by goroutines", "err", p.failed)
		return p.failed
	}
	p.epfd, p.evfd = epfd, evfd
	return nil
}

// rearm has c reported again when it is readable (at once if it is).
func (p *poller) rearm(c *liveConn) {
	st := &c.poll
	st.mu.Lock()
	if st.done || st.id == 0 {
		st.mu.Unlock()
		return
	}
	ev := unix.EpollEvent{Events: pollEvents, Fd: int32(uint32(st.id)), Pad: int32(uint32(st.id >> 32))}
	op := unix.EPOLL_CTL_MOD
	if !st.added {
		op = unix.EPOLL_CTL_ADD
	}
	err := unix.EpollCtl(p.epfd, op, st.fd, &ev)
	if err == nil {
		st.added = true
	}
	st.mu.Unlock()
	if err != nil {
		c.abort(fmt.Errorf("epoll_ctl: %w", err))
	}
}

// remove takes c off the poller before its socket is closed.
func (p *poller) remove(c *liveConn) {
	st := &c.poll
	st.mu.Lock()
	id := st.id
	if st.added && !st.done {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, st.fd, nil)
	}
	st.done = true
	st.mu.Unlock()
	if id == 0 {
		return
	}
	p.mu.Lock()
	delete(p.conns, id)
	last := len(p.conns) == 0
	p.mu.Unlock()
	if last {
		p.wake()
	}
}

func (p *poller) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.evfd, one[:])
}

// run is the loop: it hands readable connections to the readers until no
// connection is registered.
func (p *poller) run() {
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(p.epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.s.log.Error("epoll_wait: live connections will be read by goroutines", "err", err)
			p.mu.Lock()
			p.running = false
			p.failed = fmt.Errorf("epoll_wait: %w", err) // later sessions are not polled
			conns := make([]*liveConn, 0, len(p.conns))
			for _, c := range p.conns {
				conns = append(conns, c)
			}
			p.mu.Unlock()
			for _, c := range conns {
				c.abort(fmt.Errorf("epoll_wait: %w", err))
			}
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 { // the eventfd
				var buf [8]byte
				_, _ = unix.Read(p.evfd, buf[:])
				p.mu.Lock()
				if len(p.conns) == 0 {
					p.running = false
					p.mu.Unlock()
					return
				}
				p.mu.Unlock()
				continue
			}
			p.mu.Lock()
			c := p.conns[id]
			p.mu.Unlock()
			if c != nil {
				p.s.readers.run(c)
			}
		}
	}
}

// socketOf returns the socket of nc, or nil when it cannot be had. Only
// the runtime's own TCP and Unix connections give theirs: the poller reads
// and the broadcast writes (sendNow) the descriptor itself, which is right
// only where the bytes on it are the connection's bytes. Another type that
// has a SyscallConn (one that embeds a *net.TCPConn and changes what it
// reads or writes, say) is read and written through its own methods.
func socketOf(nc net.Conn) syscall.RawConn {
	var sc syscall.Conn
	switch c := nc.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// sendNow writes c.dbuf on the socket fd and sets c.dn to the bytes
// written: all of them when the socket has room, fewer or none (EAGAIN,
// or an error the writers' write will meet again) when it does not. It
// never waits: the broadcast's direct writes (liveConn.writeDirect), under
// wmu. It goes through RawConn.Control rather than Write, which would fail
// at once on a write deadline that a past write left behind.
//
// The call is one send(2) with MSG_DONTWAIT (the runtime made the socket
// non-blocking too) and MSG_NOSIGNAL (a closed peer is an error, not a
// signal), made as a raw system call. A call that cannot block needs none
// of the runtime's bookkeeping for one that may: with it, the runtime's
// monitor takes the processor from a write that outlasts its 20 µs tick
// and wakes another thread to run it, which on a server given one core
// costs a context switch or two on that core per such write, and keeps
// the monitor itself waking every 20 µs. send(2) rather than write(2)
// also skips the file layer (vfs_write) a socket does not need. Measured
// in docs/benchmarks.md ("Scenario 3: what the server's write costs above
// the floor's").
func (c *liveConn) sendNow(fd uintptr) {
	n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(unsafe.SliceData(c.dbuf))), uintptr(len(c.dbuf)),
		syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, 0, 0)
	if errno != 0 {
		n = 0
	}
	c.dn = int(n)
}

// close releases the descriptors; every session has ended.
func (p *poller) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.epfd >= 0 {
		_ = unix.Close(p.epfd)
		_ = unix.Close(p.evfd)
		p.epfd, p.evfd = -1, -1
	}
}
