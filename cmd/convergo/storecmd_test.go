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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/bolt/bolttest"
	"github.com/convergo/convergo/stores/dynamodb/dynamotest"
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

// TestStoreMarkRestoredFileAlone: the procedure as docs/operations.md
// writes it, the file put back alone (its note left beside it) and then
// marked restored. The store notices the file went back when the command
// opens it; what the command prints must not tell the operator that
// mark-restored was not run, nor log an error for a restore done right.
func TestStoreMarkRestoredFileAlone(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path, backup := filepath.Join(dir, "convergo.db"), filepath.Join(dir, "backup.db")
	write := func(id string) {
		t.Helper()
		st, err := bolt.Open(ctx, path, bolt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		v, _ := crdt.EncodeValue("x")
		if _, err := st.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField(id, "title", v, crdt.Stamp{Wall: 1, Replica: "client"})}}); err != nil {
			t.Fatal(err)
		}
	}
	write("before")
	bolttest.CopyFile(t, path, backup)
	write("after")
	bolttest.CopyFile(t, backup, path)

	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"store", "mark-restored", "--store", "bolt:" + path}, &out, &errOut); err != nil {
		t.Fatalf("mark-restored: %v\n%s", err, errOut.String())
	}
	if s := errOut.String(); strings.Contains(s, "without") || strings.Contains(s, "level=ERROR") {
		t.Fatalf("mark-restored, run as the procedure says, logged:\n%s\nwant no error and no claim that it was not run", s)
	}
}

// TestStoreReshard: convergo store reshard rebuilds a DynamoDB
// collection's log into K shards (a new epoch; stores/dynamodb's
// TestReshard checks the rebuild itself) and refuses a store without
// sharded logs.
func TestStoreReshard(t *testing.T) {
	ctx := context.Background()
	var out, errOut bytes.Buffer
	bolted := "bolt:" + newBoltFile(t)
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

// TestStoreMarkRestoredTableCopy: the procedure as docs/operations.md
// writes it for DynamoDB, a table restored (a new table holding a copy of
// the items) and then marked restored. The store notices the copy when the
// command opens it; the command must not log an error for a restore done
// right, must start one epoch, not two, and the servers that open the
// table next must start none.
func TestStoreMarkRestoredTableCopy(t *testing.T) {
	ctx := context.Background()
	endpoint := storetest.Endpoint(t, "CONVERGO_DYNAMODB_ENDPOINT")
	name := "cmdtest-restore-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	url := func(table string) string {
		return "dynamodb://" + table + "?region=us-east-1&create=1&capture=0&endpoint=" + endpoint
	}
	open := func(table string) stores.Store {
		t.Helper()
		st, err := storeurl.Open(ctx, url(table), storeurl.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	src := open(name + "-a")
	v, _ := crdt.EncodeValue("x")
	if _, err := src.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField("r", "title", v, crdt.Stamp{Wall: 1, Replica: "client"})}}); err != nil {
		t.Fatal(err)
	}
	if err := src.BumpEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	before, err := src.Meta(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
	open(name + "-b").Close() // the restore creates the table
	copyDynamoTable(t, endpoint, name+"-a", name+"-b")

	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"store", "mark-restored", "--store", url(name + "-b")}, &out, &errOut); err != nil {
		t.Fatalf("mark-restored: %v\n%s", err, errOut.String())
	}
	if s := errOut.String(); strings.Contains(s, "level=ERROR") {
		t.Errorf("mark-restored, run as the procedure says, logged:\n%s\nwant no error", s)
	}
	st := open(name + "-b")
	after, err := st.Meta(ctx, "todos")
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got, max := stores.StoreEpochOf(after), stores.NextEpoch(stores.StoreEpochOf(before), time.Now()); got <= stores.StoreEpochOf(before) || got > max {
		t.Errorf("store-wide epoch %d after mark-restored, %d before: want one bump, at most %d", got, stores.StoreEpochOf(before), max)
	}
	st = open(name + "-b")
	again, err := st.Meta(ctx, "todos")
	st.Close()
	if err != nil || again != after {
		t.Errorf("a server opening the table marked restored: Meta %+v (%v), want %+v: no further epoch", again, err, after)
	}
}

// TestStoreMarkRestoredRebuildsLogs: a DynamoDB backup keeps no
// transaction's items together, so a restored table can hold a record item
// whose log entry is missing (the record item from after a commit, the log
// from before it, whose old entry the commit deleted). No pull delivers
// that record and a client's give-back of it is answered duplicate; the
// restore procedure's mark-restored rebuilds every collection's log from
// its record items, so a pull from the beginning delivers every record.
func TestStoreMarkRestoredRebuildsLogs(t *testing.T) {
	ctx := context.Background()
	endpoint := storetest.Endpoint(t, "CONVERGO_DYNAMODB_ENDPOINT")
	name := "cmdtest-restlog-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	url := func(table string) string {
		return "dynamodb://" + table + "?region=us-east-1&create=1&capture=0&endpoint=" + endpoint
	}
	src, err := storeurl.Open(ctx, url(name+"-a"), storeurl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, _ := crdt.EncodeValue("x")
	for _, coll := range []string{"notes", "todos"} {
		for _, id := range []string{"r1", "r2", "r3"} {
			if _, err := src.Apply(ctx, []crdt.Change{{Collection: coll, Record: crdt.SetField(id, "title", v, crdt.Stamp{Wall: 1, Replica: "client"})}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	src.Close()
	dst, err := storeurl.Open(ctx, url(name+"-b"), storeurl.Options{}) // the restore creates the table
	if err != nil {
		t.Fatal(err)
	}
	dst.Close()
	copyDynamoTable(t, endpoint, name+"-a", name+"-b")
	deleteLogEntry(t, dynamoClient(t, endpoint), name+"-b", "todos", 2)

	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"store", "mark-restored", "--store", url(name + "-b")}, &out, &errOut); err != nil {
		t.Fatalf("mark-restored: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{"collection notes: log rebuilt", "collection todos: log rebuilt", "marked restored"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("mark-restored said %q, want %q in it", out.String(), want)
		}
	}
	st, err := storeurl.Open(ctx, url(name+"-b"), storeurl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, coll := range []string{"notes", "todos"} {
		if ids := pulledIDs(t, st, coll); strings.Join(ids, " ") != "r1 r2 r3" {
			t.Errorf("after mark-restored a pull of %s from the beginning delivers %v, want [r1 r2 r3]", coll, ids)
		}
	}
}

// copyDynamoTable puts every item of table from into table to, as a
// DynamoDB point-in-time or backup restore does into the table it creates.
func copyDynamoTable(t *testing.T, endpoint, from, to string) {
	t.Helper()
	db := dynamoClient(t, endpoint)
	t.Cleanup(func() {
		for _, table := range []string{from, to} {
			if _, err := db.DeleteTable(context.Background(), &awsdynamodb.DeleteTableInput{TableName: &table}); err != nil {
				t.Logf("delete table %s: %v", table, err)
			}
		}
	})
	dynamotest.CopyTable(t, db, from, to)
}

// dynamoClient returns a client of DynamoDB Local at endpoint.
func dynamoClient(t *testing.T, endpoint string) *awsdynamodb.Client {
	t.Helper()
	// DynamoDB Local takes any credentials but wants some.
	cfg, err := config.LoadDefaultConfig(context.Background(), config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "local", SecretAccessKey: "local", Source: "test"}, nil
		})))
	if err != nil {
		t.Fatal(err)
	}
	return awsdynamodb.NewFromConfig(cfg, func(o *awsdynamodb.Options) { o.BaseEndpoint = &endpoint })
}

// deleteLogEntry deletes the log entry at seq of a collection of one log
// shard from a table, as a backup that kept a record item from after a
// commit and its log from before it (the commit deleted the entry) holds
// it: the record item stays.
func deleteLogEntry(t *testing.T, db *awsdynamodb.Client, table, coll string, seq uint64) {
	t.Helper()
	if _, err := db.DeleteItem(context.Background(), &awsdynamodb.DeleteItemInput{TableName: &table, Key: map[string]types.AttributeValue{
		"pk": &types.AttributeValueMemberS{Value: "~l#" + coll},
		"sk": &types.AttributeValueMemberN{Value: strconv.FormatUint(seq, 10)},
	}}); err != nil {
		t.Fatal(err)
	}
}

// pulledIDs returns the ids a pull of coll from the beginning delivers.
func pulledIDs(t *testing.T, st stores.Store, coll string) []string {
	t.Helper()
	p, err := st.Pull(context.Background(), coll, 0, stores.PageLimit{Records: 100, Bytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range p.Entries {
		ids = append(ids, e.Record.ID)
	}
	return ids
}

// newBoltFile makes the store file a server would leave, for the tools to
// work on (they create none), and returns its path.
func newBoltFile(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "convergo.db")
	st, err := bolt.Open(context.Background(), path, bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
