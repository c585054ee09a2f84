package engine

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
	"pgregory.net/rapid"
)

func genChange(t *rapid.T, clocks map[string]*crdt.Clock, wall *int64) crdt.Change {
	replica := rapid.SampledFrom([]string{"r1", "r2", "r3"}).Draw(t, "replica")
	*wall += rapid.Int64Range(0, 3).Draw(t, "tick")
	s, err := clocks[replica].Now(*wall - rapid.Int64Range(0, 5).Draw(t, "skew"))
	if err != nil {
		t.Fatal(err)
	}
	coll := rapid.SampledFrom([]string{"todos", "notes"}).Draw(t, "collection")
	id := rapid.SampledFrom([]string{"a", "b", "c"}).Draw(t, "id")
	var rec crdt.Record
	switch rapid.IntRange(0, 5).Draw(t, "op") {
	case 0:
		rec = crdt.DeleteRecord(id, s)
	case 1:
		rec = crdt.UnsetField(id, rapid.SampledFrom([]string{"x", "y"}).Draw(t, "field"), s)
	default:
		v, _ := crdt.EncodeValue(rapid.IntRange(0, 9).Draw(t, "value"))
		rec = crdt.SetField(id, rapid.SampledFrom([]string{"x", "y"}).Draw(t, "field"), v, s)
	}
	return crdt.Change{Collection: coll, Record: rec}
}

type view map[string][]byte // "collection/id" → encoded record

func storeContent(t *rapid.T, e *Engine) view {
	out := view{}
	for _, coll := range []string{"todos", "notes"} {
		for _, ent := range pullAll(t, e, coll, 0) {
			b, _ := crdt.EncodeRecord(ent.Record)
			out[coll+"/"+ent.Record.ID] = b
		}
	}
	return out
}

func pullAll(t *rapid.T, e *Engine, coll string, after uint64) []Entry {
	var all []Entry
	cursor, err := e.CursorAt(context.Background(), coll, after)
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := e.Pull(context.Background(), coll, cursor, PageLimit{Records: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range p.Entries {
			if ent.Seq <= after {
				t.Fatalf("pull after %d returned seq %d", after, ent.Seq)
			}
			after = ent.Seq
		}
		all = append(all, p.Entries...)
		if p.Next.Seq() != after {
			t.Fatalf("page ends at seq %d, its cursor says %d", after, p.Next.Seq())
		}
		cursor = p.Next
		if !p.More {
			return all
		}
	}
}

// TestApplyOrderIndependence applies random batches from random replicas
// once in order to one engine and shuffled, with duplicates, to another,
// with a tailing reader following the second; all three views must match.
func TestApplyOrderIndependence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		clocks := map[string]*crdt.Clock{}
		for _, r := range []string{"r1", "r2", "r3"} {
			clocks[r], _ = crdt.NewClock(crdt.ClockConfig{Replica: r})
		}
		wall := int64(1_000_000)
		nb := rapid.IntRange(1, 8).Draw(t, "batches")
		batches := make([][]crdt.Change, nb)
		for i := range batches {
			n := rapid.IntRange(1, 6).Draw(t, "batch size")
			for range n {
				batches[i] = append(batches[i], genChange(t, clocks, &wall))
			}
		}
		now := func() (c fakeClock) { return fakeClock{ms: wall} }
		clkA, clkB := now(), now()
		stA, stB := memory.New(), memory.New()
		a, _ := Open(Config{Store: stA, Replica: "srvA", Now: clkA.now, PollInterval: -1})
		b, _ := Open(Config{Store: stB, Replica: "srvB", Now: clkB.now, PollInterval: -1})
		defer func() { a.Close(); b.Close(); stA.Close(); stB.Close() }()
		ctx := context.Background()
		for _, batch := range batches {
			if _, err := a.Apply(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		var flat []crdt.Change
		for _, batch := range batches {
			flat = append(flat, batch...)
		}
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(flat)-1), 0, 10).Draw(t, "duplicates") {
			flat = append(flat, flat[i])
		}
		flat = rapid.Permutation(flat).Draw(t, "order")
		tail := view{}
		cursors := map[string]uint64{}
		readTail := func() {
			for _, coll := range []string{"todos", "notes"} {
				for _, ent := range pullAll(t, b, coll, cursors[coll]) {
					b, _ := crdt.EncodeRecord(ent.Record)
					tail[coll+"/"+ent.Record.ID] = b
					cursors[coll] = ent.Seq
				}
			}
		}
		for len(flat) > 0 {
			n := rapid.IntRange(1, len(flat)).Draw(t, "chunk")
			res, err := b.Apply(ctx, flat[:n])
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if r.Status == StatusRefused {
					t.Fatalf("change %d refused: %v", i, r.Err)
				}
			}
			flat = flat[n:]
			if rapid.Bool().Draw(t, "read") {
				readTail()
			}
		}
		readTail()
		want := storeContent(t, a)
		if err := sameView(storeContent(t, b), want); err != nil {
			t.Fatalf("shuffled store vs in-order store: %v", err)
		}
		if err := sameView(tail, want); err != nil {
			t.Fatalf("tailing reader vs store: %v", err)
		}
	})
}

func sameView(got, want view) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d records, want %d", len(got), len(want))
	}
	for k, w := range want {
		if g := got[k]; !bytes.Equal(g, w) {
			return fmt.Errorf("%s: got %x, want %x", k, g, w)
		}
	}
	return nil
}
