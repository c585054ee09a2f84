package main

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// receiveEpoll reads the messages of every subscriber in subs until the
// returned stop (idempotent) is called: one goroutine waits on one epoll set for all of
// them and reads each ready connection once, so a delivery costs the
// generator one recvmsg system call and its share of an epoll_wait (a
// goroutine per connection costs a second read that finds nothing, a
// park and a wake-up). on is called with subs[i]'s complete message and
// when it arrived (see arrival); msg is valid during the call only. ended
// is called once for a subscriber whose connection ends before stop
// (closed by the server, or an error). Both are called from one goroutine.
//
// Every descriptor asks the kernel for receive timestamps
// (SO_TIMESTAMPNS): recvmsg then also says when the last segment it read
// reached this host's network stack, which does not depend on how soon
// the generator, one process on one core for all subscribers, gets to it.
func receiveEpoll(subs []*rawSub, base time.Time, on func(i int, msg []byte, at arrival), ended func(i int, err error)) (stop func(), err error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll: %w", err)
	}
	baseWall := base.UnixNano()
	oob := make([]byte, syscall.CmsgSpace(16)) // one timespec; used by the receiving goroutine only
	host := make([]int64, len(subs))           // subscriber i's last kernel receipt, nanoseconds since base
	reads := make([]func([]byte) (int, error), len(subs))
	fds := make([]int, len(subs))
	for i, s := range subs {
		sc, ok := s.conn.(syscall.Conn)
		if !ok {
			syscall.Close(epfd)
			return nil, errors.New("receive: not a system connection")
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			syscall.Close(epfd)
			return nil, err
		}
		rc.Control(func(fd uintptr) { fds[i] = int(fd) })
		fd := fds[i]
		if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TIMESTAMPNS, 1); err != nil {
			syscall.Close(epfd)
			return nil, fmt.Errorf("receive timestamps: %w", err)
		}
		host[i] = -1
		// The descriptor stays non-blocking (the runtime set it so): a read
		// that finds nothing says EAGAIN and is tried again when ready.
		reads[i] = func(p []byte) (int, error) {
			for {
				n, oobn, _, _, err := syscall.Recvmsg(fd, p, oob, 0)
				if err == syscall.EINTR {
					continue
				}
				if n == 0 && err == nil {
					return 0, errClosed
				}
				if n > 0 {
					host[i] = -1
					if t, ok := rxTimestamp(oob[:oobn]); ok {
						host[i] = t - baseWall
					}
				}
				return n, err
			}
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(i)}
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			syscall.Close(epfd)
			return nil, fmt.Errorf("epoll add: %w", err)
		}
	}
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		gone := make([]bool, len(subs))
		end := func(i int, err error) {
			if !gone[i] {
				gone[i] = true
				syscall.EpollCtl(epfd, syscall.EPOLL_CTL_DEL, fds[i], nil)
				ended(i, err)
			}
		}
		drain := func(i int, now int64) {
			s := subs[i]
			for {
				m, ok, err := s.parse()
				if err != nil {
					end(i, err)
					return
				}
				if !ok {
					return
				}
				on(i, m, arrival{read: now, host: host[i]})
			}
		}
		// Frames read with the handshake are already here.
		now := time.Since(base).Nanoseconds()
		for i := range subs {
			drain(i, now)
		}
		events := make([]syscall.EpollEvent, 512)
		for {
			select {
			case <-quit:
				return
			default:
			}
			n, err := syscall.EpollWait(epfd, events, 50)
			if err != nil {
				if err == syscall.EINTR {
					continue
				}
				return
			}
			for _, ev := range events[:n] {
				i := int(ev.Fd)
				err := subs[i].fill(reads[i])
				if errors.Is(err, syscall.EAGAIN) {
					continue
				}
				if err != nil {
					end(i, err)
					continue
				}
				drain(i, time.Since(base).Nanoseconds())
			}
		}
	}()
	return sync.OnceFunc(func() {
		close(quit)
		<-done
		syscall.Close(epfd)
	}), nil
}

// rxTimestamp finds the SCM_TIMESTAMPNS message in oob, the control data
// of one recvmsg, and returns its time in Unix nanoseconds.
func rxTimestamp(oob []byte) (int64, bool) {
	for len(oob) >= syscall.SizeofCmsghdr {
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if h.Len < syscall.SizeofCmsghdr || int(h.Len) > len(oob) {
			return 0, false
		}
		data := oob[syscall.CmsgLen(0):h.Len]
		if h.Level == syscall.SOL_SOCKET && h.Type == syscall.SCM_TIMESTAMPNS && len(data) >= 16 {
			ts := (*syscall.Timespec)(unsafe.Pointer(&data[0]))
			return ts.Nano(), true
		}
		oob = oob[min(len(oob), syscall.CmsgSpace(int(h.Len)-syscall.CmsgLen(0))):]
	}
	return 0, false
}
