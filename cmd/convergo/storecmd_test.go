package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/stores/storeurl"
)

// TestStoreMarkRestored: the restore procedure's command starts a new
// epoch, history lost, of every collection of a bolt file, and keeps the
// identity.
func TestStoreMarkRestored(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "convergo.db")
	st, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := st.Identity(ctx)
	before, _ := st.Meta(ctx, "todos")
	st.Close()

	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"store", "mark-restored", "--store", "bolt:" + path}, &out, &errOut); err != nil {
		t.Fatalf("mark-restored: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), id) {
		t.Fatalf("output %q does not name the store %s", out.String(), id)
	}
	st, err = bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	after, _ := st.Meta(ctx, "todos")
	if after.Epoch <= before.Epoch || before.Epoch >= after.Lost {
		t.Fatalf("Meta went from %+v to %+v; want a new epoch of lost history", before, after)
	}
	out.Reset()
	if err := run(ctx, []string{"store", "identity", "--store", "bolt:" + path}, &out, &errOut); err == nil {
		t.Fatal("identity on a file another store holds open: no error")
	}
	if err := run(ctx, []string{"store", "mark-restored", "--store", "memory:"}, &out, &errOut); err == nil {
		t.Fatal("mark-restored on memory: no error")
	}
}

// TestStoreReshard: convergo store reshard rebuilds a DynamoDB
// collection's log into K shards (a new epoch; stores/dynamodb's
// TestReshard checks the rebuild itself) and refuses a store without
// sharded logs.
func TestStoreReshard(t *testing.T) {
	ctx := context.Background()
	var out, errOut bytes.Buffer
	bolted := "bolt:" + filepath.Join(t.TempDir(), "convergo.db")
	if err := run(ctx, []string{"store", "reshard", "--store", bolted, "--collection", "todos", "--shards", "4"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "no sharded logs") {
		t.Fatalf("reshard of a bolt store: %v, want a refusal", err)
	}
	url := "dynamodb://cmdtest-reshard-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "?region=us-east-1&create=1&endpoint=" + storetest.Endpoint(t, "CONVERGO_DYNAMODB_ENDPOINT")
	spec, err := storeurl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	st, err := spec.Open(ctx, storeurl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := crdt.EncodeValue("x")
	for i := range 5 {
		if _, err := st.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField(fmt.Sprint(i), "title", v, crdt.Stamp{Wall: 1, Replica: "client"})}}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := st.Meta(ctx, "todos")
	st.Close()
	if err := run(ctx, []string{"store", "reshard", "--store", url, "--collection", "todos", "--shards", "4"}, &out, &errOut); err != nil {
		t.Fatalf("reshard: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "4 shards") {
		t.Fatalf("output %q", out.String())
	}
	if st, err = spec.Open(ctx, storeurl.Options{}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	after, err := st.Meta(ctx, "todos")
	if err != nil || after.Shards != 4 || after.Epoch <= before.Epoch || after.Lost != before.Lost {
		t.Fatalf("Meta %+v (%v) after resharding, %+v before; want K = 4 and a new epoch, nothing lost", after, err, before)
	}
}
