package engine

import (
	"context"
	"fmt"
	"math/bits"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// readCounter counts a store's pulls and the bytes of the records they
// return.
type readCounter struct {
	stores.Store
	bytes int
	pulls int
}

func (r *readCounter) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	r.pulls++
	p, err := r.Store.Pull(ctx, coll, after, limit)
	for _, en := range p.Entries {
		r.bytes += len(crdt.AppendRecord(nil, en.Record))
	}
	return p, err
}

// A pull reads at most scanPages pages' worth of bytes (of its own byte
// limit, or of the largest record) of records it does not send, besides
// its page, as it passes over at most maxScan entries: a reader whose scope matches nothing made one request read up
// to maxScan records, some 3 GB of records of 300 KiB, and be answered
// an empty page or MaxPage leaves of a few bytes. It still gets through
// the log, a bounded part per page.
func TestPullScanBytesBounded(t *testing.T) {
	counter := &readCounter{Store: memory.New()}
	e, err := Open(Config{Store: counter, Replica: "srv", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); counter.Store.Close() })
	ctx := context.Background()
	const records = 60
	big := value(t, strings.Repeat("x", 100<<10))
	for i := range records {
		rec := crdt.SetField(fmt.Sprint(i), "body", big, crdt.Stamp{Wall: 1, Replica: "c1"})
		if _, err := e.Apply(ctx, []crdt.Change{{Collection: "notes", Record: rec}}); err != nil {
			t.Fatal(err)
		}
	}
	none, err := scope.Parse(`owner == "nobody"`)
	if err != nil {
		t.Fatal(err)
	}
	limit := PageLimit{Bytes: 256 << 10}
	bound := scanPages*max(limit.Bytes, crdt.MaxRecordBytes) + limit.Bytes + crdt.MaxRecordBytes
	cur, pages, left := Cursor{}, 0, 0
	for {
		counter.bytes = 0
		p, err := e.PullScoped(ctx, "notes", cur, limit, none)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(p.Entries) != 0 {
			t.Fatalf("a scope matching nothing: %d records", len(p.Entries))
		}
		if counter.bytes > bound {
			t.Fatalf("one pull read %d bytes of records, want at most %d", counter.bytes, bound)
		}
		left += len(p.Left)
		cur = p.Next
		if !p.More {
			break
		}
		if pages > records {
			t.Fatalf("no end of the log after %d pages", pages)
		}
	}
	// A reader from the start may hold any record: each out of its scope
	// is told as a leave, once.
	if left != records || pages < 2 {
		t.Fatalf("%d leaves in %d pages, want %d in more than one", left, pages, records)
	}
}

// The store reads of one pull do not grow with what it passes over: a
// reader whose page has room for one more record (a limit of one, or a
// byte bound nearly used) and who need not be told of the entries it
// reads (a fresh reader outside its scope, a change of scope between
// two that match the same records) made one store read per entry, up to
// maxScan round trips for one request. Reads grow with what a pull
// passed over, up to a page of the store's: at most one read per
// doubling up to MaxPage, and one per page of the scan's bound after.
func TestPullScanStoreReadsBounded(t *testing.T) {
	counter := &readCounter{Store: memory.New()}
	e, err := Open(Config{Store: counter, Replica: "srv", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); counter.Store.Close() })
	ctx := context.Background()
	const records = 3000
	st := crdt.Stamp{Wall: 1, Replica: "c1"}
	// One record the reader matches, of nearly the page's byte bound,
	// then records it does not, of 100 bytes or so.
	limit := PageLimit{Bytes: 4 << 10}
	big := crdt.SetField("big", "owner", value(t, "me"), st)
	big.Fields["body"] = crdt.Field{Stamp: st, Value: value(t, strings.Repeat("x", limit.Bytes-120))}
	changes := []crdt.Change{{Collection: "notes", Record: big}}
	for i := range records {
		changes = append(changes, crdt.Change{Collection: "notes",
			Record: crdt.SetField(fmt.Sprint(i), "owner", value(t, strings.Repeat("o", 80)), st)})
	}
	for len(changes) > 0 {
		n := min(len(changes), 500)
		if _, err := e.Apply(ctx, changes[:n]); err != nil {
			t.Fatal(err)
		}
		changes = changes[n:]
	}
	mine, err := scope.Parse(`owner == "me"`)
	if err != nil {
		t.Fatal(err)
	}
	alsoMine, err := scope.Parse(`owner in ["me", "nobody"]`)
	if err != nil {
		t.Fatal(err)
	}
	var head Cursor // read to the head under mine
	for more := true; more; {
		p, err := e.PullScoped(ctx, "notes", head, PageLimit{}, mine)
		if err != nil {
			t.Fatal(err)
		}
		head, more = p.Next, p.More
	}
	bound := 2*bits.Len(uint(MaxPage)) + scanPages
	for _, c := range []struct {
		name   string
		cursor Cursor
		limit  PageLimit
		s      *scope.Pred
	}{
		{"a fresh reader, one record a page", FreshStart(), PageLimit{Records: 1, Bytes: limit.Bytes}, mine},
		{"a fresh reader, a page's bytes nearly used", FreshStart(), limit, mine},
		{"a change of scope, one record a page", head, PageLimit{Records: 1, Bytes: limit.Bytes}, alsoMine},
	} {
		t.Run(c.name, func(t *testing.T) {
			cur, pulls := c.cursor, 0
			for range records {
				counter.pulls = 0
				p, err := e.PullScoped(ctx, "notes", cur, c.limit, c.s)
				if err != nil {
					t.Fatal(err)
				}
				pulls++
				if counter.pulls > bound {
					t.Fatalf("pull %d: %d store reads, want at most %d", pulls, counter.pulls, bound)
				}
				if cur = p.Next; !p.More {
					return
				}
			}
			t.Fatalf("no end of the log after %d pulls", pulls)
		})
	}
}

// Judging an entry by a scope costs up to the scope's bytes besides the
// record's (crdt/scope), and a client chooses its own scope, up to
// scope.MaxBytes: a pull counts those bytes toward what it passes over,
// for every scope it judges an entry by, so that one near the limit
// (two, in a change of scope) does not make each of maxScan entries cost
// hundreds of times what a plain scope does. A scope of a few bytes
// still passes over maxScan entries.
func TestPullScanScopeBytesBounded(t *testing.T) {
	e := engineOn(t, memory.New())
	ctx := context.Background()
	st := crdt.Stamp{Wall: 1, Replica: "c1"}
	const records = maxScan + 500
	var changes []crdt.Change
	for i := range records {
		changes = append(changes, crdt.Change{Collection: "notes", Record: crdt.SetField(fmt.Sprint(i), "owner", value(t, "b"), st)})
	}
	for len(changes) > 0 {
		n := min(len(changes), 1000)
		if _, err := e.Apply(ctx, changes[:n]); err != nil {
			t.Fatal(err)
		}
		changes = changes[n:]
	}
	// As many bytes as a scope may take: an "in" of values that match
	// nothing, besides owner == "a".
	large := func(salt string) *scope.Pred {
		var vals []any
		for i := 0; ; i++ {
			next := append(vals, fmt.Sprintf("%s%04d%s", salt, i, strings.Repeat("v", 20)))
			if _, err := scope.FromValue([]any{"or", []any{"eq", "owner", "a"}, []any{"in", "tag", next}}); err != nil {
				break
			}
			vals = next
		}
		return mustScope(t, "or", []any{"eq", "owner", "a"}, []any{"in", "tag", vals})
	}
	a, b := large("a"), large("b")
	limit := PageLimit{Records: 1}
	passBound := scanPages * max(proto.DefaultMaxPageBytes, crdt.MaxRecordBytes)
	for _, c := range []struct {
		name   string
		cursor func(t *testing.T) Cursor
		s      *scope.Pred
		// bytes is what judging an entry costs: the scopes' bytes.
		bytes int
	}{
		{"a fresh reader", func(*testing.T) Cursor { return FreshStart() }, a, len(a.Encode())},
		{"a change of scope", func(t *testing.T) Cursor {
			r := newReader()
			r.pullAll(t, e, "notes", a, 0)
			return r.cursor
		}, b, len(a.Encode()) + len(b.Encode())},
		{"a plain scope", func(*testing.T) Cursor { return FreshStart() }, mustScope(t, "eq", "owner", "a"), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := e.PullScoped(ctx, "notes", c.cursor(t), limit, c.s)
			if err != nil {
				t.Fatal(err)
			}
			passed := int(p.Next.Seq())
			if c.bytes == 0 {
				if passed != maxScan {
					t.Fatalf("a plain scope passed over %d entries, want %d", passed, maxScan)
				}
				return
			}
			if !p.More || passed == 0 || passed*c.bytes > passBound+c.bytes {
				t.Fatalf("one pull passed over %d entries judged by %d bytes of scopes each, want at most %d bytes in all (more %v)",
					passed, c.bytes, passBound, p.More)
			}
		})
	}
}
