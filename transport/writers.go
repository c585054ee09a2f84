package transport

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// connPool is a pool of workers of live connections: the server's writers
// (work is liveConn.flush) and its readers of polled connections (work is
// liveConn.readReady). A connection with work is handed to an idle worker,
// or a new one while there are fewer than size; beyond that it waits in a
// queue. Workers are goroutines that live while there is work and end
// after writerLinger without any, so an idle connection holds no goroutine
// for writing or reading. A write to a slow client blocks its writer (up to
// WriteTimeout), a reader may wait for a client's rate or for room in its
// queue: when the queue has waited for more than writerStall without any
// worker finishing a connection, an extra worker starts, which ends once
// the queue is empty. That is checked after writerStall whether or not
// another connection comes with work meanwhile (unstall): a client that
// keeps every worker busy must not leave another's work queued for good.
type connPool struct {
	work     func(*liveConn)
	size     int
	bg       *sync.WaitGroup // the server's background goroutines
	quit     chan struct{}   // closed by close: idle writers end
	closed   sync.Once
	mu       sync.Mutex
	queue    []*liveConn
	idle     []chan *liveConn // one per idle writer
	workers  int
	watching bool         // unstall is armed
	lastDone atomic.Int64 // unix nanos when a writer last finished a connection
}

const (
	writerLinger = 5 * time.Second
	writerStall  = 10 * time.Millisecond
)

func newConnPool(bg *sync.WaitGroup, work func(*liveConn)) *connPool {
	return &connPool{work: work, size: max(8, 4*runtime.GOMAXPROCS(0)), bg: bg, quit: make(chan struct{})}
}

// close ends the idle writers and those that become idle; the server is
// shutting down.
func (p *connPool) close() { p.closed.Do(func() { close(p.quit) }) }

// run has the pool's work done on c. For writers, the caller holds c's
// writing flag; for readers, c's readiness was taken off the poller.
func (p *connPool) run(c *liveConn) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		ch := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		ch <- c // buffered: never blocks
		return
	}
	stalled := len(p.queue) > 0 && time.Since(time.Unix(0, p.lastDone.Load())) > writerStall
	if p.workers < p.size || stalled {
		p.workers++
		p.mu.Unlock()
		p.bg.Add(1)
		go p.worker(c)
		return
	}
	p.queue = append(p.queue, c)
	p.watchLocked()
	p.mu.Unlock()
}

// watchLocked arms the stall check (unstall) unless it is armed: a
// connection waits in the queue, and if every worker stays busy (readers
// waiting for their clients' rate, writers for slow clients), no later
// run may come to start an extra one. Called with p.mu held.
func (p *connPool) watchLocked() {
	if p.watching {
		return
	}
	p.watching = true
	p.bg.Add(1)
	time.AfterFunc(writerStall, p.unstall)
}

// unstall starts an extra worker for the head of the queue when no
// worker finished a connection for writerStall, and checks again while
// connections wait.
func (p *connPool) unstall() {
	defer p.bg.Done()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.watching = false
	if len(p.queue) == 0 {
		return
	}
	if time.Since(time.Unix(0, p.lastDone.Load())) > writerStall {
		c := p.queue[0]
		p.queue[0] = nil
		p.queue = p.queue[1:]
		p.workers++
		p.bg.Add(1)
		go p.worker(c)
	}
	if len(p.queue) > 0 {
		p.watchLocked()
	}
}

func (p *connPool) worker(c *liveConn) {
	defer p.bg.Done()
	ch := make(chan *liveConn, 1)
	t := time.NewTimer(writerLinger)
	defer t.Stop()
	for {
		p.work(c)
		p.lastDone.Store(time.Now().UnixNano())
		p.mu.Lock()
		if len(p.queue) > 0 {
			c = p.queue[0]
			p.queue[0] = nil
			p.queue = p.queue[1:]
			p.mu.Unlock()
			continue
		}
		if p.workers > p.size { // an extra writer
			p.workers--
			p.mu.Unlock()
			return
		}
		p.idle = append(p.idle, ch)
		p.mu.Unlock()
		t.Reset(writerLinger)
		select {
		case c = <-ch:
			continue
		case <-t.C:
		case <-p.quit:
		}
		p.mu.Lock()
		for i, w := range p.idle {
			if w == ch { // still idle: end
				p.idle = append(p.idle[:i], p.idle[i+1:]...)
				p.workers--
				p.mu.Unlock()
				return
			}
		}
		p.mu.Unlock()
		c = <-ch // taken off the idle list by run: its connection follows
	}
}
