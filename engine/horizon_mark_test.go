package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

// purgingSharded is a shardedStore that purges each shard as a memory
// store does.
type purgingSharded struct{ *shardedStore }

func (s purgingSharded) Purge(ctx context.Context, coll string, h stores.Horizon, _ stores.PurgeScan) (stores.PurgeResult, error) {
	var out stores.PurgeResult
	// The epoch is shard 0's (shardedStore), checked here and not
	// atomically with the logs' purges: enough for a test.
	m, err := s.Meta(ctx, coll)
	if err != nil {
		return out, err
	}
	if err := stores.CheckEpoch(coll, h, m); err != nil {
		return out, err
	}
	for i, l := range s.logs {
		lm, err := l.Meta(ctx, coll)
		if err != nil {
			return out, err
		}
		var after []uint64
		for {
			r, err := l.Purge(ctx, coll, stores.Horizon{Epoch: lm.Epoch, Read: []uint64{h.Read[i]}, Wall: h.Wall, Sources: h.Sources, Defaulted: h.Defaulted}, stores.PurgeScan{After: after})
			if err != nil {
				return out, err
			}
			out.Scanned += r.Scanned
			out.Records += r.Records
			out.Deletes += r.Deletes
			out.Fields += r.Fields
			out.Bytes += r.Bytes
			if after = r.Next; !r.More {
				break
			}
		}
	}
	return out, nil
}

// openCollecting opens an engine whose collection "notes" has a
// MaxOffline, collected with no grace, on st.
func openCollecting(t *testing.T, st stores.Store) (*Engine, *fakeClock) {
	t.Helper()
	clk := &fakeClock{ms: 1_700_000_000_000}
	e, err := Open(Config{Store: st, Replica: "srv", Now: clk.now, PollInterval: -1,
		Rules:        []Rule{{Pattern: "notes", MaxOffline: time.Hour}},
		CollectGrace: -1, CollectEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, clk
}

func writeNotes(t *testing.T, e *Engine, ids ...string) {
	t.Helper()
	for _, id := range ids {
		st, err := e.Now("notes")
		if err != nil {
			t.Fatal(err)
		}
		v, _ := crdt.EncodeValue("a")
		rec := crdt.SetField(id, "owner", v, st)
		if _, err := e.Apply(context.Background(), []crdt.Change{{Collection: "notes", Record: rec}}); err != nil {
			t.Fatal(err)
		}
	}
}

func collectOnce(t *testing.T, e *Engine) Horizon {
	t.Helper()
	reps, err := e.Collect(context.Background())
	if err != nil || len(reps) != 1 {
		t.Fatalf("Collect = %v, %v; want one report", reps, err)
	}
	return reps[0].Horizon
}

// pullNotes pulls from cur to the end in pages of n records under s and
// returns the records read and the last cursor.
func pullNotes(t *testing.T, e *Engine, cur Cursor, n int, s *scope.Pred) (int, Cursor, error) {
	t.Helper()
	got := 0
	for range 100 {
		p, err := e.PullScoped(context.Background(), "notes", cur, PageLimit{Records: n}, s)
		if err != nil {
			return got, cur, err
		}
		got += len(p.Entries)
		// The mark travels in the encoding.
		if cur, err = ParseCursor(p.Next.Bytes()); err != nil {
			t.Fatal(err)
		}
		if !p.More {
			return got, cur, nil
		}
	}
	t.Fatal("no end after 100 pages")
	return 0, Cursor{}, nil
}

func isLeaseExpired(err error) bool { return hzLeaseExpired(err) }

// TestHorizonFreshReader: a reader that pulls from the beginning after a
// horizon was published is not reset lease_expired when its pages end
// before the read horizon (the minimal case the property test found),
// unscoped, scoped and over several shards.
func TestHorizonFreshReader(t *testing.T) {
	for _, k := range []int{1, 3} {
		for _, scoped := range []bool{false, true} {
			t.Run(fmt.Sprintf("shards=%d/scoped=%v", k, scoped), func(t *testing.T) {
				var st stores.Store = memory.New()
				if k > 1 {
					st = purgingSharded{newSharded(k)}
				}
				e, _ := openCollecting(t, st)
				var s *scope.Pred
				if scoped {
					s = mustScope(t, "eq", "owner", "a")
				}
				ids := []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7", "n8", "n9"}
				writeNotes(t, e, ids...)
				h := collectOnce(t, e)
				if h.ID == 0 || len(h.Raised) != k {
					t.Fatalf("horizon %+v: want an id and %d raised ids", h, k)
				}
				// Pages of one record: every cursor but the last is before R.
				p, err := e.PullScoped(context.Background(), "notes", Cursor{}, PageLimit{Records: 1}, s)
				if err != nil || !p.More {
					t.Fatalf("first page: %v, more %v", err, p.More)
				}
				if p.Next.mark != h.ID {
					t.Fatalf("first Next %v: mark %x, want the horizon's id %x", p.Next, p.Next.mark, h.ID)
				}
				n, end, err := pullNotes(t, e, p.Next, 1, s)
				if err != nil {
					t.Fatalf("the pull from the beginning after the publication: %v", err)
				}
				if n+len(p.Entries) != len(ids) || end.mark != h.ID {
					t.Fatalf("read %d records, want %d; last cursor %v", n+len(p.Entries), len(ids), end)
				}
				// A fresh start is marked too.
				if p, err = e.PullScoped(context.Background(), "notes", FreshStart(), PageLimit{Records: 1}, s); err != nil || p.Next.mark != h.ID {
					t.Fatalf("fresh start: %v, %v", p.Next, err)
				}
				mid := p.Next
				// A publication that raises nothing keeps the reader going.
				h2 := collectOnce(t, e)
				if h2.ID>>horizonNonceBits != h.ID>>horizonNonceBits+1 {
					t.Fatalf("second id %x after %x", h2.ID, h.ID)
				}
				if _, _, err := pullNotes(t, e, mid, 1, s); err != nil {
					t.Fatalf("after a publication that raised nothing: %v", err)
				}
				// One that raises R past the reader resets it: entries it
				// has not reached may be purged after it read their records.
				writeNotes(t, e, "n10", "n11", "n12", "n13", "n14", "n15")
				h3 := collectOnce(t, e)
				raised := false
				for i := range h3.Read {
					raised = raised || h3.Read[i] > h2.Read[i] && h3.Raised[i] == h3.ID
				}
				if !raised {
					t.Fatalf("horizon %+v after %+v: no shard raised", h3, h2)
				}
				if _, _, err := pullNotes(t, e, mid, 1, s); !isLeaseExpired(err) {
					t.Fatalf("a reader marked before a raise, before R: %v, want lease_expired", err)
				}
			})
		}
	}
}

// TestHorizonOldCursorReset: a cursor whose reading began before the
// publication, or that has no mark (every cursor written before marks
// were), is still reset when it is before R.
func TestHorizonOldCursorReset(t *testing.T) {
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("shards=%d", k), func(t *testing.T) {
			var st stores.Store = memory.New()
			if k > 1 {
				st = purgingSharded{newSharded(k)}
			}
			e, _ := openCollecting(t, st)
			writeNotes(t, e, "a", "b", "c", "d", "e", "f")
			ctx := context.Background()
			early, err := e.Pull(ctx, "notes", Cursor{}, PageLimit{Records: 1})
			if err != nil || early.Next.mark != 0 {
				t.Fatalf("before any publication: %v, mark %x", err, early.Next.mark)
			}
			collectOnce(t, e) // no lease: R is the heads
			if _, err := e.Pull(ctx, "notes", early.Next, PageLimit{}); !isLeaseExpired(err) {
				t.Fatalf("a cursor read before the publication, before R: %v, want lease_expired", err)
			}
			fresh, err := e.Pull(ctx, "notes", Cursor{}, PageLimit{Records: 1})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.Pull(ctx, "notes", fresh.Next, PageLimit{Records: 1}); err != nil {
				t.Fatalf("marked: %v", err)
			}
			// The same cursor without its mark, as an earlier version
			// encoded it.
			b := fresh.Next.Bytes()
			old := fresh.Next
			old.mark = 0
			ob := old.Bytes()
			if len(ob) >= len(b) || string(b[:len(ob)]) != string(ob) {
				t.Fatalf("the mark is not a trailing field: %x, %x", b, ob)
			}
			parsed, err := ParseCursor(ob)
			if err != nil || parsed.mark != 0 {
				t.Fatalf("a cursor without a mark: %v, %v", parsed, err)
			}
			if _, err := e.Pull(ctx, "notes", parsed, PageLimit{}); !isLeaseExpired(err) {
				t.Fatalf("a cursor without a mark before R: %v, want lease_expired", err)
			}
			// A forged mark of another publication is no better.
			forged := fresh.Next
			forged.mark ^= 1
			if _, err := e.Pull(ctx, "notes", forged, PageLimit{}); !isLeaseExpired(err) {
				t.Fatalf("a cursor marked by another publication of the same sequence: %v, want lease_expired", err)
			}
		})
	}
}

// TestCursorMarkEncoding: the mark is an optional trailing uvarint of
// formats 1 and 2; a zero mark is not written, and an encoded one is
// refused.
func TestCursorMarkEncoding(t *testing.T) {
	s := mustScope(t, "eq", "owner", "a")
	for _, c := range []Cursor{
		{store: noIdentity, epoch: 1, seq: 9, mark: 5<<horizonNonceBits | 7},
		{store: noIdentity, epoch: 3, shards: packPositions([]uint64{1, 0, 4}), mark: 1 << 60},
		{store: noIdentity, epoch: 1, seq: 9, scope: string(s.Encode()), mark: 42},
		{store: noIdentity, epoch: 1, scope: string(s.Encode()), trans: exactPrev, prevPos: packPositions([]uint64{4}), mark: 1},
	} {
		b := c.Bytes()
		got, err := ParseCursor(b)
		if err != nil || got != c {
			t.Fatalf("%v: encoded %x, parsed %v, %v", c, b, got, err)
		}
		noMark := c
		noMark.mark = 0
		nb := noMark.Bytes()
		if got, err := ParseCursor(nb); err != nil || got != noMark {
			t.Fatalf("%v without a mark: parsed %v, %v", c, got, err)
		}
		if _, err := ParseCursor(append(nb, 0)); err == nil {
			t.Fatalf("%v: an encoded zero mark parsed", c)
		}
		if _, err := ParseCursor(append(b, 1)); err == nil {
			t.Fatalf("%v: a byte after the mark parsed", c)
		}
	}
	// The longest unscoped cursor still fits the bound the design gives.
	pos := make([]uint64, stores.MaxShards)
	for i := range pos {
		pos[i] = 1<<64 - 1
	}
	c := cursorOf(noIdentity, 1<<64-1, pos)
	c.mark = 1<<64 - 1
	if n := len(c.Bytes()); n > 1+8+(3+stores.MaxShards)*10 || n > 256 || n > MaxCursorBytes {
		t.Fatalf("the longest unscoped cursor takes %d bytes", n)
	}
}
