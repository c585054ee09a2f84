package dynamodb

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Parking: the capture sink may fail a batch for a reason of one
// collection alone (its writers fenced out by a reshard interrupted and
// not run again, say). Reading the same records again until it heals, as
// for an error of the sink as a whole, would stop capture for every other
// collection, and after the stream's 24 hours drop their foreign writes.
// So the consumer applies the collections of a failed batch one by one,
// and the foreign writes of a collection whose changes still fail are
// parked: kept in stream order, out of the batches, while capture goes on
// for the others. Every later foreign write of a parked collection joins
// its queue, so a record's writes are applied in the order they were made.
// The queue is retried with a growing pause (stores.ParkRetryMax at
// most) and applied from its head once the sink takes it; a change the sink
// refuses then is reported and skipped as any refusal (RejectedCaptures),
// and a batch it refuses whole for good (stores.RefusedForGood) is offered
// one change at a time to find the one to report. While the sink does not
// take changes at all (Ready), tries wait and nothing is stamped.
//
// Stamps: a write is entered in the capture ledger (stamped) only when it
// is handed to the sink. A parked write that was stamped before its batch
// failed gets the same stamp again (the ledger holds its sequence number);
// the writes queued behind it are stamped when their turn comes, after
// what their record holds by then, so a later write of a record is stamped
// after an earlier one and the merge keeps the later. No later write of an
// item is ever entered in the ledger while an earlier one waits: the
// ledger would read the earlier one as handled.
//
// Crash safety: the queue lives in memory. A restart reads the stream from
// its oldest record, which re-offers every parked write still in it (the
// ledger gives a stamped one its stamp again, and the others are stamped
// in order). A write parked longer than the stream's retention is held in
// memory alone: the consumer says so at error level, once per collection.
//
// The queues are bounded in bytes (maxParkedBytes, all collections
// together). A foreign write of a parked collection that does not fit is
// not kept: it is left to the stream, counted (CaptureStats.Overflowed)
// and logged at error once per collection, every later write of the
// collection is left with it, and once the queue drains the consumer reads
// the stream again from its oldest record (as for a new sink), which
// offers them again as far as the stream still holds them. A collection
// parked while the bound is reached keeps none of its writes: it stays
// parked, and once there is room the stream is read again, which queues
// them for a try as any parked collection's.

var _ stores.CaptureParker = (*Store)(nil)

// maxParkedBytes bounds the foreign writes parked, all collections together
// (parkedSize of each).
const maxParkedBytes = 32 << 20

// streamRetention is how long DynamoDB Streams keeps a record.
const streamRetention = 24 * time.Hour

// parkedWrite is a foreign write waiting in its collection's queue.
type parkedWrite struct {
	w    foreignWrite
	item capturedItem
	size int
}

// parkedSize is the bytes a parked write counts for against maxParkedBytes:
// its key, fields and values, and a fixed overhead.
func parkedSize(w foreignWrite) int {
	n := 128 + len(w.key) + len(w.seq40)
	for name, v := range w.set {
		n += len(name) + len(v)
	}
	for _, name := range w.unset {
		n += len(name)
	}
	return n
}

// parkedColl is the queue of one parked collection.
type parkedColl struct {
	writes     []parkedWrite // in stream order
	seen       map[string]bool
	reason     string // the sink's last error
	since      time.Time
	attempts   int
	next       time.Time // no try before
	overflowed bool      // writes were left to the stream: read it again once drained
	single     bool      // the sink failed a batch for good: try one change at a time
	warned     bool      // a failed retry was logged at warn
	warnedOld  bool      // the retention error was logged
}

// ParkedCaptures implements stores.CaptureParker: the foreign writes
// parked now, collection by collection and in stream order within one
// (Position is the stream sequence number), with the reason: what an
// operator looks at when CaptureStats shows Parked above zero. Entering
// the parked state is logged at info (a one-off failure heals on the
// first retry), a first retry that fails too at warn, once per parking,
// and leaving it at info. The list is built on demand from the consumer's queues, so
// that parking a write costs the same however many are parked.
func (st *Store) ParkedCaptures() []stores.ParkedCapture {
	st.counters.mu.Lock()
	c := st.counters.parkSrc
	st.counters.mu.Unlock()
	if c == nil {
		return nil
	}
	return c.parkedList()
}

// ParkedCount implements stores.CaptureParker: CaptureStats().Parked.
func (st *Store) ParkedCount() int {
	st.counters.mu.Lock()
	defer st.counters.mu.Unlock()
	return int(st.counters.stats.Parked)
}

// parkedList lists the writes in c's queues (ParkedCaptures). It may be
// called from any goroutine: the consumer changes its queues under
// parkMu.
func (c *consumer) parkedList() []stores.ParkedCapture {
	c.parkMu.Lock()
	defer c.parkMu.Unlock()
	colls := make([]string, 0, len(c.parked))
	n := 0
	for coll, p := range c.parked {
		colls = append(colls, coll)
		n += len(p.writes)
	}
	slices.Sort(colls)
	list := make([]stores.ParkedCapture, 0, n)
	for _, coll := range colls {
		p := c.parked[coll]
		for _, pw := range p.writes {
			list = append(list, stores.ParkedCapture{Collection: coll, Key: pw.item.key, Position: pw.item.seq, Reason: p.reason, Since: p.since})
		}
	}
	return list
}

// isParked reports whether coll's foreign writes are parked.
func (c *consumer) isParked(coll string) bool { return c.parked[coll] != nil }

// park adds pw to its collection's queue, parking the collection, for
// reason, when it is not (reason is nil only for a parked one).
func (c *consumer) park(pw parkedWrite, reason error) {
	coll := pw.w.coll
	p := c.parked[coll]
	if p == nil {
		p = &parkedColl{seen: map[string]bool{}, since: c.st.now(), reason: reason.Error()}
		p.next = p.since.Add(c.parkPause(0))
		c.parkMu.Lock()
		c.parked[coll] = p
		c.parkMu.Unlock()
		// At info: a one-off failure heals on the first retry. One
		// that does not is logged at warn then (drain).
		c.log.Info("foreign writes of a collection parked: its changes fail, capture goes on for the other collections; retrying",
			"collection", coll, "item", pw.item.key, "stream_seq", pw.item.seq, "err", reason)
	}
	c.parkDirty = true
	id := pw.item.key + "@" + pw.w.seq40
	if p.seen[id] {
		return // read again (a new sink): queued already
	}
	if p.overflowed || c.parkedBytes+pw.size > c.maxParked {
		if !p.overflowed {
			c.log.Error("parked foreign writes are at their bound: the collection's later foreign writes are left to the stream and read again once its parked writes are applied; those the stream no longer holds by then (24 hours) are lost",
				"collection", coll, "max_parked_bytes", c.maxParked, "item", pw.item.key, "stream_seq", pw.item.seq)
		}
		p.overflowed = true
		c.st.counters.add(func(s *CaptureStats) { s.Overflowed++ })
		return
	}
	p.seen[id] = true
	c.parkMu.Lock()
	p.writes = append(p.writes, pw)
	c.parkMu.Unlock()
	c.parkedBytes += pw.size
	c.parkedCount++
}

// parkPause is the pause before the next try of a collection that failed
// attempts times in a row.
func (c *consumer) parkPause(attempts int) time.Duration {
	return min(backoff(attempts)*8, stores.ParkRetryMax)
}

// retryParked tries the parked collections whose pause is over, applying
// each queue from its head until it is empty or the sink fails it again
// (or does not take changes now). An error is the ledger's, or
// errSinkGone: the queues are kept and tried again later.
func (c *consumer) retryParked(ctx context.Context) (progressed bool, err error) {
	if len(c.parked) == 0 {
		return false, nil
	}
	defer c.publishParked()
	reg, _ := c.st.acquireSink()
	if reg == nil {
		return false, nil // no sink: parked writes wait for one
	}
	defer reg.calls.Done()
	now := c.st.now()
	colls := make([]string, 0, len(c.parked))
	for coll := range c.parked {
		colls = append(colls, coll)
	}
	slices.Sort(colls)
	for _, coll := range colls {
		p := c.parked[coll]
		if !p.warnedOld && len(p.writes) > 0 && now.Sub(p.writes[0].w.created) > streamRetention {
			p.warnedOld = true
			c.log.Error("parked foreign writes are older than the stream's 24-hour retention: this server's memory holds the only copy, and a restart loses them; lift what fails the collection's writes (finish an interrupted reshard: convergo store reshard)",
				"collection", coll, "parked", len(p.writes), "since", p.since, "err", p.reason)
		}
		if now.Before(p.next) {
			continue
		}
		n, err := c.drain(ctx, reg, coll, p)
		if n > 0 {
			progressed = true
		}
		if err != nil {
			return progressed, err
		}
	}
	return progressed, nil
}

// drain applies p's writes from its head. It returns how many left the
// queue.
func (c *consumer) drain(ctx context.Context, reg *sinkReg, coll string, p *parkedColl) (int, error) {
	if len(p.writes) == 0 && p.overflowed {
		// Parked at the bound, the collection kept none of its writes:
		// there is nothing to try, and the sink has not taken it. Once
		// there is room, the stream is read again with the collection
		// still parked, which queues its writes again for a try; until
		// then it waits.
		p.attempts++
		p.next = c.st.now().Add(c.parkPause(p.attempts))
		if c.parkedBytes < c.maxParked {
			p.overflowed = false
			c.reread = true
		}
		return 0, nil
	}
	done := 0
	for len(p.writes) > 0 {
		if err := reg.sink.CheckReady(reg.ctx); err != nil {
			if reg.ctx.Err() != nil && ctx.Err() == nil {
				return done, errSinkGone
			}
			// Not now for any collection: stamp nothing, try later,
			// and let the consumer read the stream meanwhile (its
			// batches meet the same answer, and wake-ups go on).
			p.next = c.st.now().Add(c.parkPause(p.attempts))
			return done, nil
		}
		// A batch holds at most one write per item (as handle's), so
		// that each is stamped after the one before it was applied.
		var batch []crdt.Change
		var writes []parkedWrite
		taken, inBatch := 0, map[string]bool{}
		for _, pw := range p.writes {
			if inBatch[pw.w.key] || len(batch) == stores.MaxBatch || p.single && len(batch) == 1 {
				break
			}
			taken++
			ch, ok, err := c.stamp(ctx, pw.w, pw.item)
			if err != nil {
				return done, err
			}
			if ok {
				batch, writes = append(batch, ch), append(writes, pw)
				inBatch[pw.w.key] = true
			}
		}
		if len(batch) > 0 {
			results, err := reg.sink.Apply(reg.ctx, batch)
			switch {
			case err != nil && reg.ctx.Err() != nil && ctx.Err() == nil:
				return done, errSinkGone
			case err != nil && stores.RefusedForGood(err) && len(batch) > 1:
				p.single = true // find the change that fails, alone
				continue
			case err != nil && stores.RefusedForGood(err):
				// Final: reported with its key and reason, not retried.
				results = []stores.CaptureResult{{Err: err}}
			case err != nil:
				p.attempts++
				c.parkMu.Lock()
				p.reason = err.Error()
				c.parkMu.Unlock()
				p.next = c.st.now().Add(c.parkPause(p.attempts))
				c.parkDirty = true
				if !p.warned {
					p.warned = true
					c.log.Warn("foreign writes of a collection still parked after a retry: its changes fail, capture goes on for the other collections; retrying with a growing pause",
						"collection", coll, "parked", len(p.writes), "since", p.since, "err", err)
				} else {
					c.log.Debug("parked foreign writes still fail", "collection", coll, "attempt", p.attempts, "err", err)
				}
				return done, nil
			case len(results) != len(batch):
				return done, fmt.Errorf("capture sink: %d results for %d changes", len(results), len(batch))
			}
			c.settle(results, writes)
		}
		for _, pw := range p.writes[:taken] {
			c.parkedBytes -= pw.size
			delete(p.seen, pw.item.key+"@"+pw.w.seq40)
		}
		c.parkMu.Lock()
		p.writes = p.writes[taken:]
		c.parkMu.Unlock()
		c.parkedCount -= taken
		done += taken
		c.parkDirty = true
	}
	c.parkMu.Lock()
	delete(c.parked, coll)
	c.parkMu.Unlock()
	c.log.Info("parked foreign writes of a collection applied; capturing it again", "collection", coll, "parked_since", p.since, "attempts", p.attempts)
	if p.overflowed {
		c.log.Warn("reading the stream again from its oldest record for the foreign writes left to it while the collection was parked", "collection", coll)
		c.reread = true
	}
	return done, nil
}

// deliver hands changes (stamped from writes) to the sink, at most
// MaxBatch at a time. When the sink fails a batch, its collections are
// tried one by one, and those that still fail are parked (see above); a
// change of a collection parked meanwhile is parked without a try. Only
// an error of the sink as a whole (it does not take changes now, or it
// was stopped) fails the call.
func (c *consumer) deliver(ctx context.Context, reg *sinkReg, batch []crdt.Change, writes []parkedWrite) error {
	for len(batch) > 0 {
		k := min(len(batch), stores.MaxBatch)
		chunk, cw := c.parkParked(batch[:k], writes[:k])
		batch, writes = batch[k:], writes[k:]
		if len(chunk) == 0 {
			continue
		}
		results, err := reg.sink.Apply(reg.ctx, chunk)
		switch {
		case err != nil && reg.ctx.Err() != nil && ctx.Err() == nil:
			return errSinkGone
		case err != nil:
			if err := c.split(ctx, reg, chunk, cw, err); err != nil {
				return err
			}
		case len(results) != len(chunk):
			return fmt.Errorf("capture sink: %d results for %d changes", len(results), len(chunk))
		default:
			c.settle(results, cw)
		}
	}
	return nil
}

// parkParked parks the changes of collections parked now, and returns the
// others.
func (c *consumer) parkParked(batch []crdt.Change, writes []parkedWrite) ([]crdt.Change, []parkedWrite) {
	var keep []crdt.Change
	var kw []parkedWrite
	for i, ch := range batch {
		if c.isParked(ch.Collection) {
			c.park(writes[i], nil)
			continue
		}
		keep, kw = append(keep, ch), append(kw, writes[i])
	}
	return keep, kw
}

// split handles a batch the sink failed with err: unless the sink fails
// as a whole, each collection's changes are tried alone, and a collection
// whose changes fail is parked.
func (c *consumer) split(ctx context.Context, reg *sinkReg, batch []crdt.Change, writes []parkedWrite, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("capture sink: %w", err)
	}
	if rerr := reg.sink.CheckReady(reg.ctx); rerr != nil {
		return fmt.Errorf("capture sink: %w", err) // not now, for every collection
	}
	var colls []string
	idx := map[string][]int{}
	for i, ch := range batch {
		if idx[ch.Collection] == nil {
			colls = append(colls, ch.Collection)
		}
		idx[ch.Collection] = append(idx[ch.Collection], i)
	}
	for _, coll := range colls {
		gerr := err
		if len(colls) > 1 {
			var group []crdt.Change
			var gw []parkedWrite
			for _, i := range idx[coll] {
				group, gw = append(group, batch[i]), append(gw, writes[i])
			}
			var results []stores.CaptureResult
			results, gerr = reg.sink.Apply(reg.ctx, group)
			switch {
			case gerr != nil && reg.ctx.Err() != nil && ctx.Err() == nil:
				return errSinkGone
			case gerr == nil && len(results) != len(group):
				return fmt.Errorf("capture sink: %d results for %d changes", len(results), len(group))
			case gerr == nil:
				c.settle(results, gw)
				continue
			}
		}
		for _, i := range idx[coll] {
			c.park(writes[i], gerr)
		}
	}
	return nil
}

// settle counts the changes the sink took and reports those it refused.
func (c *consumer) settle(results []stores.CaptureResult, writes []parkedWrite) {
	var applied uint64
	for _, r := range results {
		if r.Err == nil {
			applied++
		}
	}
	c.st.counters.mu.Lock()
	c.st.counters.stats.Captured += int64(len(results))
	c.st.counters.applied += applied
	c.st.counters.mu.Unlock()
	for i, r := range results {
		if r.Err != nil {
			c.reject(writes[i].item, r.Err, true)
		}
	}
	c.log.Debug("captured foreign writes", "changes", len(results))
}

// publishParked updates what CaptureStats shows of the parked writes,
// when they changed: their number and bytes, kept as they change (the
// list is built on demand: ParkedCaptures).
func (c *consumer) publishParked() {
	if !c.parkDirty {
		return
	}
	c.parkDirty = false
	c.st.counters.mu.Lock()
	c.st.counters.stats.Parked = int64(c.parkedCount)
	c.st.counters.stats.ParkedBytes = int64(c.parkedBytes)
	c.st.counters.mu.Unlock()
}
