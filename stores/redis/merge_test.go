package redis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	mathrand "math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// The merge script must agree with crdt.Record.Merge exactly: on every tie,
// unset, delete and replica id, and down to the bytes the merged record
// encodes to. These properties run random changes through Redis and through
// Go side by side.

// Replica ids that order differently bytewise than in a locale's collation
// ("B" < "a" bytewise) and that are prefixes of each other ("a" < "a-" <
// "ab").
var genReplica = rapid.SampledFrom([]string{"a", "b", "B", "a-", "ab", "Z_9"})

// Boundaries of CBOR head sizes, so the script's size arithmetic is probed
// where it changes.
var (
	genWideReplica = rapid.SampledFrom([]string{"a", "b", "B", "a-", "ab", "Z_9",
		strings.Repeat("r", 23), strings.Repeat("r", 24), strings.Repeat("r", crdt.MaxReplicaBytes)})
	genWall    = rapid.SampledFrom([]int64{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32, math.MaxUint32 + 1, crdt.MaxWall})
	genLogical = rapid.SampledFrom([]uint32{0, 1, 23, 24, 255, 256, 65535, 65536, math.MaxUint32})
	genName    = rapid.SampledFrom([]string{
		"t", "done", "tags", "título",
		strings.Repeat("n", 23), strings.Repeat("n", 24), strings.Repeat("n", 256),
	})
)

// genStamp draws mostly from a tiny pool, so equal stamps (the ties) are
// common, and sometimes from the boundary values.
func genStamp() *rapid.Generator[crdt.Stamp] {
	return rapid.Custom(func(t *rapid.T) crdt.Stamp {
		if rapid.IntRange(0, 3).Draw(t, "wide") == 0 {
			return crdt.Stamp{Wall: genWall.Draw(t, "wall"), Logical: genLogical.Draw(t, "logical"), Replica: genWideReplica.Draw(t, "replica")}
		}
		return crdt.Stamp{
			Wall:    rapid.Int64Range(1, 2).Draw(t, "wall"),
			Logical: rapid.Uint32Range(0, 1).Draw(t, "logical"),
			Replica: rapid.SampledFrom([]string{"a", "B", "b"}).Draw(t, "replica"),
		}
	})
}

var long = strings.Repeat("x", 150)

func genValue() *rapid.Generator[[]byte] {
	return rapid.Custom(func(t *rapid.T) []byte {
		var v any
		switch rapid.IntRange(0, 7).Draw(t, "kind") {
		case 0:
			v = nil
		case 1:
			v = rapid.Bool().Draw(t, "bool")
		case 2:
			v = rapid.Int64Range(-3, 3).Draw(t, "int")
		case 3:
			v = rapid.SampledFrom([]string{"", "milk", "Milk", "eggs"}).Draw(t, "string")
		case 4:
			// Long values that share a prefix and differ around the
			// 64-byte chunks the script compares before it compares bytes
			// (the text head takes two bytes: x*61 then "a" differs from
			// x*61 then "b" at byte 64).
			k := rapid.SampledFrom([]int{61, 62, 63, 125, 150}).Draw(t, "prefix")
			v = long[:k] + rapid.SampledFrom([]string{"", "a", "b"}).Draw(t, "suffix")
		case 5:
			v = rapid.SampledFrom([]float64{0.5, -1.25, 1e300}).Draw(t, "float")
		case 6:
			v = []any{"nested", map[string]any{"k": int64(1)}}
		case 7:
			v = bytes.Repeat([]byte{0xff, 0}, rapid.IntRange(1, 40).Draw(t, "n"))
		}
		b, err := crdt.EncodeValue(v)
		if err != nil {
			t.Fatalf("encode %v: %v", v, err)
		}
		return b
	})
}

func genField() *rapid.Generator[crdt.Field] {
	return rapid.Custom(func(t *rapid.T) crdt.Field {
		f := crdt.Field{Stamp: genStamp().Draw(t, "stamp")}
		for f.Stamp.IsZero() {
			f.Stamp = genStamp().Draw(t, "stamp")
		}
		if rapid.IntRange(0, 4).Draw(t, "unset") > 0 {
			f.Value = genValue().Draw(t, "value")
		}
		return f
	})
}

// genRecord draws a change (possibly not normalized, as decoded input may
// be) to one of a few records.
func genRecord(ids ...string) *rapid.Generator[crdt.Record] {
	return rapid.Custom(func(t *rapid.T) crdt.Record {
		r := crdt.Record{ID: rapid.SampledFrom(ids).Draw(t, "id")}
		if rapid.IntRange(0, 2).Draw(t, "deleted") == 0 {
			r.Deleted = genStamp().Draw(t, "delete")
		}
		for range rapid.IntRange(0, 4).Draw(t, "fields") {
			if r.Fields == nil {
				r.Fields = map[string]crdt.Field{}
			}
			r.Fields[genName.Draw(t, "name")] = genField().Draw(t, "field")
		}
		return r
	})
}

// model is the Go reference: crdt.Merge and a sequence counter per
// collection, as the memory store keeps them.
type model struct {
	head    map[string]uint64
	records map[string]map[string]stores.Entry
}

func newModel() *model {
	return &model{head: map[string]uint64{}, records: map[string]map[string]stores.Entry{}}
}

func (m *model) apply(changes []crdt.Change) []stores.Result {
	out := make([]stores.Result, len(changes))
	for i, c := range changes {
		recs := m.records[c.Collection]
		if recs == nil {
			recs = map[string]stores.Entry{}
			m.records[c.Collection] = recs
		}
		e := recs[c.Record.ID]
		if e.Seq == 0 {
			e.Record = crdt.Record{ID: c.Record.ID}
		}
		next, changed := crdt.Merge(e.Record, c.Record)
		lost := crdt.LostFields(c.Record, next)
		if !changed {
			out[i] = stores.Result{Seq: e.Seq, Lost: lost}
			continue
		}
		m.head[c.Collection]++
		recs[c.Record.ID] = stores.Entry{Seq: m.head[c.Collection], Record: next}
		out[i] = stores.Result{Changed: true, Seq: m.head[c.Collection], Lost: lost}
	}
	return out
}

// sameResult compares results, Lost included.
func sameResult(a, b stores.Result) bool {
	return a.Changed == b.Changed && a.Seq == b.Seq && slices.Equal(a.Lost, b.Lost)
}

// fataler is what testing.TB and *rapid.T have in common here.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

func encode(t fataler, r crdt.Record) []byte {
	t.Helper()
	b, err := crdt.EncodeRecord(r)
	if err != nil {
		t.Fatalf("encode %v: %v", r, err)
	}
	return b
}

// checkAgainstModel compares everything the store holds in colls with m.
func checkAgainstModel(t fataler, s *Store, m *model, colls []string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, coll := range colls {
		head, err := s.Head(ctx, coll)
		if err != nil {
			t.Fatalf("head %s: %v", coll, err)
		}
		if head != m.head[coll] {
			t.Fatalf("head %s: got %d, want %d", coll, head, m.head[coll])
		}
		var want []stores.Entry
		for id, e := range m.records[coll] {
			want = append(want, e)
			got, err := s.Get(ctx, coll, id)
			if err != nil {
				t.Fatalf("get %s/%s: %v", coll, id, err)
			}
			if got.Seq != e.Seq || !got.Record.Equal(e.Record) {
				t.Fatalf("get %s/%s:\ngot  seq %d %+v\nwant seq %d %+v", coll, id, got.Seq, got.Record, e.Seq, e.Record)
			}
			if g, w := encode(t, got.Record), encode(t, e.Record); !bytes.Equal(g, w) {
				t.Fatalf("get %s/%s encodes differently:\ngot  %x\nwant %x", coll, id, g, w)
			}
		}
		slices.SortFunc(want, func(a, b stores.Entry) int { return int(a.Seq) - int(b.Seq) })
		page, err := s.Pull(ctx, coll, 0, stores.PageLimit{Records: stores.MaxPage, Bytes: 1 << 30})
		if err != nil {
			t.Fatalf("pull %s: %v", coll, err)
		}
		if len(page.Entries) != len(want) || page.More {
			t.Fatalf("pull %s: got %d entries (more %v), want %d", coll, len(page.Entries), page.More, len(want))
		}
		for i, e := range page.Entries {
			if e.Seq != want[i].Seq || !e.Record.Equal(want[i].Record) {
				t.Fatalf("pull %s entry %d: got seq %d %+v, want seq %d %+v", coll, i, e.Seq, e.Record, want[i].Seq, want[i].Record)
			}
		}
	}
}

// TestMergeMatchesGo applies random batches of changes (ties, unsets,
// deletes, equal replica ids, several changes to one record in a batch,
// two collections in a batch) to Redis and to the Go model, and requires
// equal results, records, encodings, logs and heads.
//
// It runs four times: with the changes merged in Go and sent to the
// script to compare and set (the store's way), the same with the written
// cache, merged by the script itself (its fallback for records another
// writer changed meanwhile), and merged in Go by two stores with written
// caches on the same keys, each batch by either, so that each store's
// cached blobs and head are often stale; all stay held to Go.
func TestMergeMatchesGo(t *testing.T) {
	for _, mode := range []string{"merged in Go", "merged in Go, written cache", "merged in the script", "merged in Go by two stores, written cache"} {
		t.Run(mode, func(t *testing.T) { testMergeMatchesGo(t, mode) })
	}
}

func testMergeMatchesGo(t *testing.T, mode string) {
	eachTarget(t, func(t *testing.T, tg target) {
		var opts Options
		if strings.HasSuffix(mode, "written cache") {
			opts.WrittenCacheBytes = 1 << 20
		}
		s := openStore(t, tg, opts)
		s.mergeInScript = mode == "merged in the script"
		writers := []*Store{s}
		if strings.HasPrefix(mode, "merged in Go by two stores") {
			opts.KeyPrefix = s.prefix
			writers = append(writers, openStore(t, tg, opts))
		}
		n := 0
		rapid.Check(t, func(t *rapid.T) {
			n++
			colls := []string{fmt.Sprintf("p%d", n), fmt.Sprintf("q%d.x", n)}
			m := newModel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for range rapid.IntRange(1, 4).Draw(t, "batches") {
				batch := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) crdt.Change {
					return crdt.Change{
						Collection: rapid.SampledFrom(colls).Draw(t, "collection"),
						Record:     genRecord("r1", "r2", "é").Draw(t, "record"),
					}
				}), 1, 6).Draw(t, "batch")
				want := m.apply(batch)
				before := make([]crdt.Change, len(batch))
				for i, c := range batch {
					before[i] = crdt.Change{Collection: c.Collection, Record: c.Record.Clone()}
				}
				s := writers[rapid.IntRange(0, len(writers)-1).Draw(t, "store")]
				got, err := s.Apply(ctx, batch)
				if err != nil {
					t.Fatalf("apply: %v", err)
				}
				// Apply leaves the caller's changes as they were, also when
				// one record has several of them.
				if !reflect.DeepEqual(batch, before) {
					t.Fatalf("apply modified its changes: got %+v, want %+v", batch, before)
				}
				if !slices.EqualFunc(got, want, sameResult) {
					t.Fatalf("apply results: got %+v, want %+v", got, want)
				}
				// Applying again changes nothing (what a go-redis retry does).
				again, err := s.Apply(ctx, batch)
				if err != nil {
					t.Fatalf("apply again: %v", err)
				}
				for i, r := range again {
					if r.Changed {
						t.Fatalf("apply again: change %d changed its record", i)
					}
				}
			}
			checkAgainstModel(t, s, m, colls)
		})
	})
}

// TestScriptSizeMatchesCBOR checks the script's computation of the encoded
// record size against crdt.EncodeRecord: a merged record of exactly the
// limit is stored, one byte more is refused with ErrTooLarge and leaves
// the record as it was.
func TestScriptSizeMatchesCBOR(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		s := openStore(t, tg, Options{})
		n := 0
		rapid.Check(t, func(t *rapid.T) {
			n++
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			coll := fmt.Sprintf("size%d", n)
			id := rapid.SampledFrom([]string{"r", strings.Repeat("i", 23), strings.Repeat("i", 24), strings.Repeat("i", 300)}).Draw(t, "id")
			base := genRecord(id).Draw(t, "base")
			delta := genRecord(id).Draw(t, "delta")
			s.maxRecordBytes = crdt.MaxRecordBytes
			if _, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: base}}); err != nil {
				t.Fatalf("apply base: %v", err)
			}
			before, _ := crdt.Merge(crdt.Record{ID: id}, base)
			want, changed := crdt.Merge(before, delta)
			if !changed {
				return
			}
			size := len(encode(t, want))
			s.maxRecordBytes = size - 1
			_, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: delta}})
			if !errors.Is(err, stores.ErrTooLarge) {
				t.Fatalf("apply with limit %d below the size: got %v, want ErrTooLarge", size-1, err)
			}
			if len(before.Fields) > 0 || !before.Deleted.IsZero() {
				got, err := s.Get(ctx, coll, id)
				if err != nil || !got.Record.Equal(before) {
					t.Fatalf("refused change altered the record: got %+v, %v; want %+v", got.Record, err, before)
				}
			}
			s.maxRecordBytes = size
			res, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: delta}})
			if err != nil || !res[0].Changed {
				t.Fatalf("apply with limit %d, the exact size: got %+v, %v", size, res, err)
			}
		})
		s.maxRecordBytes = crdt.MaxRecordBytes
	})
}

// TestTiesMatchGo writes one field several times at one stamp (what two
// replicas sharing an id produce) and requires the script to pick the same
// winner as Go: an unset beats a value, else the larger value bytes win.
// The values share long prefixes and differ around the script's 64-byte
// comparison chunks.
func TestTiesMatchGo(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		s := openStore(t, tg, Options{})
		n := 0
		rapid.Check(t, func(t *rapid.T) {
			n++
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			coll := fmt.Sprintf("tie%d", n)
			st := genStamp().Draw(t, "stamp")
			// With the two-byte text head, a difference after x*61 or x*125
			// falls on the last byte of a 64-byte chunk.
			k := rapid.OneOf(rapid.SampledFrom([]int{60, 61, 62, 124, 125, 126}), rapid.IntRange(0, 140)).Draw(t, "prefix")
			m := newModel()
			for range rapid.IntRange(2, 5).Draw(t, "writes") {
				var v []byte
				switch rapid.IntRange(0, 5).Draw(t, "kind") {
				case 0:
					v = nil // unset
				case 1:
					v = genValue().Draw(t, "value")
				default:
					b, err := crdt.EncodeValue(long[:k] + rapid.SampledFrom([]string{"", "a", "b", "ab"}).Draw(t, "suffix"))
					if err != nil {
						t.Fatal(err)
					}
					v = b
				}
				batch := []crdt.Change{{Collection: coll, Record: crdt.Record{ID: "r", Fields: map[string]crdt.Field{"f": {Stamp: st, Value: v}}}}}
				want := m.apply(batch)
				before := make([]crdt.Change, len(batch))
				for i, c := range batch {
					before[i] = crdt.Change{Collection: c.Collection, Record: c.Record.Clone()}
				}
				got, err := s.Apply(ctx, batch)
				if err != nil {
					t.Fatalf("apply: %v", err)
				}
				// Apply leaves the caller's changes as they were, also when
				// one record has several of them.
				if !reflect.DeepEqual(batch, before) {
					t.Fatalf("apply modified its changes: got %+v, want %+v", batch, before)
				}
				if !slices.EqualFunc(got, want, sameResult) {
					t.Fatalf("apply %x at %v: got %+v, want %+v", v, st, got, want)
				}
			}
			checkAgainstModel(t, s, m, []string{coll})
		})
	})
}

// TestScriptRefusesMalformedInput sends the merge script a batch whose
// second change is damaged (as a buggy or hostile caller of the script
// could) and checks that it fails before its first write: the valid first
// change is not applied either.
func TestScriptRefusesMalformedInput(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		const coll = "bad"
		good := encodeBlob(0, crdt.SetField("r1", "f", []byte{0x01}, crdt.Stamp{Wall: 1, Replica: "a"}))
		for _, tc := range []struct {
			name string
			blob []byte
		}{
			{"truncated", good[:len(good)-1]},
			{"bad version", append([]byte{9}, good[1:]...)},
			{"bad flag", append(bytes.Clone(good[:len(good)-6]), 5, 0, 0, 0, 1, 1)},
			{"duplicate field", append(bytes.Clone(good), good[blobHeader+stampFixed:]...)},
			{"empty", nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				keys := s.writeKeys(coll)
				err := mergeScript.Run(ctx, s.client, keys, s.channel, coll, crdt.MaxRecordBytes, crdt.MaxFieldsPerRecord, uint64(MaxSeq), 2,
					"r1", good, "r2", tc.blob).Err()
				if err == nil || !strings.Contains(err.Error(), "convergo:malformed") {
					t.Fatalf("got %v, want a convergo:malformed error", err)
				}
				if head, err := s.Head(ctx, coll); err != nil || head != 0 {
					t.Fatalf("head after a refused batch: got %d, %v; want 0", head, err)
				}
				if _, err := s.Get(ctx, coll, "r1"); !errors.Is(err, stores.ErrNotFound) {
					t.Fatalf("get r1 after a refused batch: got %v, want ErrNotFound", err)
				}
			})
		}
	})
}

// TestLargeBatchMatchesGo applies batches larger than one script call
// (maxScriptChanges changes, maxScriptBytes bytes), with changes to one
// record on both sides of a split, and compares with the Go model.
func TestLargeBatchMatchesGo(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		rng := mathrand.New(mathrand.NewPCG(1, 2))
		big := make([]byte, 100<<10)
		for i := range big {
			big[i] = byte('a' + rng.IntN(26))
		}
		bigValue := mustValue(t, string(big))
		m := newModel()
		for round, n := range []int{stores.MaxBatch, 3*maxScriptChanges + 1, 25} {
			batch := make([]crdt.Change, n)
			for i := range batch {
				st := crdt.Stamp{Wall: int64(1 + rng.IntN(50)), Logical: uint32(rng.IntN(2)), Replica: []string{"a", "b"}[rng.IntN(2)]}
				id := fmt.Sprintf("r%d", rng.IntN(40))
				var r crdt.Record
				switch k := rng.IntN(10); {
				case k == 0:
					r = crdt.DeleteRecord(id, st)
				case k == 1:
					r = crdt.UnsetField(id, "f", st)
				case round == 2:
					// 25 changes of 100 KiB: split by bytes, not count.
					r = crdt.SetField(id, fmt.Sprintf("g%d", rng.IntN(2)), bigValue, st)
				default:
					r = crdt.SetField(id, []string{"f", "g"}[rng.IntN(2)], mustValue(t, int64(rng.IntN(5))), st)
				}
				batch[i] = crdt.Change{Collection: "big", Record: r}
			}
			want := m.apply(batch)
			got, err := s.Apply(ctx, batch)
			if err != nil {
				t.Fatalf("round %d: apply %d changes: %v", round, n, err)
			}
			if !slices.EqualFunc(got, want, sameResult) {
				for i := range got {
					if !sameResult(got[i], want[i]) {
						t.Fatalf("round %d: change %d: got %+v, want %+v", round, i, got[i], want[i])
					}
				}
			}
		}
		checkAgainstModel(t, s, m, []string{"big"})
	})
}

// TestSeqLimit puts a collection's head just below MaxSeq: a batch that
// would pass it is refused whole, one that reaches it exactly is applied,
// and Pull handles cursors at the limit.
func TestSeqLimit(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		const coll = "lim"
		if err := s.client.Set(ctx, s.seqKey(coll), strconv.FormatUint(MaxSeq-1, 10), 0).Err(); err != nil {
			t.Fatal(err)
		}
		st := crdt.Stamp{Wall: 5, Replica: "a"}
		two := []crdt.Change{
			{Collection: coll, Record: crdt.SetField("r1", "f", []byte{1}, st)},
			{Collection: coll, Record: crdt.SetField("r2", "f", []byte{1}, st)},
		}
		if _, err := s.Apply(ctx, two); err == nil || !strings.Contains(err.Error(), "seq-exhausted") {
			t.Fatalf("apply past MaxSeq: got %v, want a seq-exhausted error", err)
		}
		if _, err := s.Get(ctx, coll, "r1"); !errors.Is(err, stores.ErrNotFound) {
			t.Fatalf("get after the refused batch: got %v, want ErrNotFound", err)
		}
		res, err := s.Apply(ctx, two[:1])
		if err != nil || res[0].Seq != MaxSeq {
			t.Fatalf("apply up to MaxSeq: got %+v, %v; want seq %d", res, err, uint64(MaxSeq))
		}
		page, err := s.Pull(ctx, coll, MaxSeq-1, page10)
		if err != nil || len(page.Entries) != 1 || page.Next != MaxSeq || page.More {
			t.Fatalf("pull after MaxSeq-1: got %+v, %v", page, err)
		}
		page, err = s.Pull(ctx, coll, MaxSeq, page10)
		if err != nil || len(page.Entries) != 0 || page.Next != MaxSeq {
			t.Fatalf("pull after MaxSeq: got %+v, %v", page, err)
		}
	})
}

// TestPullRefusesInconsistentState damages a collection behind the store's
// back (a log entry without its record, a record blob cut short) and
// checks that Pull and Get report it instead of returning wrong records.
func TestPullRefusesInconsistentState(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		const coll = "dmg"
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("r1", "f", []byte{1}, crdt.Stamp{Wall: 1, Replica: "a"})}}); err != nil {
			t.Fatal(err)
		}
		if err := s.client.ZAdd(ctx, s.logKey(coll), goredis.Z{Score: 2, Member: "ghost"}).Err(); err != nil {
			t.Fatal(err)
		}
		// The page ends before the damaged entry; the next pull reports it.
		page, err := s.Pull(ctx, coll, 0, page10)
		if err != nil || len(page.Entries) != 1 || !page.More {
			t.Fatalf("pull with a log entry without record: got %+v, %v; want r1 and more", page, err)
		}
		if _, err := s.Pull(ctx, coll, page.Next, page10); !errors.Is(err, stores.ErrCorrupt) || !strings.Contains(err.Error(), "ghost") {
			t.Fatalf("pull at a log entry without record: got %v, want ErrCorrupt naming it", err)
		}
		if err := s.client.HSet(ctx, s.recKey(coll), "r1", []byte{1, 0, 0}).Err(); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, coll, "r1"); !errors.Is(err, errMalformedBlob) || !errors.Is(err, stores.ErrCorrupt) {
			t.Fatalf("get of a damaged record: got %v, want errMalformedBlob and ErrCorrupt", err)
		}
	})
}

// TestNewRecordPaths holds the script's path for a record that does not
// exist yet (or whose stored blob is unreadable), where a change without a
// delete becomes the record without a merge, to the Go model: results,
// records, their blobs, the log, the head, the damaged records reported
// and usage. Each case applies one batch after an optional first one and
// an optional damage.
func TestNewRecordPaths(t *testing.T) {
	v := func(s string) []byte { b, _ := crdt.EncodeValue(s); return b }
	st := func(wall int64, replica string) crdt.Stamp { return crdt.Stamp{Wall: wall, Replica: replica} }
	set := func(id, name, value string, wall int64) crdt.Record {
		return crdt.SetField(id, name, v(value), st(wall, "a"))
	}
	two := func(id string, wall int64) crdt.Record {
		r := set(id, "f", "x", wall)
		r.Fields["g"] = crdt.Field{Stamp: st(wall, "b")} // an unset
		return r
	}
	deleted := func(id string, del, wall int64) crdt.Record {
		r := set(id, "f", "y", wall)
		r.Deleted = st(del, "a")
		return r
	}
	empty := func(id string) crdt.Record { return crdt.Record{ID: id} }
	for _, tc := range []struct {
		name    string
		first   []crdt.Record // applied before, so these records exist
		damage  []string      // ids whose stored blob is then garbage
		batch   []crdt.Record
		damaged []string // what the batch reports replaced
	}{
		{name: "new record", batch: []crdt.Record{two("r1", 5)}},
		{name: "new records and an existing one", first: []crdt.Record{set("r2", "f", "old", 1)},
			batch: []crdt.Record{set("r1", "f", "a", 2), set("r2", "f", "new", 3), two("r3", 4)}},
		{name: "new record then merged into", batch: []crdt.Record{two("r1", 5), set("r1", "f", "later", 6), set("r1", "g", "older", 4)}},
		{name: "new record then a change it beats", batch: []crdt.Record{two("r1", 5), set("r1", "f", "earlier", 4)}},
		{name: "new record twice", batch: []crdt.Record{two("r1", 5), two("r1", 5)}},
		{name: "empty change to a new record", batch: []crdt.Record{empty("r1"), set("r1", "f", "a", 1), empty("r2")}},
		{name: "new record with a delete", batch: []crdt.Record{deleted("r1", 3, 2), deleted("r2", 3, 4)}},
		{name: "damaged record replaced", first: []crdt.Record{set("r1", "f", "a", 9), set("r2", "f", "b", 1)}, damage: []string{"r1"},
			batch: []crdt.Record{set("r1", "f", "c", 1), set("r2", "f", "d", 2)}, damaged: []string{"r1"}},
		{name: "damaged record replaced then merged into", first: []crdt.Record{set("r1", "f", "a", 9)}, damage: []string{"r1"},
			batch: []crdt.Record{two("r1", 1), set("r1", "g", "e", 2)}, damaged: []string{"r1"}},
		{name: "damaged record and a delete", first: []crdt.Record{set("r1", "f", "a", 9)}, damage: []string{"r1"},
			batch: []crdt.Record{deleted("r1", 3, 4)}, damaged: []string{"r1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eachTarget(t, func(t *testing.T, tg target) {
				ctx := testContext(t)
				s := openStore(t, tg, Options{})
				const coll = "new"
				changes := func(rs []crdt.Record) []crdt.Change {
					out := make([]crdt.Change, len(rs))
					for i, r := range rs {
						out[i] = crdt.Change{Collection: coll, Record: r}
					}
					return out
				}
				m := newModel()
				if len(tc.first) > 0 {
					m.apply(changes(tc.first))
					if _, err := s.Apply(ctx, changes(tc.first)); err != nil {
						t.Fatal(err)
					}
				}
				for _, id := range tc.damage {
					if err := s.client.HSet(ctx, s.recKey(coll), id, "garbage").Err(); err != nil {
						t.Fatal(err)
					}
					// The model forgets it: the change replaces what was lost.
					delete(m.records[coll], id)
				}
				corrupt := s.Stats().Corrupt
				want := m.apply(changes(tc.batch))
				got, err := s.Apply(ctx, changes(tc.batch))
				if err != nil {
					t.Fatalf("apply: %v", err)
				}
				if !slices.EqualFunc(got, want, sameResult) {
					t.Fatalf("results: got %+v, want %+v", got, want)
				}
				if n := s.Stats().Corrupt - corrupt; n != uint64(len(tc.damaged)) {
					t.Errorf("damaged records reported: %d, want %d", n, len(tc.damaged))
				}
				checkAgainstModel(t, s, m, []string{coll})
				// A new record's blob is the change's, with its seq.
				for i, r := range tc.batch {
					if !got[i].Changed || m.records[coll][r.ID].Seq != got[i].Seq {
						continue
					}
					blob, err := s.client.HGet(ctx, s.recKey(coll), r.ID).Bytes()
					if err != nil {
						t.Fatal(err)
					}
					seq, rec, err := decodeBlob(r.ID, blob)
					if err != nil || seq != got[i].Seq || !rec.Equal(m.records[coll][r.ID].Record) {
						t.Fatalf("blob of %s: seq %d %+v, %v; want seq %d %+v", r.ID, seq, rec, err, got[i].Seq, m.records[coll][r.ID].Record)
					}
				}
				checkUsage(t, s, coll, tc.name)
			})
		})
	}
}

// TestEmptyChangeLeavesDamage: a change that writes nothing (no field, no
// delete) to an unreadable record replaces nothing, so nothing is
// reported replaced and the collection keeps its epoch; the next write
// that does replace it reports it.
func TestEmptyChangeLeavesDamage(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		const coll = "damaged"
		stamp := crdt.Stamp{Wall: 9, Replica: "a"}
		value, err := crdt.EncodeValue("x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("r1", "f", value, stamp)}}); err != nil {
			t.Fatal(err)
		}
		if err := s.client.HSet(ctx, s.recKey(coll), "r1", "garbage").Err(); err != nil {
			t.Fatal(err)
		}
		before := s.Stats().RecordsReplaced
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.Record{ID: "r1"}}}); err != nil {
			t.Fatal(err)
		}
		if n := s.Stats().RecordsReplaced - before; n != 0 {
			t.Errorf("an empty change reported %d damaged records replaced, want 0", n)
		}
		if b, err := s.client.HGet(ctx, s.recKey(coll), "r1").Result(); err != nil || b != "garbage" {
			t.Fatalf("stored blob after an empty change: %q, %v; want it untouched", b, err)
		}
		stamp.Wall++
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("r1", "f", value, stamp)}}); err != nil {
			t.Fatal(err)
		}
		if n := s.Stats().RecordsReplaced - before; n != 1 {
			t.Errorf("a write over the damaged record reported %d replaced, want 1", n)
		}
	})
}

// TestWrittenCache checks that a record this store wrote is not read again
// before its next change, and that a cached blob gone stale (another
// store's write, a record deleted behind the store's back) is merged by
// the script, after which the store reads the record again.
func TestWrittenCache(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{WrittenCacheBytes: 1 << 20})
		other := openStore(t, tg, Options{KeyPrefix: s.prefix})
		const coll = "wc"
		st := func(i int) crdt.Stamp { return crdt.Stamp{Wall: int64(1000 + i), Replica: "w"} }
		m := newModel()
		step := 0
		apply := func(s *Store, field string, wantRead, wantFell uint64) {
			t.Helper()
			step++
			read0, fell0 := s.commits.recordsRead.Load(), s.commits.fellBack.Load()
			batch := []crdt.Change{{Collection: coll, Record: crdt.SetField("r", field, []byte{byte(step)}, st(step))}}
			want := m.apply(batch)
			got, err := s.Apply(ctx, batch)
			if err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			if !slices.EqualFunc(got, want, sameResult) {
				t.Fatalf("step %d: got %+v, want %+v", step, got, want)
			}
			if read, fell := s.commits.recordsRead.Load()-read0, s.commits.fellBack.Load()-fell0; read != wantRead || fell != wantFell {
				t.Fatalf("step %d: read %d records and the script merged %d, want %d and %d", step, read, fell, wantRead, wantFell)
			}
		}
		apply(s, "a", 1, 0)     // read: absent
		apply(s, "b", 0, 0)     // as this store wrote it
		apply(s, "a", 0, 0)     // again
		apply(other, "c", 1, 0) // the other store reads it
		apply(s, "d", 0, 1)     // stale: the script merges it
		apply(s, "e", 1, 0)     // read again
		if s.written.len() != 1 {
			t.Fatalf("the cache holds %d records, want 1", s.written.len())
		}
		// Deleted behind the store's back: the change makes it anew.
		if err := s.client.HDel(ctx, s.recKey(coll), "r").Err(); err != nil {
			t.Fatal(err)
		}
		delete(m.records[coll], "r")
		apply(s, "f", 0, 1)
		checkAgainstModel(t, s, m, []string{coll})
	})
}

// TestRoundTakesEarlierCalls checks that the calls of one round trip that
// name the same record read it once, each later call taking it as the
// earlier one's plan leaves it, so that the script merges none of them
// itself.
func TestRoundTakesEarlierCalls(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		ctx := testContext(t)
		s := openStore(t, tg, Options{})
		held, release, sizes := holdFirstRoundTrip(s)
		defer release()
		const coll, callers = "rt", 3
		st := func(i int) crdt.Stamp { return crdt.Stamp{Wall: int64(1000 + i), Replica: "w"} }
		firstErr := make(chan error, 1)
		go func() {
			_, err := s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("first", "f", []byte{1}, st(0))}})
			firstErr <- err
		}()
		<-held
		read0, fell0 := s.commits.recordsRead.Load(), s.commits.fellBack.Load()
		results := make([][]stores.Result, callers)
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for c := range callers {
			wg.Go(func() {
				results[c], errs[c] = s.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField("q", "f"+strconv.Itoa(c), []byte{1}, st(c+1))}})
			})
			for s.queued(coll) < c+1 {
				time.Sleep(time.Millisecond)
			}
		}
		release()
		wg.Wait()
		if err := <-firstErr; err != nil {
			t.Fatal(err)
		}
		if got := sizes(); len(got) != 2 || got[1] != callers {
			t.Fatalf("round trips of %v calls, want [1 %d]", got, callers)
		}
		var seqs []uint64
		for c := range callers {
			if errs[c] != nil || len(results[c]) != 1 || !results[c][0].Changed {
				t.Fatalf("caller %d: %+v, %v", c, results[c], errs[c])
			}
			seqs = append(seqs, results[c][0].Seq)
		}
		slices.Sort(seqs)
		if !slices.Equal(seqs, []uint64{2, 3, 4}) {
			t.Fatalf("seqs %v, want 2, 3, 4", seqs)
		}
		if read, fell := s.commits.recordsRead.Load()-read0, s.commits.fellBack.Load()-fell0; read != 1 || fell != 0 {
			t.Fatalf("read %d records and the script merged %d, want 1 and 0", read, fell)
		}
		e, err := s.Get(ctx, coll, "q")
		if err != nil || e.Seq != 4 || len(e.Record.Fields) != callers {
			t.Fatalf("q: %+v, %v; want seq 4 and %d fields", e, err, callers)
		}
	})
}
