package dynamodb

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestGroupCommit has eight writers on two store instances apply to one
// collection at once: every change gets its own sequence number, the log
// has no gap and holds every record, and each instance commits fewer
// transactions than it got Apply calls (the calls were grouped). A change
// too large for the store fails its own call only, not the calls that
// shared its transaction.
func TestGroupCommit(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	inst := []*Store{openTest(t, db, nil, table), openTest(t, db, nil, table)}
	ctx := context.Background()
	const writers, calls = 8, 6
	var wg sync.WaitGroup
	errs := make(chan error, writers*calls)
	seqs := make(chan uint64, writers*calls*2)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := inst[w%2]
			for c := range calls {
				id := fmt.Sprintf("w%d-c%d", w, c)
				res, err := s.Apply(ctx, []crdt.Change{
					{Collection: "todos", Record: crdt.SetField(id, "title", val(t, id), stamp(1, "client"))},
					{Collection: "todos", Record: crdt.SetField(id+"-b", "title", val(t, id), stamp(1, "client"))},
				})
				if err != nil {
					errs <- err
					return
				}
				for _, r := range res {
					seqs <- r.Seq
				}
			}
		}()
	}
	// One oversized change among them.
	big := crdt.Record{ID: "big", Fields: map[string]crdt.Field{}}
	for i := range 4 {
		big.Fields[fmt.Sprint(i)] = crdt.Field{Stamp: stamp(1, "client"), Value: val(t, strings.Repeat("x", 100<<10))}
	}
	if _, err := inst[0].Apply(ctx, []crdt.Change{{Collection: "todos", Record: big}}); !errors.Is(err, stores.ErrTooLarge) {
		t.Errorf("oversized change: %v, want ErrTooLarge", err)
	}
	wg.Wait()
	close(errs)
	close(seqs)
	for err := range errs {
		t.Fatal(err)
	}
	want := uint64(writers * calls * 2)
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] || s == 0 || s > want {
			t.Fatalf("sequence number %d given twice or out of 1..%d", s, want)
		}
		seen[s] = true
	}
	page, err := inst[1].Pull(ctx, "todos", 0, stores.PageLimit{Records: 1000, Bytes: stores.DefaultPageBytes})
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(page.Entries)) != want || page.Next != want {
		t.Fatalf("log holds %d records up to %d, want %d", len(page.Entries), page.Next, want)
	}
	for k, e := range page.Entries {
		if e.Seq != uint64(k+1) {
			t.Fatalf("log entry %d has seq %d: a gap", k, e.Seq)
		}
	}
	for i, s := range inst {
		committed, cancelled := s.TxStats()
		t.Logf("instance %d: %d transactions committed, %d cancelled, for %d Apply calls", i, committed, cancelled, writers/2*calls)
		if committed > int64(writers/2*calls) {
			t.Errorf("instance %d committed %d transactions for %d calls: nothing grouped", i, committed, writers/2*calls)
		}
	}
}
