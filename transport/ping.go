package transport

import (
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// pingSlots is how many parts a ping interval is cut into: the pinger
// ticks pingSlots times per PingInterval and pings the connections of one
// slot per tick, so that connections opened together are not all pinged
// at once.
const pingSlots = 16

// pinger is the server's one pinger of live connections: a timer wheel of
// pingSlots slots over PingInterval. Each tick it has a ping written to the
// connections of the next slot (by the writers: a ping is a flag on the
// connection, and its pong, read like any frame, counts as hearing from the
// client) and closes every connection silent for IdleTimeout. It runs while
// there are live connections, so an idle connection holds no goroutine for
// pings.
type pinger struct {
	s       *Server
	mu      sync.Mutex
	slots   [pingSlots]map[*liveConn]struct{}
	n       int // connections
	next    int // the slot of the next connection
	running bool
	stop    chan struct{}
}

func newPinger(s *Server) *pinger {
	p := &pinger{s: s}
	for i := range p.slots {
		p.slots[i] = map[*liveConn]struct{}{}
	}
	return p
}

// add puts c on the wheel, starting the pinger if it is not running.
func (p *pinger) add(c *liveConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.slot = p.next
	p.next = (p.next + 1) % pingSlots
	p.slots[c.slot][c] = struct{}{}
	p.n++
	if !p.running {
		p.running = true
		p.stop = make(chan struct{})
		p.s.bg.Add(1)
		go func(stop chan struct{}) { defer p.s.bg.Done(); p.run(stop) }(p.stop)
	}
}

// remove takes c off the wheel; the pinger ends with the last connection.
func (p *pinger) remove(c *liveConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.slots[c.slot][c]; !ok {
		return
	}
	delete(p.slots[c.slot], c)
	p.n--
	if p.n == 0 && p.running {
		p.running = false
		close(p.stop)
	}
}

func (p *pinger) run(stop chan struct{}) {
	tick := p.s.timing.ping / pingSlots
	if q := p.s.timing.idle / 4; q < tick {
		tick = q
	}
	tick = max(tick, time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	slot := 0
	var due, silent []*liveConn
	lastPing := time.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		now := p.s.now()
		idle := p.s.timing.idle
		pingNow := time.Since(lastPing) >= p.s.timing.ping/pingSlots
		due, silent = due[:0], silent[:0]
		p.mu.Lock()
		for i := range p.slots {
			for c := range p.slots[i] {
				if now.Sub(time.Unix(0, c.heard.Load())) >= idle {
					silent = append(silent, c)
				} else if pingNow && i == slot {
					due = append(due, c)
				}
			}
		}
		p.mu.Unlock()
		if pingNow {
			lastPing = time.Now()
			slot = (slot + 1) % pingSlots
		}
		for _, c := range due {
			c.wantPing()
		}
		for _, c := range silent {
			p.remove(c)
			p.s.bg.Add(1)
			go func() { defer p.s.bg.Done(); c.closeSilent(now.Sub(time.Unix(0, c.heard.Load()))) }()
		}
		clear(due)
		clear(silent)
	}
}

// closeSilent closes a connection the client has been silent on for
// IdleTimeout.
func (c *liveConn) closeSilent(silent time.Duration) {
	c.s.log.Info("live client silent: closing", "addr", c.addr, "silent", silent)
	c.closeWith(ws.StatusPolicyViolation, "no answer")
}
