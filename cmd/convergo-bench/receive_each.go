package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// receiveEach reads the messages of every subscriber in subs until the
// returned stop (idempotent) is called, with a goroutine per subscriber
// (receiveEpoll waits on one epoll set instead). on is called with subs[i]'s complete
// message and when it was read (arrival.host is not known: -1); msg is
// valid during the call only. on is called from the goroutine of
// subscriber i. ended is called once for a subscriber whose connection
// ends before stop (closed by the server, or an error), from the same
// goroutine.
func receiveEach(subs []*rawSub, base time.Time, on func(i int, msg []byte, at arrival), ended func(i int, err error)) (stop func(), err error) {
	var stopping atomic.Bool
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := s.next()
				if err != nil {
					if !stopping.Load() {
						ended(i, err)
					}
					return
				}
				on(i, m, arrival{read: time.Since(base).Nanoseconds(), host: -1})
			}
		}()
	}
	return sync.OnceFunc(func() {
		stopping.Store(true)
		for _, s := range subs {
			s.Close()
		}
		wg.Wait()
	}), nil
}

// arrival is when a subscriber's message arrived, in nanoseconds since the
// receiver's base time: read, when the read that completed it returned in
// the load generator; host, when the last segment of that read reached
// the host's network stack (the kernel's receive timestamp; -1: not
// known). On loopback host is the moment the server's write handed the
// segment over, so host - push is the server's latency whatever the
// generator's own backlog, and read - host is the generator's.
type arrival struct{ read, host int64 }
