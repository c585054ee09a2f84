package engine

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// TestStaleCursorDoesNotHoldReadHorizon: a reader that keeps its lease
// alive by presenting the same old cursor, run after run, does not hold
// the read horizon back for ever (one client stopping the collection of
// every reader's tombstones). Past readHorizonReach × MaxOffline its
// position is not honoured: the read horizon moves to the log's heads as
// of then, a tombstone written after its cursor is collected, and its
// pull from that cursor is reset lease_expired. Readers that read the log
// (pulls, live subscriptions) present positions at most a lease's
// refresh behind, and are never held to this bound.
func TestStaleCursorDoesNotHoldReadHorizon(t *testing.T) {
	ctx := context.Background()
	e, clk := openCollectingMemory(t)
	writeNotes(t, e, "n")
	_, stale, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeNotes(t, e, "gone")
	del, err := e.Now("notes")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.DeleteRecord("gone", del)}}); err != nil {
		t.Fatal(err)
	}
	// An honest reader that reads the log to its end every half hour.
	honest := proto.ReplicaFor("alice", "dev")
	_, cur, err := pullNotes(t, e, Cursor{}, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	stuck := proto.ReplicaFor("mallory", "dev")
	// A reader that reads the log to its end, then is away for MaxOffline.
	away := proto.ReplicaFor("bob", "dev")
	var left Cursor
	var h Horizon
	// A week of renewals every half hour, a collection run after each.
	const runs = 7 * 48
	for run := range runs {
		clk.ms += 30 * time.Minute.Milliseconds()
		writeNotes(t, e, "busy") // the log moves on
		if _, cur, err = pullNotes(t, e, cur, 10, nil); err != nil {
			t.Fatalf("the honest reader's pull at %d: %v", clk.ms, err)
		}
		for _, l := range []Lease{{Replica: stuck, Cursor: stale, Pending: -1}, {Replica: honest, Cursor: cur, Pending: -1}} {
			if err := e.NoteLease(ctx, "notes", l); err != nil {
				t.Fatal(err)
			}
		}
		if run == runs-3 {
			if _, left, err = pullNotes(t, e, cur, 10, nil); err != nil {
				t.Fatal(err)
			}
			if err := e.NoteLease(ctx, "notes", Lease{Replica: away, Cursor: left, Pending: -1}); err != nil {
				t.Fatal(err)
			}
		}
		h = collectOnce(t, e)
	}
	if h.Read[0] <= stale.heldPositions()[0] {
		t.Fatalf("read horizon %v after a week of a lease at %v; want it past", h.Read, stale.heldPositions())
	}
	if _, err := e.GetRecord(ctx, "notes", "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the record deleted a week ago, after the stale cursor: %v; want it collected (ErrNotFound)", err)
	}
	var re *ResetError
	if _, err := e.Pull(ctx, "notes", stale, PageLimit{}); !errors.As(err, &re) || re.Reason != ResetLeaseExpired {
		t.Fatalf("a pull from the stale cursor: %v; want a reset %v", err, ResetLeaseExpired)
	}
	if _, _, err := pullNotes(t, e, cur, 10, nil); err != nil {
		t.Fatalf("the honest reader's pull: %v; want it read on", err)
	}
	if _, _, err := pullNotes(t, e, left, 10, nil); err != nil {
		t.Fatalf("the pull of a reader back after MaxOffline away: %v; want it read on", err)
	}
}

// TestRecordHeadsBounded: however often runs come, the heads kept are at
// most pendingFloorReach × headsEvery + 2, spaced at least MaxOffline /
// headsEvery apart, and the floor is the newest at or before the reach.
func TestRecordHeadsBounded(t *testing.T) {
	const maxOff = int64(3_600_000)
	var heads [][]uint64
	for _, every := range []int64{1, 60_000, 600_000, maxOff, 3 * maxOff} {
		heads = nil
		now := int64(1_700_000_000_000)
		for run := range 500 {
			cutoff := now - pendingFloorReach*maxOff
			heads = recordHeads(heads, now, maxOff/headsEvery, cutoff, []uint64{uint64(run)})
			if n := len(heads); n > pendingFloorReach*headsEvery+2 {
				t.Fatalf("runs every %d ms: %d heads kept after run %d", every, n, run)
			}
			for j := 1; j < len(heads); j++ {
				if gap := int64(heads[j][0] - heads[j-1][0]); gap < maxOff/headsEvery {
					t.Fatalf("runs every %d ms: heads %d ms apart", every, gap)
				}
			}
			if f := headsFloor(heads, cutoff); f != nil {
				at := int64(heads[0][0])
				if at > cutoff || (len(heads) > 1 && int64(heads[1][0]) <= cutoff) {
					t.Fatalf("runs every %d ms: the floor recorded at %d is not the newest at or before %d", every, at, cutoff)
				}
			}
			now += every
		}
	}
}

// TestHeadsOfAnotherPublicationIgnored: the heads are read only as part
// of the publication whose read horizon they stand beside. A horizon
// published by an instance that does not write them (one of before they
// existed, during a rolling upgrade) leaves the field of an earlier
// publication in the record, perhaps of an earlier epoch: its positions
// are of another log, and taken as the floor of this one's they would
// raise R past every live reader.
func TestHeadsOfAnotherPublicationIgnored(t *testing.T) {
	ctx := context.Background()
	e, clk := openCollectingMemory(t)
	writeNotes(t, e, "a", "b")
	clk.ms += time.Minute.Milliseconds()
	if h := collectOnce(t, e); len(h.Heads) == 0 {
		t.Fatalf("the first run recorded no heads: %+v", h)
	}
	// An older instance publishes for epoch 9: its fields only.
	st, err := e.Now(proto.HorizonCollection)
	if err != nil {
		t.Fatal(err)
	}
	rec := crdt.Record{ID: "notes", Fields: map[string]crdt.Field{}}
	for name, v := range map[string]any{HorizonFieldRead: []uint64{1}, HorizonFieldEpoch: uint64(9), HorizonFieldWall: int64(0)} {
		b, _ := crdt.EncodeValue(v)
		rec.Fields[name] = crdt.Field{Stamp: st, Value: b}
	}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: proto.HorizonCollection, Record: rec}}); err != nil {
		t.Fatal(err)
	}
	h, ok, err := e.HorizonOf(ctx, "notes", true)
	if err != nil || !ok {
		t.Fatalf("HorizonOf = %v, %v", ok, err)
	}
	if h.Heads != nil {
		t.Fatalf("heads %v read beside the read horizon %v of epoch %d that did not write them; want none", h.Heads, h.Read, h.Epoch)
	}
}

// horizonGets counts the reads of published horizons from a sharded
// store.
type horizonGets struct {
	*shardedStore
	n atomic.Int64
}

func (s *horizonGets) Get(ctx context.Context, coll, id string) (stores.Entry, error) {
	if coll == proto.HorizonCollection {
		s.n.Add(1)
	}
	return s.shardedStore.Get(ctx, coll, id)
}

// A pull reads the published horizon once at most, however many of its
// shards' records still to be met it reaches the head without: one read
// afresh answers for all of them. A cursor a client wrote can name one on
// every shard, and each made the pull read the horizon again, one store
// read per shard.
func TestPullReadsHorizonOnce(t *testing.T) {
	ctx := context.Background()
	const k = 4
	st := &horizonGets{shardedStore: newSharded(k)}
	e, _ := openCollecting(t, st)
	for i := range 4 * k {
		writeNotes(t, e, fmt.Sprint("n", i))
	}
	tag, meta, err := e.view(ctx, "notes", true)
	if err != nil {
		t.Fatal(err)
	}
	// A horizon published at the start of every shard.
	hs, err := e.Now(proto.HorizonCollection)
	if err != nil {
		t.Fatal(err)
	}
	rec := crdt.Record{ID: "notes", Fields: map[string]crdt.Field{}}
	for name, v := range map[string]any{HorizonFieldRead: make([]uint64, k), HorizonFieldEpoch: meta.Epoch, HorizonFieldWall: int64(0)} {
		b, _ := crdt.EncodeValue(v)
		rec.Fields[name] = crdt.Field{Stamp: hs, Value: b}
	}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: proto.HorizonCollection, Record: rec}}); err != nil {
		t.Fatal(err)
	}
	heads, err := st.ShardHeads(ctx, "notes")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := e.HorizonOf(ctx, "notes", true); err != nil || !ok {
		t.Fatalf("HorizonOf = %v, %v", ok, err)
	}
	// At the heads, with a record still to be met on every shard.
	c := cursorOf(tag, meta.Epoch, heads)
	pending := make([]uint32, k)
	for i := range pending {
		pending[i] = slotMark(e.slotKeyFor(tag), "notes", "never written")
	}
	c.slots = packSlots(make([]uint32, k), pending)
	before := st.n.Load()
	if _, err := e.Pull(ctx, "notes", c.Unverified(), PageLimit{}); err != nil {
		t.Fatal(err)
	}
	if n := st.n.Load() - before; n != 1 {
		t.Fatalf("a pull of %d shards read the published horizon %d times, want once", k, n)
	}
}
