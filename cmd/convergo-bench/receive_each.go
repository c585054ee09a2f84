package main

import (
	"sync"
	"time"
)

// receiveEach reads the messages of every subscriber in subs until the
// returned stop (idempotent) is called, with a goroutine per subscriber
// (receiveEpoll waits on one epoll set instead). on is called with subs[i]'s complete
// message and the time (monotonic nanoseconds since base) it was read;
// msg is valid during the call only. on is called from the goroutine of
// subscriber i.
func receiveEach(subs []*rawSub, base time.Time, on func(i int, msg []byte, now int64)) (stop func(), err error) {
	var wg sync.WaitGroup
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				m, err := s.next()
				if err != nil {
					return
				}
				on(i, m, time.Since(base).Nanoseconds())
			}
		}()
	}
	return sync.OnceFunc(func() {
		for _, s := range subs {
			s.Close()
		}
		wg.Wait()
	}), nil
}
