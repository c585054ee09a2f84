package dynamodb

import (
	"context"
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestPurgeAllShards purges a collection of four shards whole, a few
// entries per call across shard boundaries: every deleted record goes,
// the survivors stay, and usage is exact.
func TestPurgeAllShards(t *testing.T) {
	db, _, _ := testClients(t)
	st := openShards(t, db, nil, plainTable(t, db), 4)
	ctx := context.Background()
	var changes []crdt.Change
	for i := range 40 {
		id := fmt.Sprintf("p%02d", i)
		changes = append(changes, crdt.Change{Collection: "c", Record: crdt.SetField(id, "f", []byte{0x01}, crdt.Stamp{Wall: 10, Replica: "w"})})
		if i%4 != 0 {
			changes = append(changes, crdt.Change{Collection: "c", Record: crdt.DeleteRecord(id, crdt.Stamp{Wall: 20, Replica: "w"})})
		}
	}
	if _, err := st.Apply(ctx, changes); err != nil {
		t.Fatal(err)
	}
	heads, err := st.ShardHeads(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.Meta(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	h := stores.Horizon{Epoch: m.Epoch, Read: heads, Wall: 100}
	var after []uint64
	removed := 0
	for calls := 0; ; calls++ {
		if calls > 100 {
			t.Fatal("the purge did not end")
		}
		res, err := st.Purge(ctx, "c", h, stores.PurgeScan{After: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		removed += res.Records
		after = res.Next
		if !res.More {
			break
		}
	}
	if removed != 30 {
		t.Fatalf("removed %d records, want 30", removed)
	}
	var want stores.Usage
	for sh := range 4 {
		page, err := st.PullShard(ctx, "c", sh, 0, stores.PageLimit{Records: stores.MaxPage, Bytes: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			if !e.Record.Exists() {
				t.Fatalf("shard %d still holds %s", sh, e.Record.ID)
			}
			want.Records++
			want.Bytes += int64(len(crdt.AppendRecord(nil, e.Record)))
		}
	}
	if want.Records != 10 {
		t.Fatalf("%d records left, want the 10 survivors", want.Records)
	}
	if got, err := st.Usage(ctx, "c"); err != nil || got != want {
		t.Fatalf("usage %+v, %v; want %+v", got, err, want)
	}
	if _, err := st.Purge(ctx, "c", stores.Horizon{Epoch: m.Epoch, Read: heads[:1], Wall: 100}, stores.PurgeScan{}); err == nil {
		t.Fatal("a horizon of one position for four shards was accepted")
	}
}
