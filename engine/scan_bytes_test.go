package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

// readCounter counts the bytes of the records a store's pulls return.
type readCounter struct {
	stores.Store
	bytes int
}

func (r *readCounter) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
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
