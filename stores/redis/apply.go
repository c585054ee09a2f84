package redis

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Limits of one merge script call. Redis runs nothing else while a script
// runs, so a call is kept to milliseconds of work even for the largest
// records; the changes of a collection beyond these limits go in several
// calls.
const (
	maxScriptChanges = 256
	maxScriptBytes   = 1 << 20
)

// Limits of one round trip: how many script calls, and how many bytes of
// their arguments, a pipeline takes from its queue.
const (
	maxGroupCalls = 64
	maxGroupBytes = 8 << 20
)

// Apply implements stores.Store. The changes of each collection go to Redis
// in one merge script call, which is atomic, or in several when they pass
// maxScriptChanges or maxScriptBytes. The calls join their hash slot's
// queue (one queue for a single server), and the queue's round trips send
// every call gathered while the previous one was in flight as one pipeline
// (group commit, see doc.go). An error can leave some changes applied and
// others not, which the contract allows (a retry of the batch completes
// it). If ctx ends first Apply returns its error, and the changes may or
// may not commit.
func (s *Store) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	if err := stores.CheckApply(changes); err != nil {
		return nil, err
	}
	var order []string
	groups := map[string][]int{}
	for i, c := range changes {
		if err := checkRecord(c.Record); err != nil {
			return nil, fmt.Errorf("apply change %d (%s/%s): %w", i, c.Collection, c.Record.ID, err)
		}
		if _, ok := groups[c.Collection]; !ok {
			order = append(order, c.Collection)
		}
		groups[c.Collection] = append(groups[c.Collection], i)
	}
	req := &applyRequest{ctx: ctx, results: make([]stores.Result, len(changes)), done: make(chan struct{})}
	if len(changes) == 0 {
		return req.results, nil
	}
	var calls []*scriptCall
	for _, coll := range order {
		calls = s.scriptCalls(calls, req, coll, changes, groups[coll])
	}
	req.left.Store(int32(len(calls)))
	if err := s.commits.submit(s, calls); err != nil {
		return nil, err
	}
	select {
	case <-req.done:
		if req.err != nil {
			return nil, req.err
		}
		return req.results, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("apply: %w", ctx.Err())
	}
}

// scriptCalls cuts the changes idx of collection coll into script calls and
// appends them to calls.
//
// A call's arguments cost no allocation each: the argument list holds
// pointers to the call's own ids and blobs (go-redis writes *string and
// encoding.BinaryMarshaler arguments as they are), where a string or a
// []byte put in a []any allocates its header. The blobs are empty until
// encodeBlobs encodes them, which readStored does only for a call the
// script merges itself: with a plan the script needs none. The list has
// room for the compare-and-set section that readStored appends.
func (s *Store) scriptCalls(calls []*scriptCall, req *applyRequest, coll string, changes []crdt.Change, idx []int) []*scriptCall {
	slot := -1
	if s.commits.slotted {
		slot = keySlot(coll)
	}
	for len(idx) > 0 {
		n, size := 0, 0
		for n < len(idx) && n < maxScriptChanges {
			b := blobSize(changes[idx[n]].Record)
			if n > 0 && size+b > maxScriptBytes {
				break
			}
			size += b
			n++
		}
		sc := &scriptCall{req: req, coll: coll, slot: slot, idx: idx[:n], bytes: size}
		sc.recs = make([]crdt.Record, n)
		sc.blobs = make([]blobArg, n)
		args := make([]any, 0, mergeArgs+2*n+casArgs+2*n)
		args = append(args, s.channel, coll, s.maxRecordBytes, crdt.MaxFieldsPerRecord, uint64(MaxSeq), n)
		for k, i := range idx[:n] {
			sc.recs[k] = changes[i].Record
			args = append(args, &sc.recs[k].ID, &sc.blobs[k])
		}
		sc.args = args
		calls = append(calls, sc)
		idx = idx[n:]
	}
	return calls
}

// The merge script's arguments before the changes (channel, collection,
// limits, the number of changes), and before the records of the
// compare-and-set section (the foreseen head, verdicts, info): merge.lua.
const (
	mergeArgs = 6
	casArgs   = 3
)

// encodeBlobs encodes the changes' blobs into sc's arguments, in one
// buffer, for a call that the script merges itself: one without a plan.
func (sc *scriptCall) encodeBlobs() {
	buf := make([]byte, 0, sc.bytes)
	for k := range sc.recs {
		start := len(buf)
		buf = appendBlob(buf, 0, sc.recs[k])
		sc.blobs[k] = blobArg(buf[start:len(buf):len(buf)])
	}
}

// dropPlan makes sc a call that the script merges itself: without the
// compare-and-set section, with the change blobs. The script refused it
// (errStale) because a record had changed since Go read it.
func (sc *scriptCall) dropPlan() {
	n := mergeArgs + 2*len(sc.recs)
	clear(sc.args[n:])
	sc.args, sc.plan = sc.args[:n], nil
	sc.encodeBlobs()
}

// staleReply starts the merge script's error reply to a call with a plan
// and no change blobs whose records changed since Go read them
// (merge.lua): it wrote nothing.
const staleReply = "CONVERGO-STALE"

// blobArg is a blob in a script call's arguments. A pointer to it, an
// encoding.BinaryMarshaler, goes into the argument list without an
// allocation, and go-redis writes the bytes as they are.
type blobArg []byte

// MarshalBinary implements encoding.BinaryMarshaler.
func (b *blobArg) MarshalBinary() ([]byte, error) { return *b, nil }

// applyRequest is one Apply call waiting for its script calls.
type applyRequest struct {
	ctx     context.Context
	results []stores.Result
	left    atomic.Int32  // script calls not finished
	done    chan struct{} // closed when the last one finishes
	mu      sync.Mutex
	err     error // the first call's error
}

func (r *applyRequest) finish(err error) {
	if err != nil {
		r.mu.Lock()
		if r.err == nil {
			r.err = err
		}
		r.mu.Unlock()
	}
	if r.left.Add(-1) == 0 {
		close(r.done)
	}
}

// scriptCall is one merge script call: changes idx of its request, all of
// collection coll, whose keys are in hash slot slot (-1 on a single
// server).
type scriptCall struct {
	req   *applyRequest
	coll  string
	slot  int
	idx   []int
	recs  []crdt.Record // the changes' records, in the order of idx
	blobs []blobArg     // their blobs (encodeBlobs), empty with a plan
	args  []any         // the script's ARGV: the changes (their blobs empty with a plan), then the plan's
	bytes int           // the size of the change blobs (blobSize)
	// plan is the call's merge in Go (cas.go), nil when the script merges
	// every change itself.
	plan *casPlan
	cmd  *goredis.Cmd
	// fell marks the plan's records that the script merged itself, and
	// ok says the call's reply was read without error.
	fell []bool
	ok   bool
}

// committer gathers the script calls of concurrent Apply calls. Each hash
// slot (one queue on a single server) has a queue, and while a queue has
// calls one goroutine sends them: it takes what is queued (up to
// maxGroupCalls and maxGroupBytes), sends it as one pipeline, answers each
// call from its own reply, and goes on with what queued meanwhile.
type committer struct {
	slotted bool // a cluster client: one queue per hash slot

	mu      sync.Mutex
	closed  bool
	queues  map[int]*commitQueue
	running sync.WaitGroup

	// roundTrips counts the pipelines of script calls sent; beforeExec,
	// when set (tests), runs before each is sent (after the reads of its
	// records) with the number of script calls in it.
	roundTrips atomic.Uint64
	beforeExec func(calls int)
	// fellBack counts the records of the calls that the merge script
	// merged itself because one of their records had changed since Go
	// read it (it refused the call with its plan, and the call went
	// again without: cas.go).
	fellBack atomic.Uint64
	// recordsRead counts the records read before round trips: those
	// that neither the written cache nor an earlier call of the round
	// gave (cas.go).
	recordsRead atomic.Uint64
}

type commitQueue struct {
	pending []*scriptCall
	busy    bool // a goroutine is sending this queue's calls
}

// submit queues calls and starts a sender for each queue that has none.
func (c *committer) submit(s *Store, calls []*scriptCall) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return stores.ErrClosed
	}
	if c.queues == nil {
		c.queues = map[int]*commitQueue{}
	}
	for _, sc := range calls {
		q := c.queues[sc.slot]
		if q == nil {
			q = &commitQueue{}
			c.queues[sc.slot] = q
		}
		q.pending = append(q.pending, sc)
		if !q.busy {
			q.busy = true
			c.running.Add(1)
			go c.send(s, q)
		}
	}
	return nil
}

// close refuses new calls and waits until the queued ones are answered.
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.running.Wait()
}

// send sends q's calls, a round trip at a time, until q is empty.
func (c *committer) send(s *Store, q *commitQueue) {
	defer c.running.Done()
	for {
		c.mu.Lock()
		n, size := 0, 0
		for n < len(q.pending) && n < maxGroupCalls {
			if n > 0 && size+q.pending[n].bytes > maxGroupBytes {
				break
			}
			size += q.pending[n].bytes
			n++
		}
		if n == 0 {
			q.busy, q.pending = false, nil
			c.mu.Unlock()
			return
		}
		group := slices.Clone(q.pending[:n])
		clear(q.pending[:n])
		q.pending = q.pending[n:]
		c.mu.Unlock()
		s.roundTrip(group)
	}
}

// roundTrip reads the stored records of group's calls in one pipeline and
// merges them in Go (readStored), then sends group as one pipeline of
// merge script calls and answers each call from its own reply: one call's
// error does not touch the others'. A call whose caller has gone is left out. The pipeline is
// bounded by the latest of the callers' deadlines (and by the client's
// socket timeouts), so no caller's cancellation fails the others.
func (s *Store) roundTrip(group []*scriptCall) {
	live := group[:0]
	var deadline time.Time
	bounded := true
	for _, sc := range group {
		if err := sc.req.ctx.Err(); err != nil {
			sc.req.finish(fmt.Errorf("apply to %s: %w", sc.coll, err))
			continue
		}
		if d, ok := sc.req.ctx.Deadline(); !ok {
			bounded = false
		} else if d.After(deadline) {
			deadline = d
		}
		live = append(live, sc)
	}
	if len(live) == 0 {
		return
	}
	ctx := context.Background()
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	heads := map[string]uint64{}
	var answered []*scriptCall // the calls the script answered, with their errors: told once remembered
	var errs []error
	pending := live
	for try := 0; len(pending) > 0; try++ {
		// A node that restarted or was promoted since the last check of
		// the servers' run is checked before anything is written to it.
		node, err := s.probeRun(ctx, pending[0].coll)
		if err != nil {
			err = probeFailed(err)
			for _, sc := range pending {
				sc.req.finish(fmt.Errorf("apply to %s: %w", sc.coll, err))
			}
			break
		}
		if try == 0 {
			s.readStored(ctx, pending)
			if h := s.commits.beforeExec; h != nil {
				h(len(pending))
			}
		}
		s.commits.roundTrips.Add(1)
		// The calls go to the node probed, never on through a redirect
		// (MOVED, ASK) to one whose run no check found: a demoted master
		// sends them to the node that took over, which may lack the last
		// writes and still hold the merge script from an earlier time as
		// master (no NOSCRIPT tells).
		pipe := node.Pipeline()
		for _, sc := range pending {
			sc.cmd = pipe.EvalSha(ctx, mergeScript.Hash(), s.writeKeys(sc.coll), sc.args...)
		}
		_, _ = pipe.Exec(ctx) // each call's error is in its own command
		// again: the calls to send again, in their order; moved says a
		// node redirected some of them.
		var again []*scriptCall
		moved := false
		var runErr error // the run check after a NOSCRIPT, once per round trip
		checked := false
		for _, sc := range pending {
			out, err := sc.cmd.Slice()
			if err != nil && redirected(err) && try < maxRedirects {
				again, moved = append(again, sc), true
				continue
			}
			if err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") {
				// The server lost the script: it restarted, or a replica
				// took over, and either may have lost the last writes. On a
				// cluster the subscription, whose reconnection checks the
				// servers' run, may be on another master and never break, so
				// the run is checked here, before the first write to the
				// server again: a restart that lost writes starts a new
				// epoch before sequence numbers are given out a second
				// time. While the run cannot be checked, nothing is written.
				if !checked {
					checked = true
					if err := s.checkRun(ctx); err != nil {
						runErr = fmt.Errorf("%w: the server lost the merge script, and its run could not be checked: %w", stores.ErrUnavailable, err)
					}
				}
				if runErr != nil {
					sc.req.finish(fmt.Errorf("apply to %s: %w", sc.coll, runErr))
					continue
				}
				// Run sends it with EVAL, which caches it again.
				out, err = mergeScript.Run(ctx, node, s.writeKeys(sc.coll), sc.args...).Slice()
			}
			if err != nil && sc.plan != nil && goredis.HasErrorPrefix(err, staleReply) {
				// A record changed since Go read it, and the script,
				// which has no change blobs with a plan, wrote nothing:
				// the call goes again, for the script to merge.
				s.commits.fellBack.Add(uint64(len(sc.plan.ids)))
				sc.dropPlan()
				again = append(again, sc)
				continue
			}
			if err != nil && redirected(err) {
				sc.req.finish(fmt.Errorf("apply to %s: %w", sc.coll, keepsMoving(err)))
				continue
			}
			if err != nil {
				s.nodeFailed(ctx, err)
				sc.req.finish(s.fail(ctx, "apply to "+sc.coll, err))
				continue
			}
			head, err := s.mergeReply(ctx, sc, out)
			heads[sc.coll] = max(heads[sc.coll], head)
			sc.ok = err == nil
			answered = append(answered, sc)
			errs = append(errs, err)
		}
		if moved {
			// Another node serves the slot now, or is taking it over
			// (redirectCheck).
			if err := s.redirectCheck(ctx); err != nil {
				for _, sc := range again {
					sc.req.finish(fmt.Errorf("apply to %s: %w", sc.coll, err))
				}
				break
			}
		}
		pending = again
	}
	// What the calls left is remembered before their callers are
	// answered, so that a caller's next Apply finds it in the written
	// cache.
	s.remember(live)
	for i, sc := range answered {
		sc.req.finish(errs[i])
	}
	// The script also publishes, for every instance; local watchers are
	// told directly, so a stalled subscription does not delay them. They
	// are told once the callers are answered, as bolt does.
	for coll, head := range heads {
		if head > 0 {
			s.watchers.Notify(stores.Notification{Collection: coll, Seq: head})
		}
	}
}

// mergeReply reads the merge script's reply to call sc into its request's
// results and reports what the script repaired. It returns the highest
// seq the call gave a change (0 if none).
func (s *Store) mergeReply(ctx context.Context, sc *scriptCall, out []any) (uint64, error) {
	n := len(sc.idx)
	items := n + 4
	if sc.plan != nil {
		items++ // the records that the script merged itself
	}
	if len(out) != items {
		return 0, fmt.Errorf("apply to %s: merge script returned %d items for %d changes", sc.coll, len(out), n)
	}
	var head uint64
	for j, i := range sc.idx {
		v, ok := out[j].(int64)
		if !ok || v > MaxSeq || v < -MaxSeq {
			return head, fmt.Errorf("apply to %s: change %s: merge script returned %v", sc.coll, sc.recs[j].ID, out[j])
		}
		// A change that altered its record has its new seq (at least 1);
		// one that did not, minus its record's seq.
		r := stores.Result{Changed: v > 0, Seq: uint64(max(v, -v))}
		if r.Changed {
			head = max(head, r.Seq)
		}
		sc.req.results[i] = r
	}
	// With a plan, Go's lost fields stand for the records the script took
	// as Go merged them; the script's, for those it merged itself.
	var fell []bool
	if p := sc.plan; p != nil {
		list, ok := out[n+4].([]any)
		if !ok {
			return head, fmt.Errorf("apply to %s: merge script returned merged records %v", sc.coll, out[n+4])
		}
		fell = make([]bool, len(p.ids))
		for _, v := range list {
			k, ok := v.(int64)
			if !ok || k < 1 || k > int64(len(p.ids)) {
				return head, fmt.Errorf("apply to %s: merge script returned merged record %v", sc.coll, v)
			}
			fell[k-1] = true
		}
		s.commits.fellBack.Add(uint64(len(list)))
		sc.fell = fell
		for j, i := range sc.idx {
			if !fell[p.at[j]] {
				sc.req.results[i].Lost = p.lost[j]
			}
		}
	}
	lost, ok := out[n+3].([]any)
	if !ok || len(lost)%2 != 0 {
		return head, fmt.Errorf("apply to %s: merge script returned lost fields %v", sc.coll, out[n+3])
	}
	// The script lists a change's lost fields together, in its own order.
	for k := 0; k < len(lost); k += 2 {
		j, ok1 := lost[k].(int64)
		name, ok2 := lost[k+1].(string)
		if !ok1 || !ok2 || j < 1 || j > int64(n) || (fell != nil && !fell[sc.plan.at[j-1]]) {
			return head, fmt.Errorf("apply to %s: merge script returned lost field %v of change %v", sc.coll, lost[k+1], lost[k])
		}
		r := &sc.req.results[sc.idx[j-1]]
		r.Lost = append(r.Lost, name)
		if k+2 == len(lost) || lost[k+2] != lost[k] {
			slices.Sort(r.Lost)
		}
	}
	state, _ := out[n].(int64)
	raw, _ := out[n+1].(string)
	s.checkHead(ctx, sc.coll, state, raw, head)
	if damaged, _ := out[n+2].([]any); len(damaged) > 0 {
		s.replacedDamaged(ctx, sc.coll, damaged)
	}
	return head, nil
}

// maxRedirects bounds the round trips of one group of merge calls that
// a node answers with a redirect (MOVED, ASK): each is followed by a check
// of the servers' run, and then by the calls sent to the slot's master as
// the client knows it afresh. The calls that the last try sends are
// answered with the redirect (stores.ErrUnavailable).
const maxRedirects = 3

// redirected says err is a node's redirect to another (MOVED, ASK).
func redirected(err error) bool {
	return goredis.HasErrorPrefix(err, "MOVED") || goredis.HasErrorPrefix(err, "ASK")
}

// probeFailed is the error of a call that was not sent because probeRun
// could not check the servers' run.
func probeFailed(err error) error {
	return fmt.Errorf("%w: the server's run could not be checked: %w", stores.ErrUnavailable, err)
}

// keepsMoving is the error of a call that the last of its maxRedirects
// tries found redirected.
func keepsMoving(err error) error {
	return fmt.Errorf("%w: the collection's slot keeps moving: %w", stores.ErrUnavailable, err)
}

// redirectCheck answers a redirect (MOVED, ASK) of a node the store sent
// a call to: another node serves the slot now, or is taking it over. The
// servers' run is checked (which reads every master's afresh, and the
// client's map of the slots) before the call goes to that node, as for a
// NOSCRIPT. Nothing was written: a redirect is the reply of a node that
// did not run the call.
func (s *Store) redirectCheck(ctx context.Context) error {
	if err := s.checkRun(ctx); err != nil {
		return fmt.Errorf("%w: the collection's slot moved, and the servers' run could not be checked: %w", stores.ErrUnavailable, err)
	}
	return nil
}

// nodeFailed tells the cluster client, which would read the slots again,
// that a node's own client failed to reach it: the node's client does not.
func (s *Store) nodeFailed(ctx context.Context, err error) {
	if c, ok := s.client.(*goredis.ClusterClient); ok && unavailable(err) {
		c.ReloadState(ctx)
	}
}

// onSlotMaster runs fn with the client that probeRun returns for coll's
// slot (on a cluster, the node's own, so that no redirect takes fn's
// commands on to a node whose run no check found), as the merge calls
// go (roundTrip). When fn's error is a redirect, the servers' run is
// checked (redirectCheck) and fn runs again with the slot's master as
// now known, at most maxRedirects times, after which it fails with
// stores.ErrUnavailable. fn returns the errors of its commands wrapped
// (%w), so that a redirect is seen.
func (s *Store) onSlotMaster(ctx context.Context, coll string, fn func(node goredis.UniversalClient) error) error {
	for try := 0; ; try++ {
		node, err := s.probeRun(ctx, coll)
		if err != nil {
			return probeFailed(err)
		}
		err = fn(node)
		if err == nil || !redirected(err) {
			if err != nil {
				s.nodeFailed(ctx, err)
			}
			return err
		}
		if try == maxRedirects {
			return keepsMoving(err)
		}
		if err := s.redirectCheck(ctx); err != nil {
			return err
		}
	}
}

// keySlot is the Redis Cluster hash slot of keys whose hash tag is tag:
// CRC16 (XMODEM) modulo 16384.
func keySlot(tag string) int {
	var crc uint16
	for i := 0; i < len(tag); i++ {
		crc ^= uint16(tag[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc & 16383)
}
