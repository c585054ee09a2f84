package dynamodb

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// gateTransport holds the first request of one operation (the X-Amz-Target
// suffix) until open is closed, and closes reached when it gets there.
// Every request still goes to DynamoDB Local.
type gateTransport struct {
	op            string
	once          sync.Once
	reached, open chan struct{}
}

func (g *gateTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.Header.Get("X-Amz-Target"), "."+g.op) {
		held := false
		g.once.Do(func() { held = true })
		if held {
			close(g.reached)
			<-g.open
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestReshardTwoRuns: two runs of one rebuild at once (an operator runs
// `convergo store reshard` again while a slow first run is still going, as
// the command says to after an interruption). The first run is held after
// its fence; the second finishes the rebuild, and a writer then writes into
// the new shards and a reader follows. When the first run goes on, it must
// not touch the rebuilt log: a shard's head never goes back (a seq handed
// out twice, which a reader past it skips for good) unless a new epoch
// tells readers to start again, and every record's latest write stays in
// the log past the reader's cursor.
func TestReshardTwoRuns(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	ctx := context.Background()
	const coll = "todos"
	a := openTest(t, db, nil, table)
	gate := &gateTransport{op: "Scan", reached: make(chan struct{}), open: make(chan struct{})}
	slowDB, _, _ := clientsVia(t, gate)
	slow := openTest(t, slowDB, nil, table)
	put := func(id, title string) stores.Result {
		t.Helper()
		res, err := a.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField(id, "title", val(t, title), stamp(int64(len(title)), "client"))}})
		if err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	for i := range 6 {
		put(fmt.Sprint("r", i), "a")
	}

	slowErr := make(chan error, 1)
	go func() { slowErr <- slow.Reshard(ctx, coll, 2) }()
	<-gate.reached // the slow run has fenced and is about to read the records
	if err := a.Reshard(ctx, coll, 2); err != nil {
		t.Fatalf("the second run: %v", err)
	}
	sh := stores.ShardOf("r0", 2)
	first := put("r0", "bb")
	cursor, err := a.ShardHeads(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	before, err := a.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}

	close(gate.open)
	err = <-slowErr
	t.Logf("the first run, let go after the second finished: %v", err)
	last := put("r0", "ccc")
	after, err := a.Meta(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch != before.Epoch || after.Shards != 2 {
		t.Logf("epoch %+v after the first run, %+v before: readers start again", after, before)
		return
	}
	if last.Seq <= first.Seq {
		t.Errorf("a write to shard %d after the first run went on took seq %d, at or below %d acknowledged before it in the same epoch", sh, last.Seq, first.Seq)
	}
	p, err := a.PullShard(ctx, coll, sh, cursor[sh], stores.PageLimit{Records: 100, Bytes: stores.DefaultPageBytes})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range p.Entries {
		found = found || e.Record.ID == "r0" && e.Seq == last.Seq
	}
	if !found {
		t.Errorf("a reader at shard %d's cursor %d misses r0's latest write (seq %d): its pull returned %v", sh, cursor[sh], last.Seq, p.Entries)
	}
}
