package storetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Sizes of the concurrency check; -short divides the changes by 5.
const (
	concWriters = 8
	concChanges = 250 // per writer
	concRecords = 600 // most records are written once or twice
)

// testConcurrent runs writers that apply random changes to random records
// while a reader tails the log. The reader must end with every record's
// final state, see sequence numbers only go up, and never skip a change:
// since most records are written once, a change that committed below the
// reader's cursor would leave its record missing or stale in the reader's
// view (the no-gap invariant).
func testConcurrent(t *testing.T, f Factory) {
	s := open(t, f)
	ctx := context.Background()
	const coll = "conc"
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	perWriter := concChanges
	if testing.Short() {
		perWriter /= 5
	}

	var (
		wg      sync.WaitGroup
		done    atomic.Bool
		mu      sync.Mutex
		applied []crdt.Change
		taken   = map[uint64]string{} // seq → record that took it
		errs    = make(chan error, concWriters+1)
	)
	for w := range concWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			replica := fmt.Sprintf("w%d", w)
			for n := 0; n < perWriter; {
				size := min(1+rng.IntN(10), perWriter-n)
				batch := make([]crdt.Change, size)
				for i := range batch {
					id := fmt.Sprintf("r%d", rng.IntN(concRecords))
					stamp := crdt.Stamp{Wall: int64(1 + rng.IntN(1000)), Logical: uint32(rng.IntN(3)), Replica: replica}
					var r crdt.Record
					switch k := rng.IntN(20); {
					case k == 0:
						r = crdt.DeleteRecord(id, stamp)
					case k == 1:
						r = crdt.UnsetField(id, "a", stamp)
					default:
						v, _ := crdt.EncodeValue(rng.IntN(1 << 20))
						r = crdt.SetField(id, string(rune('a'+rng.IntN(3))), v, stamp)
					}
					batch[i] = chg(coll, r)
				}
				res, err := s.Apply(ctx, batch)
				if err != nil {
					errs <- fmt.Errorf("writer %d: Apply: %w", w, err)
					return
				}
				mu.Lock()
				applied = append(applied, batch...)
				for i, r := range res {
					if !r.Changed {
						continue
					}
					if other, dup := taken[r.Seq]; dup {
						mu.Unlock()
						errs <- fmt.Errorf("seq %d taken by records %s and %s", r.Seq, other, batch[i].Record.ID)
						return
					}
					taken[r.Seq] = batch[i].Record.ID
				}
				mu.Unlock()
				n += size
			}
		}()
	}

	// The reader tails the log with small pages until the writers are done
	// and it has caught up.
	view := map[string]stores.Entry{}
	var cursor uint64
	var pages int
	reader := make(chan struct{})
	go func() {
		defer close(reader)
		rng := rand.New(rand.NewPCG(seed, 99))
		for {
			finished := done.Load() // read before the pull: the last pull follows every write
			// Pages cut by count and, every other pull, by a small byte
			// budget.
			limit := stores.PageLimit{Records: 1 + rng.IntN(40), Bytes: stores.DefaultPageBytes}
			if rng.IntN(2) == 0 {
				limit.Bytes = 1 + rng.IntN(2000)
			}
			p, err := s.Pull(ctx, coll, cursor, limit)
			if err != nil {
				errs <- fmt.Errorf("reader: Pull after %d: %w", cursor, err)
				return
			}
			pages++
			prev := cursor
			for _, e := range p.Entries {
				if e.Seq <= prev {
					errs <- fmt.Errorf("reader: page after %d went back to seq %d after %d", cursor, e.Seq, prev)
					return
				}
				prev = e.Seq
				if old, ok := view[e.Record.ID]; ok && old.Seq >= e.Seq {
					errs <- fmt.Errorf("reader: record %s at seq %d after seeing it at %d", e.Record.ID, e.Seq, old.Seq)
					return
				}
				view[e.Record.ID] = e
			}
			if len(p.Entries) > limit.Records || p.Next != prev || (len(p.Entries) == 0 && p.More) {
				errs <- fmt.Errorf("reader: malformed page after %d: %d entries, Next %d, More %v", cursor, len(p.Entries), p.Next, p.More)
				return
			}
			cursor = p.Next
			if !p.More && finished {
				return
			}
			if len(p.Entries) == 0 {
				time.Sleep(time.Millisecond) // caught up: do not spin on a shared server
			}
		}
	}()
	wg.Wait()
	done.Store(true)
	<-reader
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	want := map[string]crdt.Record{}
	for _, c := range applied {
		r := want[c.Record.ID]
		r.Merge(c.Record)
		want[c.Record.ID] = r
	}
	var maxSeq uint64
	for seq := range taken {
		maxSeq = max(maxSeq, seq)
	}
	if h := head(t, s, coll); h != maxSeq || cursor != maxSeq {
		t.Fatalf("Head %d, reader cursor %d, highest seq taken %d: want all equal", h, cursor, maxSeq)
	}
	for id, w := range want {
		got, ok := view[id]
		if !ok {
			t.Fatalf("reader never saw record %s (want %s): a change was skipped", id, fmtRecord(w))
		}
		if !got.Record.Equal(w) {
			t.Fatalf("reader's record %s at seq %d:\n got  %s\n want %s", id, got.Seq, fmtRecord(got.Record), fmtRecord(w))
		}
		if e := get(t, s, coll, id); e.Seq != got.Seq || !e.Record.Equal(w) {
			t.Fatalf("Get %s: %s at seq %d, reader has seq %d, want %s", id, fmtRecord(e.Record), e.Seq, got.Seq, fmtRecord(w))
		}
	}
	if len(view) != len(want) {
		t.Fatalf("reader saw %d records, %d were written", len(view), len(want))
	}
	t.Logf("%d changes by %d writers, %d took a seq; reader pulled %d pages", len(applied), concWriters, len(taken), pages)
}
