package engine

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// TestPublishedHorizonWithoutTheRule: a collection's rule gave it a
// MaxOffline, and a run published a horizon and purged under it. An
// instance whose rules give the collection none (the rule was removed
// after purges, or a rollout has not reached this instance) still
// enforces the published horizon, as the instance with the rule does:
// an edit stamped before a delete that was collected is refused
// collected (taken, it would bring the record back for every replica),
// and a reader whose cursor is before the read horizon is reset
// lease_expired, in its epoch and after a rebuild (served on, it would
// keep the record whose tombstone it never read).
func TestPublishedHorizonWithoutTheRule(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rules []Rule
	}{
		{"no rule", nil},
		{"a rule of another collection", []Rule{{Pattern: "other", MaxOffline: time.Hour}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st := memory.New()
			t.Cleanup(func() { st.Close() })
			col, clk := openCollecting(t, st)
			writeNotes(t, col, "x", "y")
			collectingSince(t, col)
			// alice edits x offline, before it is deleted.
			edit := crdt.Change{Collection: "notes", Record: crdt.SetField("x", "title", value(t, "offline"),
				crdt.Stamp{Wall: clk.ms, Replica: proto.ReplicaFor("alice", "dev")})}
			_, behind, err := pullNotes(t, col, Cursor{}, 10, nil) // holds x
			if err != nil {
				t.Fatal(err)
			}
			noteLease(t, col, proto.ReplicaFor("alice", "dev"), behind)
			clk.ms++
			if err := col.Delete(ctx, "notes", "x"); err != nil {
				t.Fatal(err)
			}
			clk.ms += (2 * time.Hour).Milliseconds() // alice's lease expired
			h := collectOnce(t, col)
			if _, err := col.GetRecord(ctx, "notes", "x"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("x after the purge: %v; want it collected (ErrNotFound)", err)
			}
			if h.Wall <= edit.Record.Fields["title"].Stamp.Wall {
				t.Fatalf("write horizon %d, want it past the edit at %d", h.Wall, edit.Record.Fields["title"].Stamp.Wall)
			}

			open := func() *Engine {
				e, err := Open(Config{Store: st, Replica: "srv2", Now: clk.now, PollInterval: -1,
					Rules: tc.rules, CollectGrace: -1, CollectEvery: -1})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { e.Close() })
				if e.MaxOffline("notes") != 0 {
					t.Fatalf("the instance without the rule has MaxOffline %v for notes", e.MaxOffline("notes"))
				}
				return e
			}
			reason := func(e *Engine, c Cursor) ResetReason {
				t.Helper()
				_, err := e.Pull(ctx, "notes", c, PageLimit{})
				var re *ResetError
				if !errors.As(err, &re) {
					t.Errorf("pull from the cursor behind the read horizon %v: %v; want a reset", h.Read, err)
					return 0
				}
				return re.Reason
			}
			plain := open()
			res, err := plain.Apply(ctx, []crdt.Change{edit})
			if err != nil {
				t.Fatal(err)
			}
			if res[0].Status != StatusRefused || !errors.Is(res[0].Err, ErrCollected) {
				t.Errorf("the edit stamped before the collected delete: %v (%v); want refused collected", res[0].Status, res[0].Err)
			}
			if got, err := plain.GetRecord(ctx, "notes", "x"); !errors.Is(err, ErrNotFound) {
				t.Errorf("x after the edit: %v, %v; want it still collected (ErrNotFound)", got.Record, err)
			}
			if r := reason(plain, behind); r != ResetLeaseExpired {
				t.Errorf("the reader before the read horizon: reset %v; want %v", r, ResetLeaseExpired)
			}

			if err := st.BumpEpoch(ctx, "notes", stores.Rebuilt); err != nil {
				t.Fatal(err)
			}
			if r := reason(open(), behind); r != ResetLeaseExpired {
				t.Errorf("the reader before the read horizon, after a rebuild: reset %v; want %v", r, ResetLeaseExpired)
			}
		})
	}
}

// horizonReads is a store that counts the reads of published horizons.
type horizonReads struct {
	stores.Store
	mu sync.Mutex
	n  map[string]int // per collection
}

func (s *horizonReads) Get(ctx context.Context, coll, id string) (stores.Entry, error) {
	if coll == proto.HorizonCollection {
		s.mu.Lock()
		s.n[id]++
		s.mu.Unlock()
	}
	return s.Store.Get(ctx, coll, id)
}

func (s *horizonReads) reads(coll string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[coll]
}

// TestHorizonReadsCached: enforcing published horizons whatever the rules
// say reads a collection's horizon from the store once per historyTTL, not
// per push or pull, also when none is published (the cache remembers
// that), and never for the server's own collections.
func TestHorizonReadsCached(t *testing.T) {
	ctx := context.Background()
	st := &horizonReads{Store: memory.New(), n: map[string]int{}}
	t.Cleanup(func() { st.Close() })
	e := engineOn(t, st)
	const n = 50
	start := time.Now()
	var cur Cursor
	for i := range n {
		write(t, e, "plain", i, 1)
		p, err := e.Pull(ctx, "plain", cur, PageLimit{})
		if err != nil {
			t.Fatal(err)
		}
		cur = p.Next
	}
	// Each read lasts historyTTL; a slow run may need one more.
	most := 1 + int(time.Since(start)/historyTTL)
	if got := st.reads("plain"); got < 1 || got > most {
		t.Errorf("%d pushes and pulls read the horizon of a collection without one %d times; want 1 to %d", n, got, most)
	}
	for _, c := range []string{proto.LeaseCollection, proto.HorizonCollection} {
		if got := st.reads(c); got != 0 {
			t.Errorf("the horizon of %s was read %d times; the server's own collections have none", c, got)
		}
	}
}

// TestHorizonOfInvalidCollection: a change to a collection whose name no
// store takes has no horizon to be held to (none can be published for
// it): it is refused invalid alone, as before horizons were read for
// every collection, and the call goes on.
func TestHorizonOfInvalidCollection(t *testing.T) {
	e := engineOn(t, memory.New())
	for _, coll := range []string{"", "a b", strings.Repeat("c", crdt.MaxCollectionBytes+1), strings.Repeat("c", crdt.MaxIDBytes+1)} {
		ok := crdt.Change{Collection: "notes", Record: crdt.SetField("x", "a", value(t, 1), crdt.Stamp{Wall: 1, Replica: "r"})}
		bad := crdt.Change{Collection: coll, Record: ok.Record}
		res, err := e.Apply(context.Background(), []crdt.Change{bad, ok})
		if err != nil {
			t.Fatalf("collection %.20q: the call failed: %v; want the change refused alone", coll, err)
		}
		if res[0].Status != StatusRefused || !errors.Is(res[0].Err, ErrInvalid) {
			t.Errorf("collection %.20q: %v (%v); want refused invalid", coll, res[0].Status, res[0].Err)
		}
		if res[1].Err != nil {
			t.Errorf("the valid change with it: %v (%v)", res[1].Status, res[1].Err)
		}
	}
}
