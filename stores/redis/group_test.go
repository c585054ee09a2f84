package redis

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis/redistest"
)

// holdFirstRoundTrip makes s's first round trip wait until the returned
// release is called, and records the size of every round trip. It must be
// called before s is used.
func holdFirstRoundTrip(s *Store) (held <-chan struct{}, release func(), sizes func() []int) {
	h := make(chan struct{})
	r := make(chan struct{})
	var mu sync.Mutex
	var got []int
	var first atomic.Bool
	s.commits.beforeExec = func(n int) {
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
		if first.CompareAndSwap(false, true) {
			close(h)
			<-r
		}
	}
	return h, sync.OnceFunc(func() { close(r) }), func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), got...)
	}
}

// queued is the number of script calls waiting in the queue of coll.
func (s *Store) queued(coll string) int {
	slot := -1
	if s.commits.slotted {
		slot = keySlot(coll)
	}
	s.commits.mu.Lock()
	defer s.commits.mu.Unlock()
	if q := s.commits.queues[slot]; q != nil {
		return len(q.pending)
	}
	return 0
}

// TestApplyGroupsConcurrentCalls holds one round trip in flight while 20
// callers apply batches to the same collection, then checks that all 20
// went in the next round trip together, and that every caller got the
// results of its own changes.
func TestApplyGroupsConcurrentCalls(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		held, release, sizes := holdFirstRoundTrip(s)
		defer release()
		const coll, callers, per = "grp", 20, 5
		st := func(i int) crdt.Stamp { return crdt.Stamp{Wall: int64(1000 + i), Replica: "w"} }

		firstErr := make(chan error, 1)
		go func() {
			_, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("first", "f", []byte{1}, st(0))}})
			firstErr <- err
		}()
		<-held

		results := make([][]stores.Result, callers)
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for c := range callers {
			wg.Go(func() {
				changes := make([]crdt.Change, per)
				for j := range changes {
					v, _ := crdt.EncodeValue(fmt.Sprintf("caller %d change %d", c, j))
					changes[j] = crdt.Change{Collection: coll, Record: crdt.SetField(fmt.Sprintf("c%d-r%d", c, j), "f", v, st(c*per+j))}
				}
				results[c], errs[c] = s.Apply(ctx, changes)
			})
		}
		eventually(t, "20 queued script calls", func() (bool, string) {
			n := s.queued(coll)
			return n == callers, fmt.Sprintf("%d queued", n)
		})
		release()
		wg.Wait()
		if err := <-firstErr; err != nil {
			t.Fatalf("first apply: %v", err)
		}
		if got := sizes(); len(got) != 2 || got[1] != callers {
			t.Fatalf("round trips (script calls in each): got %v, want [1 %d]", got, callers)
		}
		if n := s.commits.roundTrips.Load(); n != 2 {
			t.Fatalf("round trips counted: %d, want 2", n)
		}
		seen := map[uint64]bool{}
		for c := range callers {
			if errs[c] != nil {
				t.Fatalf("caller %d: %v", c, errs[c])
			}
			if len(results[c]) != per {
				t.Fatalf("caller %d: %d results for %d changes", c, len(results[c]), per)
			}
			for j, r := range results[c] {
				if !r.Changed || r.Seq == 0 || seen[r.Seq] || len(r.Lost) != 0 {
					t.Fatalf("caller %d change %d: result %+v (seqs seen so far %v)", c, j, r, seen)
				}
				seen[r.Seq] = true
				e, err := s.Get(ctx, coll, fmt.Sprintf("c%d-r%d", c, j))
				if err != nil {
					t.Fatal(err)
				}
				want, _ := crdt.EncodeValue(fmt.Sprintf("caller %d change %d", c, j))
				if e.Seq != r.Seq || string(e.Record.Fields["f"].Value) != string(want) {
					t.Fatalf("caller %d change %d: result seq %d, stored %+v", c, j, r.Seq, e)
				}
			}
		}
		if head, err := s.Head(ctx, coll); err != nil || head != callers*per+1 {
			t.Fatalf("head: got %d, %v; want %d", head, err, callers*per+1)
		}
	})
}

// TestApplyGroupErrorsStayWithTheirCaller puts, in one round trip, a
// caller whose batch would pass MaxSeq, one whose record would pass the
// size limit, and two whose changes are fine: each gets its own outcome,
// and the refused batches leave nothing behind.
func TestApplyGroupErrorsStayWithTheirCaller(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		s.maxRecordBytes = 2000
		const lim = "lim"
		// A second collection in the same hash slot, so that on a cluster
		// too all callers share one queue.
		other := ""
		for i := 0; other == ""; i++ {
			if c := "o" + strconv.Itoa(i); keySlot(c) == keySlot(lim) {
				other = c
			}
		}
		st := crdt.Stamp{Wall: 5, Replica: "a"}
		pre := []crdt.Change{{Collection: lim, Record: crdt.SetField("pre", "f", []byte{1}, st)}}
		if _, err := s.Apply(ctx, pre); err != nil {
			t.Fatal(err)
		}
		if err := s.client.Set(ctx, s.seqKey(lim), strconv.FormatUint(MaxSeq-1, 10), 0).Err(); err != nil {
			t.Fatal(err)
		}
		held, release, sizes := holdFirstRoundTrip(s)
		defer release()
		firstErr := make(chan error, 1)
		go func() {
			_, err := s.Apply(ctx, pre) // a duplicate: changes nothing
			firstErr <- err
		}()
		<-held

		big := make([]byte, 3000)
		big[0] = 0x59 // CBOR byte string head of 2998 bytes
		big[1], big[2] = 0x0b, 0xb6
		batches := [][]crdt.Change{
			{ // past MaxSeq
				{Collection: lim, Record: crdt.SetField("a1", "f", []byte{1}, st)},
				{Collection: lim, Record: crdt.SetField("a2", "f", []byte{1}, st)},
			},
			{{Collection: lim, Record: crdt.SetField("b1", "f", []byte{1}, st)}},   // up to MaxSeq exactly
			{{Collection: other, Record: crdt.SetField("c1", "f", big, st)}},       // too large
			{{Collection: other, Record: crdt.SetField("d1", "f", []byte{2}, st)}}, // fine
		}
		results := make([][]stores.Result, len(batches))
		errs := make([]error, len(batches))
		var wg sync.WaitGroup
		for i, b := range batches {
			wg.Go(func() { results[i], errs[i] = s.Apply(ctx, b) })
		}
		eventually(t, "4 queued script calls", func() (bool, string) {
			n := s.queued(lim)
			return n == len(batches), fmt.Sprintf("%d queued", n)
		})
		release()
		wg.Wait()
		if err := <-firstErr; err != nil {
			t.Fatalf("first apply: %v", err)
		}
		if got := sizes(); len(got) != 2 || got[1] != len(batches) {
			t.Fatalf("round trips (script calls in each): got %v, want [1 %d]", got, len(batches))
		}
		if errs[0] == nil || !strings.Contains(errs[0].Error(), "seq-exhausted") {
			t.Errorf("batch past MaxSeq: got %v, want a seq-exhausted error", errs[0])
		}
		if errs[1] != nil || len(results[1]) != 1 || !results[1][0].Changed || results[1][0].Seq != MaxSeq {
			t.Errorf("batch up to MaxSeq: got %+v, %v; want seq %d", results[1], errs[1], uint64(MaxSeq))
		}
		if !errors.Is(errs[2], stores.ErrTooLarge) {
			t.Errorf("batch over the size limit: got %v, want ErrTooLarge", errs[2])
		}
		if errs[3] != nil || len(results[3]) != 1 || !results[3][0].Changed || results[3][0].Seq != 1 {
			t.Errorf("fine batch: got %+v, %v; want changed at seq 1", results[3], errs[3])
		}
		for _, k := range [][2]string{{lim, "a1"}, {lim, "a2"}, {other, "c1"}} {
			if _, err := s.Get(ctx, k[0], k[1]); !errors.Is(err, stores.ErrNotFound) {
				t.Errorf("get %s/%s of a refused batch: got %v, want ErrNotFound", k[0], k[1], err)
			}
		}
		if e, err := s.Get(ctx, other, "d1"); err != nil || e.Seq != 1 {
			t.Errorf("get %s/d1: got %+v, %v", other, e, err)
		}
	})
}

// TestApplyAfterScriptFlush checks the EVAL fallback of pipelined calls:
// after the server forgot its scripts, a group of concurrent Applies
// still applies. The server is the test's own: a SCRIPT FLUSH of a shared
// one would reach every other test using it.
func TestApplyAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t, "--save", "", "--appendonly", "no")
	tg := target{name: "private", addrs: []string{srv.Addr()}}
	ctx := testContext(t)
	s := openStore(t, tg, Options{})
	if err := s.client.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = s.Apply(ctx, []crdt.Change{{Collection: "fl", Record: crdt.SetField("r"+strconv.Itoa(i), "f", []byte{1}, crdt.Stamp{Wall: 1, Replica: "a"})}})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("apply %d after SCRIPT FLUSH: %v", i, err)
		}
	}
	if head, err := s.Head(ctx, "fl"); err != nil || head != 8 {
		t.Fatalf("head: got %d, %v; want 8", head, err)
	}
}

// TestKeySlot checks keySlot against the cluster's CLUSTER KEYSLOT.
func TestKeySlot(t *testing.T) {
	tg := clusterTarget(t)
	ctx := testContext(t)
	s := openStore(t, tg, Options{})
	for _, coll := range []string{"todos", "a", "lim", "demo.todos", "x_y-z.0123456789", "ünïcode"} {
		want, err := s.client.ClusterKeySlot(ctx, s.seqKey(coll)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := keySlot(coll); int64(got) != want {
			t.Errorf("keySlot(%q) = %d, CLUSTER KEYSLOT says %d", coll, got, want)
		}
	}
}
