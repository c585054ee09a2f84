package engine

import (
	"context"
	"math"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
)

// TestPullLargestByteLimit: a page's byte bound may be as large as an int
// holds (an embedding program's, or a server's --max-page-bytes, meaning
// no bound): the bound on the bytes a scoped pull passes over, a multiple
// of it, must not wrap around and end every page before its first entry,
// which would hold the reader at its cursor for ever.
func TestPullLargestByteLimit(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	e, err := Open(Config{Store: st, Replica: "srv", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	stamp := crdt.Stamp{Wall: 1, Replica: "c1"}
	if _, err := e.Apply(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField("r", "owner", value(t, "a"), stamp)}}); err != nil {
		t.Fatal(err)
	}
	page, err := e.PullScoped(ctx, "c", Cursor{}, PageLimit{Bytes: math.MaxInt}, mustScope(t, "eq", "owner", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 1 || page.More {
		t.Errorf("a scoped pull of one matching record with a byte bound of %d: %d entries, more %v; want 1, false", math.MaxInt, len(page.Entries), page.More)
	}
}
