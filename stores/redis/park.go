package redis

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

var _ stores.CaptureParker = (*Store)(nil)

// Parking: the sink may fail a delivery for a reason of one collection
// alone. Queuing every key of the delivery again together, as for an
// error of the sink as a whole, would make every later batch that holds
// one of that collection's keys fail whole, and stop capture for the
// others. So when the sink fails a delivery but still takes changes
// (Ready), the changes are tried collection by collection, and the keys
// of a collection whose changes still fail are parked: held out of the
// queue (a key of it queued meanwhile, by a notification or a
// reconciliation pass, joins them) and queued again for a try after a
// growing pause (stores.ParkRetryMax at most). The collection leaves the
// parked state when a delivery of its keys succeeds. Nothing is lost meanwhile:
// what the app wrote stays in its hash, and what capture stamped stays
// pending in the shadow (offered again, with its stamps, until the sink
// acknowledges it), so a restart finds it again; a record's writes are
// captured in the order they were made, as on any retry.

// parkedColl is a parked collection: its keys (true: to be offered again,
// as in the queue) and the state of its tries.
type parkedColl struct {
	keys     map[string]bool
	reason   string // the sink's last error
	since    time.Time
	attempts int       // tries that failed
	next     time.Time // no try before
	trying   bool      // its keys are in the queue for a try
	warned   bool      // a failed try was logged at warn
}

// parkPause is the pause before the next try of a collection that failed
// attempts times in a row.
func parkPause(attempts int) time.Duration {
	return min(100*time.Millisecond<<min(attempts, 9), stores.ParkRetryMax)
}

// divert moves key into its collection's parked keys when the collection
// is parked and not being tried, and reports whether it did. c.mu is held.
func (c *capturer) divert(key string, again bool) bool {
	r, _, ok := c.rule(key)
	if !ok {
		return false
	}
	p := c.parked[r.Collection]
	if p == nil || p.trying {
		return false
	}
	p.keys[key] = p.keys[key] || again
	return true
}

// park parks coll with keys (true: to be offered again) after the sink
// failed its changes with err.
func (c *capturer) park(coll string, keys map[string]bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	p := c.parked[coll]
	switch {
	case p == nil:
		p = &parkedColl{keys: map[string]bool{}, since: now}
		c.parked[coll] = p
		// At info: a one-off failure heals on the first try. One that
		// does not is logged at warn then.
		c.s.log.Info("capture: a collection's changes fail; its keys are parked and retried, capture goes on for the other collections",
			"collection", coll, "keys", len(keys), "err", err)
	case p.trying:
		// A try failed: one attempt, however many of its keys fail
		// (alone offers them one by one, and parks each), so that the
		// pause grows once per try. The try's other keys find the
		// collection parked and not being tried, and join its keys.
		p.attempts++
		if !p.warned {
			p.warned = true
			c.s.log.Warn("capture: a parked collection's changes still fail after a retry; its keys stay parked and are retried with a growing pause, capture goes on for the other collections",
				"collection", coll, "keys", len(p.keys), "since", p.since, "err", err)
		} else {
			c.s.log.Debug("capture: parked collection still fails", "collection", coll, "attempt", p.attempts, "err", err)
		}
	}
	p.reason, p.trying, p.next = err.Error(), false, now.Add(parkPause(p.attempts))
	for k, again := range keys {
		p.keys[k] = p.keys[k] || again
	}
}

// unpark ends the parked state of the collections in colls that were
// being tried: a delivery of their keys succeeded.
func (c *capturer) unpark(colls map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for coll := range colls {
		if p := c.parked[coll]; p != nil && p.trying {
			delete(c.parked, coll)
			c.s.log.Info("capture: a parked collection's changes were taken; capturing it again", "collection", coll, "parked_since", p.since, "attempts", p.attempts)
		}
	}
}

// tryParked queues the keys of the parked collections whose pause is over,
// for a try, and returns how long until the next one is due (0: none).
func (c *capturer) tryParked() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.parked) == 0 {
		return 0
	}
	now := c.now()
	var next time.Duration
	for _, p := range c.parked {
		if p.trying {
			continue
		}
		if d := p.next.Sub(now); d > 0 {
			if next == 0 || d < next {
				next = d
			}
			continue
		}
		p.trying = true
		for k, again := range p.keys {
			c.queue[k] = c.queue[k] || again
		}
	}
	return next
}

// ParkedCaptures implements stores.CaptureParker: the keys of the parked
// collections (Position is empty), by collection and key.
func (s *Store) ParkedCaptures() []stores.ParkedCapture {
	c := s.capture
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []stores.ParkedCapture
	for coll, p := range c.parked {
		for k := range p.keys {
			out = append(out, stores.ParkedCapture{Collection: coll, Key: k, Reason: p.reason, Since: p.since})
		}
	}
	slices.SortFunc(out, func(a, b stores.ParkedCapture) int {
		return cmp.Or(cmp.Compare(a.Collection, b.Collection), cmp.Compare(a.Key, b.Key))
	})
	return out
}

// ParkedCount implements stores.CaptureParker: Stats().CaptureParked.
func (s *Store) ParkedCount() int {
	if s.capture == nil {
		return 0
	}
	return int(s.capture.parkedKeys())
}

// parkedKeys counts the keys of the parked collections.
func (c *capturer) parkedKeys() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n uint64
	for _, p := range c.parked {
		n += uint64(len(p.keys))
	}
	return n
}

// alone offers the changes of g (of collection coll), which the sink
// refused for good as a batch, one at a time: a change refused for good
// alone is reported and acknowledged as any refusal (not retried), one
// taken is acknowledged, and the key of one that fails otherwise parked.
func (c *capturer) alone(ctx context.Context, reg *sinkReg, coll string, g []pending, again map[string]bool) error {
	for _, p := range g {
		res, err := reg.sink.Apply(ctx, []crdt.Change{p.change})
		switch {
		case err != nil && reg.ctx.Err() != nil:
			return err // stopped: the keys are queued again
		case stores.RefusedForGood(err):
			res, err = []stores.CaptureResult{{Err: err}}, nil
		case err == nil && len(res) != 1:
			return fmt.Errorf("capture sink returned %d results for 1 change", len(res))
		}
		if err != nil {
			c.park(coll, map[string]bool{p.key: again[p.key]}, err)
			continue
		}
		if err := c.acknowledge(ctx, []pending{p}, res); err != nil {
			return err
		}
	}
	return nil
}

// split handles a delivery of ps that the sink failed with err while it
// still takes changes: each collection's changes are offered alone, those
// taken acknowledged, and the keys of a collection whose changes still
// fail parked. keys and again are the delivery's, so that a key of a
// parked collection that gave no change keeps its place.
func (c *capturer) split(ctx context.Context, reg *sinkReg, ps []pending, again map[string]bool, err error) error {
	var colls []string
	groups := map[string][]pending{}
	for _, p := range ps {
		coll := p.change.Collection
		if groups[coll] == nil {
			colls = append(colls, coll)
		}
		groups[coll] = append(groups[coll], p)
	}
	for _, coll := range colls {
		g := groups[coll]
		gerr := err
		if len(colls) > 1 {
			changes := make([]crdt.Change, len(g))
			for i, p := range g {
				changes[i] = p.change
			}
			var res []stores.CaptureResult
			res, gerr = reg.sink.Apply(ctx, changes)
			if gerr == nil {
				if len(res) != len(g) {
					return fmt.Errorf("capture sink returned %d results for %d changes", len(res), len(g))
				}
				if err := c.acknowledge(ctx, g, res); err != nil {
					return err
				}
				continue
			}
			if reg.ctx.Err() != nil {
				return gerr // stopped: the keys are queued again
			}
		}
		if stores.RefusedForGood(gerr) {
			if err := c.alone(ctx, reg, coll, g, again); err != nil {
				return err
			}
			continue
		}
		keys := make(map[string]bool, len(g))
		for _, p := range g {
			keys[p.key] = again[p.key]
		}
		c.park(coll, keys, gerr)
	}
	return nil
}
