package dynamodb

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/dynamodb/dynamotest"
	"github.com/convergo/convergo/stores/storetest"
)

// storeItem reads table's store item.
func storeItem(t testing.TB, db *awsdynamodb.Client, table string) map[string]types.AttributeValue {
	t.Helper()
	out, err := db.GetItem(context.Background(), &awsdynamodb.GetItemInput{TableName: &table, Key: key(storePK, 0), ConsistentRead: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	return out.Item
}

// tableIncarnation is the incarnation of table as DescribeTable gives it.
func tableIncarnation(t testing.TB, db *awsdynamodb.Client, table string) string {
	t.Helper()
	out, err := db.DescribeTable(context.Background(), &awsdynamodb.DescribeTableInput{TableName: &table})
	if err != nil {
		t.Fatal(err)
	}
	inc := incarnation(out.Table)
	if inc == "" {
		t.Fatalf("DescribeTable of %s gives neither a TableId nor a CreationDateTime", table)
	}
	return inc
}

// restoreSource makes a store on a new table, writes to it and starts an
// epoch of a collection, and returns the table, the collection's Meta
// there and the store's identity.
func restoreSource(t *testing.T, db *awsdynamodb.Client, clock *fakeClock) (table string, m stores.Meta, id string) {
	t.Helper()
	ctx := context.Background()
	table = plainTable(t, db)
	s := openClocked(t, db, table, clock.Now)
	for _, rid := range []string{"a", "b"} {
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField(rid, "f", val(t, 1), stamp(1, "w"))}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.BumpEpoch(ctx, "todos", stores.Rebuilt); err != nil {
		t.Fatal(err)
	}
	clock.advance(10 * time.Second)
	if err := s.BumpEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	id, err := s.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, err = s.Meta(ctx, "todos"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return table, m, id
}

// restoredCopy makes a restore's source (restoreSource) and copies every
// item of its table a into a new table b, as a DynamoDB point-in-time or
// backup restore does, ten seconds later on clock.
func restoredCopy(t *testing.T, db *awsdynamodb.Client, clock *fakeClock) (a, b string, before stores.Meta, id string) {
	t.Helper()
	a, before, id = restoreSource(t, db, clock)
	b = plainTable(t, db)
	dynamotest.CopyTable(t, db, a, b)
	clock.advance(10 * time.Second)
	return a, b, before, id
}

// metaOf opens a store on table with clock and logger and returns the
// collection's Meta and the store's identity there; the store is closed.
func metaOf(t *testing.T, db dbAPI, table string, clock *fakeClock, log *slog.Logger) (stores.Meta, string) {
	t.Helper()
	ctx := context.Background()
	s, err := newStore(ctx, Config{Table: table, Now: clock.Now, Logger: log}, db)
	if err != nil {
		t.Fatalf("open a store on %s: %v", table, err)
	}
	defer s.Close()
	m, err := s.Meta(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Identity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m, id
}

// TestRestoredTableNoticedAtOpen copies every item of a store's table into
// a new table, as a DynamoDB point-in-time or backup restore does: a store
// opened on the copy starts a new epoch of every collection, history lost,
// once, and says so at error level; the identity stays; the source table
// is left as it was.
func TestRestoredTableNoticedAtOpen(t *testing.T) {
	db, _, _ := testClients(t)
	clock := newFakeClock()
	a, b, before, id := restoredCopy(t, db, clock)
	var logs bytes.Buffer
	restored, rid := metaOf(t, db, b, clock, slog.New(slog.NewTextHandler(&logs, nil)))
	want := stores.MetaOf(stores.NextEpoch(stores.StoreEpochOf(before), clock.Now()), stores.LocalEpochOf(before), stores.LocalLostOf(before))
	want.Shards = 1
	if restored != want || restored.Epoch <= before.Epoch || restored.Lost <= before.Epoch {
		t.Fatalf("a store opened on a copy of the table: Meta %+v, before the copy %+v; want %+v, a new epoch of every collection, history lost (stores.NextEpoch of the store-wide counter)", restored, before, want)
	}
	if rid != id {
		t.Fatalf("identity on the copy: %q, want the source's %q", rid, id)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "a restore?") {
		t.Errorf("logs of the open that noticed the copy: %q; want an error that names a restore", logs.String())
	}
	if got := storeItem(t, db, b)[attrInc]; !avEqual(got, s(tableIncarnation(t, db, b))) {
		t.Errorf("store item's %s on the copy: %v, want the copy's incarnation %q", attrInc, got, tableIncarnation(t, db, b))
	}

	clock.advance(10 * time.Second)
	if again, _ := metaOf(t, db, b, clock, nil); again != restored {
		t.Fatalf("the copy opened again: Meta %+v, want %+v (no further epoch)", again, restored)
	}
	if src, _ := metaOf(t, db, a, clock, nil); src != before {
		t.Fatalf("the source table opened again: Meta %+v, want %+v (no new epoch)", src, before)
	}
}

// barrierDB holds every caller's first read of the store item until n
// callers have made theirs (or a timeout passes), so that stores opening
// at once all read the incarnation before any writes it.
type barrierDB struct {
	dbAPI
	mu      sync.Mutex
	waiting int
	all     chan struct{}
}

func newBarrier(db dbAPI, n int) *barrierDB {
	return &barrierDB{dbAPI: db, waiting: n, all: make(chan struct{})}
}

// barrierCaller is one store's view of the barrier.
type barrierCaller struct {
	*barrierDB
	once sync.Once
}

func (c *barrierCaller) GetItem(ctx context.Context, in *awsdynamodb.GetItemInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.GetItemOutput, error) {
	out, err := c.dbAPI.GetItem(ctx, in, opts...)
	if pk, ok := in.Key[attrPK].(*types.AttributeValueMemberS); ok && pk.Value == storePK {
		c.once.Do(func() {
			c.mu.Lock()
			c.waiting--
			if c.waiting == 0 {
				close(c.all)
			}
			c.mu.Unlock()
			select {
			case <-c.all:
			case <-time.After(5 * time.Second):
			}
		})
	}
	return out, err
}

// TestRestoredTableOpenedAtOnce: stores that open the copy at once, each
// having read the old incarnation before any records the new one, start
// one new epoch between them.
func TestRestoredTableOpenedAtOnce(t *testing.T) {
	db, _, _ := testClients(t)
	clock := newFakeClock()
	_, b, before, _ := restoredCopy(t, db, clock)
	const openers = 3
	barrier := newBarrier(db, openers)
	var logs storetest.LogBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var wg sync.WaitGroup
	for range openers {
		wg.Go(func() {
			s, err := newStore(context.Background(), Config{Table: b, Now: clock.Now, Logger: log}, &barrierCaller{barrierDB: barrier})
			if err != nil {
				t.Errorf("open a store on the copy: %v", err)
				return
			}
			_ = s.Close()
		})
	}
	wg.Wait()
	select {
	case <-barrier.all:
	default:
		t.Fatalf("not all %d stores read the store item at open", openers)
	}
	if k := strings.Count(logs.String(), "a restore?"); k != 1 {
		t.Errorf("%d stores opened the copy at once: %d said they noticed a copy, want 1:\n%s", openers, k, logs.String())
	}
	m, _ := metaOf(t, db, b, clock, nil)
	if got, want := stores.StoreEpochOf(m), stores.NextEpoch(stores.StoreEpochOf(before), clock.Now()); got != want {
		t.Fatalf("%d stores opened the copy at once: store-wide counter %d, want %d (one bump from %d)", openers, got, want, stores.StoreEpochOf(before))
	}
}

// TestIncarnationRecordedWithoutBump: a table whose store item predates
// the incarnation (made by an earlier version) gets it recorded at the
// first open, without a new epoch; so does a new table.
func TestIncarnationRecordedWithoutBump(t *testing.T) {
	db, _, _ := testClients(t)
	clock := newFakeClock()
	for _, tc := range []struct {
		name string
		// old prepares the table as an earlier version left it.
		old func(t *testing.T) (string, stores.Meta)
	}{
		{"store item of an earlier version", func(t *testing.T) (string, stores.Meta) {
			table, m, _ := restoreSource(t, db, clock)
			_, err := db.UpdateItem(context.Background(), &awsdynamodb.UpdateItemInput{
				TableName: &table, Key: key(storePK, 0),
				UpdateExpression:         ptr("REMOVE #inc"),
				ExpressionAttributeNames: map[string]string{"#inc": attrInc},
			})
			if err != nil {
				t.Fatal(err)
			}
			return table, m
		}},
		{"no store item", func(t *testing.T) (string, stores.Meta) {
			return plainTable(t, db), stores.Meta{Shards: 1}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table, before := tc.old(t)
			clock.advance(10 * time.Second)
			if m, _ := metaOf(t, db, table, clock, nil); m != before {
				t.Fatalf("first open: Meta %+v, want %+v (no new epoch)", m, before)
			}
			if got := storeItem(t, db, table)[attrInc]; !avEqual(got, s(tableIncarnation(t, db, table))) {
				t.Fatalf("store item's %s after the first open: %v, want the table's incarnation %q", attrInc, got, tableIncarnation(t, db, table))
			}
		})
	}
}

func TestIncarnation(t *testing.T) {
	created := time.Date(2026, 12, 4, 21, 22, 9, 767_000_300, time.FixedZone("x", 3600))
	for _, tc := range []struct {
		name string
		desc types.TableDescription
		want string
	}{
		{"TableId first", types.TableDescription{TableId: ptr("0f9a7c3e-id"), CreationDateTime: &created}, "0f9a7c3e-id"},
		{"creation time without a TableId", types.TableDescription{CreationDateTime: &created}, "created 2026-12-04T20:22:09.767Z"},
		{"empty TableId", types.TableDescription{TableId: ptr(""), CreationDateTime: &created}, "created 2026-12-04T20:22:09.767Z"},
		{"neither", types.TableDescription{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := incarnation(&tc.desc); got != tc.want {
				t.Fatalf("incarnation: got %q, want %q", got, tc.want)
			}
		})
	}
}

// storeItemCalls counts a store's reads and writes of the store item.
type storeItemCalls struct {
	dbAPI
	mu            sync.Mutex
	gets, updates int
}

func isStoreItem(k map[string]types.AttributeValue) bool {
	pk, ok := k[attrPK].(*types.AttributeValueMemberS)
	return ok && pk.Value == storePK
}

func (c *storeItemCalls) GetItem(ctx context.Context, in *awsdynamodb.GetItemInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.GetItemOutput, error) {
	if isStoreItem(in.Key) {
		c.mu.Lock()
		c.gets++
		c.mu.Unlock()
	}
	return c.dbAPI.GetItem(ctx, in, opts...)
}

func (c *storeItemCalls) UpdateItem(ctx context.Context, in *awsdynamodb.UpdateItemInput, opts ...func(*awsdynamodb.Options)) (*awsdynamodb.UpdateItemOutput, error) {
	if isStoreItem(in.Key) {
		c.mu.Lock()
		c.updates++
		c.mu.Unlock()
	}
	return c.dbAPI.UpdateItem(ctx, in, opts...)
}

// TestOpenReadsTheStoreItemOnce: Open reads the store item once, with the
// incarnation check; it writes it only on a table whose incarnation it
// records (the first open).
func TestOpenReadsTheStoreItemOnce(t *testing.T) {
	db, _, _ := testClients(t)
	table := plainTable(t, db)
	for i, wantUpdates := range []int{1, 0} {
		calls := &storeItemCalls{dbAPI: db}
		s, err := newStore(context.Background(), Config{Table: table}, calls)
		if err != nil {
			t.Fatal(err)
		}
		_ = s.Close()
		if calls.gets != 1 || calls.updates != wantUpdates {
			t.Fatalf("open %d of a table: %d reads and %d writes of the store item, want 1 and %d", i+1, calls.gets, calls.updates, wantUpdates)
		}
	}
}

// TestRestoredTableRestoringLeavesTheBump: `convergo store mark-restored`
// opens a copied table with Config.Restoring and bumps next. The open
// says so at info, leaves the table as it found it, and the command's
// bump records the table's incarnation: one epoch. A command that ends
// between its open and its bump leaves the copy for the next open to
// notice.
func TestRestoredTableRestoringLeavesTheBump(t *testing.T) {
	ctx := context.Background()
	db, _, _ := testClients(t)
	clock := newFakeClock()
	_, b, before, _ := restoredCopy(t, db, clock)
	restoring := func() *Store {
		t.Helper()
		var logs bytes.Buffer
		rs, err := newStore(ctx, Config{Table: b, Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Restoring: true}, db)
		if err != nil {
			t.Fatal(err)
		}
		if l := logs.String(); strings.Contains(l, "level=ERROR") || !strings.Contains(l, "a restore") {
			t.Errorf("logs of the open marked restoring: %q; want the copy said at info, no error", l)
		}
		return rs
	}
	rs := restoring()
	if m, err := rs.Meta(ctx, "todos"); err != nil || m.Epoch != before.Epoch {
		t.Fatalf("Meta %+v (%v) after an open restoring, want %+v: the bump is the command's", m, err, before)
	}
	rs.Close() // the command ended before its bump

	rs = restoring()
	if err := rs.BumpEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	rs.Close()
	if got := storeItem(t, db, b)[attrInc]; !avEqual(got, s(tableIncarnation(t, db, b))) {
		t.Errorf("store item's %s after the command: %v, want the copy's incarnation", attrInc, got)
	}
	clock.advance(10 * time.Second)
	m, _ := metaOf(t, db, b, clock, nil)
	if want := stores.NextEpoch(stores.StoreEpochOf(before), clock.Now().Add(-10*time.Second)); stores.StoreEpochOf(m) != want {
		t.Fatalf("store-wide epoch %d after the procedure and a server's open, want %d: one bump", stores.StoreEpochOf(m), want)
	}
}

// TestTableRestoredUnderARunningStore: a DynamoDB restore goes into a new
// table, so restoring in place is deleting the table and restoring the
// backup under its name. A store that runs through it (the servers were
// not stopped) meets the table missing, then finds it back holding the
// backup: it notices the copy before its next Meta answers, as an open
// would, and starts a new epoch of every collection, history lost.
func TestTableRestoredUnderARunningStore(t *testing.T) {
	ctx := context.Background()
	db, _, _ := testClients(t)
	clock := newFakeClock()
	table := plainTable(t, db)
	var logs bytes.Buffer
	s, err := newStore(ctx, Config{Table: table, Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))}, db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write := func(id string) {
		t.Helper()
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField(id, "f", val(t, 1), stamp(1, "w"))}}); err != nil {
			t.Fatal(err)
		}
	}
	write("a")
	backup := plainTable(t, db)
	dynamotest.CopyTable(t, db, table, backup)
	write("b") // lost by the restore
	before, err := s.Meta(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}

	if _, err := db.DeleteTable(ctx, &awsdynamodb.DeleteTableInput{TableName: &table}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Meta(ctx, "todos"); !errors.Is(err, stores.ErrUnavailable) {
		t.Fatalf("Meta with the table deleted: %v, want ErrUnavailable", err)
	}
	clock.advance(10 * time.Millisecond) // DynamoDB Local's incarnation is the creation time
	if err := createTable(ctx, db, table, false); err != nil {
		t.Fatal(err)
	}
	dynamotest.CopyTable(t, db, backup, table)
	clock.advance(10 * time.Second)

	after, err := s.Meta(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	if after.Epoch <= before.Epoch || after.Lost <= before.Epoch {
		t.Fatalf("Meta %+v on the table restored under the store, %+v before: want a new epoch of every collection, history lost", after, before)
	}
	if !strings.Contains(logs.String(), "level=ERROR") || !strings.Contains(logs.String(), "a restore?") {
		t.Errorf("logs: %q; want an error that names a restore", logs.String())
	}
	if again, err := s.Meta(ctx, "todos"); err != nil || again != after {
		t.Fatalf("Meta again: %+v (%v), want %+v: no further epoch", again, err, after)
	}
}
