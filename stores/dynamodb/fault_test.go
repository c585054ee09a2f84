package dynamodb

import (
	"maps"

	"encoding/json"
	"time"

	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// fault is what a faultTransport does to one request: pass it on
// (nothing), answer it without sending it (status and body), or send it
// and then hold the reply back (delay) or lose it (lose).
type fault struct {
	status int    // with body: answer with this, the request unsent
	body   string // the answer's JSON
	lose   bool   // send the request, read the reply, return an error
	// delay holds the real reply back this long, or until the attempt's
	// context ends (its timeout), which then fails the attempt.
	delay time.Duration
	// reply, when set, rewrites the body of the real reply (which then
	// goes without its CRC32 header): what DynamoDB could have answered.
	reply func(body []byte) []byte
}

// faultTransport sits between the SDK and DynamoDB Local: pick decides,
// per request, by the operation (the X-Amz-Target header's suffix, such as
// "TransactWriteItems") and the request body, what fault to inject. Every
// request still reaches the real DynamoDB Local unless the fault answers
// it: the faults are DynamoDB's (throttling, a lost reply, unprocessed
// keys), the table is real.
type faultTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	pick func(op string, body []byte) fault
	ops  map[string]int // requests seen, by operation
}

func (f *faultTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	op := r.Header.Get("X-Amz-Target")
	if i := strings.LastIndexByte(op, '.'); i >= 0 {
		op = op[i+1:]
	}
	var body []byte
	if r.Body != nil {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			return nil, err
		}
		_ = r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	f.mu.Lock()
	if f.ops == nil {
		f.ops = map[string]int{}
	}
	f.ops[op]++
	var ft fault
	if f.pick != nil {
		ft = f.pick(op, body)
	}
	f.mu.Unlock()
	if ft.status != 0 {
		return &http.Response{
			StatusCode: ft.status, Status: http.StatusText(ft.status), Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
			Header: http.Header{"Content-Type": {"application/x-amz-json-1.0"}},
			Body:   io.NopCloser(strings.NewReader(ft.body)), ContentLength: int64(len(ft.body)), Request: r,
		}, nil
	}
	resp, err := f.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if ft.delay > 0 {
		t := time.NewTimer(ft.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			_ = resp.Body.Close()
			return nil, r.Context().Err()
		}
	}
	if ft.reply != nil && !ft.lose {
		body, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return nil, err
		}
		body = ft.reply(body)
		resp.Header.Del("X-Amz-Crc32")
		resp.Header.Del("Content-Length")
		resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		return resp, nil
	}
	if !ft.lose {
		return resp, nil
	}
	_, err = io.Copy(io.Discard, resp.Body) // DynamoDB answered in full
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	return nil, errReplyLost
}

// errReplyLost is the connection failing after DynamoDB answered.
var errReplyLost = errors.New("read: connection reset by peer (a fault injected after DynamoDB applied the request)")

func (f *faultTransport) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ops[op]
}

// faultClients is testClients with every request of both clients through
// a faultTransport.
func faultClients(t testing.TB, pick func(op string, body []byte) fault) (*awsdynamodb.Client, *dynamodbstreams.Client, *faultTransport) {
	t.Helper()
	ft := &faultTransport{next: http.DefaultTransport, pick: pick}
	db, streams, _ := clientsVia(t, ft)
	return db, streams, ft
}

// throttle is DynamoDB's answer to a request over the table's throughput.
func throttle(code string) fault {
	return fault{status: 400, body: `{"__type":"com.amazonaws.dynamodb.v20120810#` + code + `","message":"injected: rate of requests exceeds the allowed throughput"}`}
}

// nth returns a picker that injects f into the first n requests of op
// whose body contains has ("" for every one), and passes everything else.
func nth(op, has string, n int, f fault) func(string, []byte) fault {
	seen := 0
	return func(o string, body []byte) fault {
		if o != op || !bytes.Contains(body, []byte(has)) || seen >= n {
			return fault{}
		}
		seen++
		return f
	}
}

// faultStore opens a store of cfg (Client and Table set here), with no
// stream, through clients whose requests pass pick, on a table created
// without faults.
func faultStore(t *testing.T, cfg Config, pick func(string, []byte) fault) (*Store, *faultTransport) {
	t.Helper()
	plain, _, _ := testClients(t)
	cfg.Table = plainTable(t, plain)
	db, _, ft := faultClients(t, nil)
	cfg.Client = db
	s, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ft.mu.Lock()
	ft.pick = pick
	ft.mu.Unlock()
	return s, ft
}

// watchHeads collects the heads of collection the store's watchers hear.
func watchHeads(t *testing.T, s *Store, collection string) func() uint64 {
	var mu sync.Mutex
	var top uint64
	t.Cleanup(s.Watch(func(n stores.Notification) {
		if n.Collection == collection {
			mu.Lock()
			top = max(top, n.Seq)
			mu.Unlock()
		}
	}))
	return func() uint64 { mu.Lock(); defer mu.Unlock(); return top }
}

// TestFaultCommitReplyLost: the reply to a commit's TransactWriteItems is
// lost after DynamoDB applied it. The retry (the SDK's or the store's)
// carries the same client request token, so the transaction is applied
// once: the change is acknowledged as written, at the seq it took, the
// head moved by one, and this instance's watchers hear of it.
func TestFaultCommitReplyLost(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		f    fault
	}{
		{"connection reset", Config{}, fault{lose: true}},
		{"attempt timed out", Config{AttemptTimeout: 300 * time.Millisecond}, fault{delay: 3 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, ft := faultStore(t, tc.cfg, nth("TransactWriteItems", "", 1, tc.f))
			checkWritesOnce(t, s, ft, "TransactWriteItems", 1)
		})
	}
}

// checkWritesOnce writes three changes to notes through s, in two calls,
// and checks that each was applied once, in order, and heard of, and that
// the first call made at least faulted+1 requests of op (it met the
// faults).
func checkWritesOnce(t *testing.T, s *Store, ft *faultTransport, op string, faulted int) {
	t.Helper()
	heard := watchHeads(t, s, "notes")
	ctx := context.Background()
	res, err := s.Apply(ctx, []crdt.Change{
		{Collection: "notes", Record: crdt.SetField("a", "text", val(t, "one"), stamp(1000, "client"))},
		{Collection: "notes", Record: crdt.SetField("b", "text", val(t, "two"), stamp(1000, "client"))},
	})
	if err != nil {
		t.Fatalf("Apply with its reply lost once: %v", err)
	}
	if n := ft.count(op); n < faulted+1 {
		t.Fatalf("%d %s requests; the faults were not all met", n, op)
	}
	for i, r := range res {
		if !r.Changed || r.Seq != uint64(i+1) {
			t.Fatalf("result %d: %+v, want changed at seq %d", i, r, i+1)
		}
	}
	if h, _ := s.Head(ctx, "notes"); h != 2 {
		t.Fatalf("head %d after two changes, want 2", h)
	}
	waitFor(t, "watchers to hear of head 2", func() bool { return heard() >= 2 })
	res, err = s.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("a", "text", val(t, "three"), stamp(2000, "client"))}})
	if err != nil || !res[0].Changed || res[0].Seq != 3 {
		t.Fatalf("the next write: %+v, %v; want changed at seq 3", res, err)
	}
	page, err := s.Pull(ctx, "notes", 0, stores.PageLimit{Records: 10, Bytes: stores.DefaultPageBytes})
	if err != nil || len(page.Entries) != 2 || page.Next != 3 {
		t.Fatalf("log %+v, %v; want b at 2 and a at 3", page, err)
	}
}

// TestFaultThrottled: DynamoDB refuses requests over the table's
// throughput, as an error of the request (the SDK retries, and for a
// commit the store too: 4 refusals in a row pass; a commit's read fails
// the Apply with ErrUnavailable after the SDK's 3 attempts) and as a
// transaction's cancellation reason (the store retries after a backoff).
// The writes go through, once each, in order.
func TestFaultThrottled(t *testing.T) {
	cancelled := fault{status: 400, body: `{"__type":"com.amazonaws.dynamodb.v20120810#TransactionCanceledException",` +
		`"message":"Transaction cancelled, please refer cancellation reasons for specific reasons [ThrottlingError, None, None]",` +
		`"CancellationReasons":[{"Code":"ThrottlingError","Message":"Throughput exceeds the current capacity for one or more global secondary indexes."},{"Code":"None"},{"Code":"None"}]}`}
	for _, tc := range []struct {
		name string
		op   string
		n    int
		f    fault
	}{
		{"ProvisionedThroughputExceededException", "TransactWriteItems", 4, throttle("ProvisionedThroughputExceededException")},
		{"ThrottlingException on reads", "BatchGetItem", 2, throttle("ThrottlingException")},
		{"cancelled by throttling", "TransactWriteItems", 3, cancelled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, ft := faultStore(t, Config{}, nth(tc.op, "", tc.n, tc.f))
			checkWritesOnce(t, s, ft, tc.op, tc.n)
		})
	}
}

// TestFaultThrottledThroughout: while every commit is refused for
// throughput, Apply fails with ErrUnavailable and nothing is written; the
// same write goes through once the table takes it.
func TestFaultThrottledThroughout(t *testing.T) {
	var mu sync.Mutex
	refusing := true
	s, _ := faultStore(t, Config{}, func(op string, _ []byte) fault {
		mu.Lock()
		defer mu.Unlock()
		if op == "TransactWriteItems" && refusing {
			return throttle("ProvisionedThroughputExceededException")
		}
		return fault{}
	})
	ctx := context.Background()
	change := []crdt.Change{{Collection: "notes", Record: crdt.SetField("a", "text", val(t, "one"), stamp(1000, "client"))}}
	if res, err := s.Apply(ctx, change); !errors.Is(err, stores.ErrUnavailable) {
		t.Fatalf("Apply while throttled: %+v, %v; want ErrUnavailable", res, err)
	}
	if h, err := s.Head(ctx, "notes"); err != nil || h != 0 {
		t.Fatalf("head %d, %v after a refused write; want 0", h, err)
	}
	mu.Lock()
	refusing = false
	mu.Unlock()
	res, err := s.Apply(ctx, change)
	if err != nil || !res[0].Changed || res[0].Seq != 1 {
		t.Fatalf("Apply once the table takes it: %+v, %v; want changed at seq 1", res, err)
	}
}

// TestFaultUnprocessedKeys: the strongly consistent BatchGetItem of a
// commit returns some or all of its keys unprocessed; the store reads them
// again, and merges into the record as stored, not into an empty one.
func TestFaultUnprocessedKeys(t *testing.T) {
	// Everything unprocessed: the request's own RequestItems, answered back.
	unprocessed := func(op string, body []byte) fault {
		if op != "BatchGetItem" || !bytes.Contains(body, []byte("~r#")) {
			return fault{}
		}
		var req struct {
			RequestItems json.RawMessage
		}
		if err := json.Unmarshal(body, &req); err != nil {
			panic(err)
		}
		return fault{status: 200, body: `{"Responses":{},"UnprocessedKeys":` + string(req.RequestItems) + `}`}
	}
	n := 0
	var mu sync.Mutex
	s, ft := faultStore(t, Config{}, func(op string, body []byte) fault {
		mu.Lock()
		defer mu.Unlock()
		if f := unprocessed(op, body); f.status != 0 && n < 2 {
			n++
			return f
		}
		return fault{}
	})
	ctx := context.Background()
	mu.Lock()
	n = 2 // the first write reads no faults
	mu.Unlock()
	if _, err := s.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("a", "x", val(t, 1), stamp(1000, "client"))}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	n = 0
	mu.Unlock()
	before := ft.count("BatchGetItem")
	res, err := s.Apply(ctx, []crdt.Change{{Collection: "notes", Record: crdt.SetField("a", "y", val(t, 2), stamp(2000, "client"))}})
	if err != nil || !res[0].Changed || res[0].Seq != 2 {
		t.Fatalf("Apply with its read unprocessed twice: %+v, %v; want changed at seq 2", res, err)
	}
	if got := ft.count("BatchGetItem") - before; got < 3 {
		t.Fatalf("%d reads; the fault was not met", got)
	}
	e, err := s.Get(ctx, "notes", "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeValues(t, e.Record); got["x"] != int64(1) || got["y"] != int64(2) {
		t.Fatalf("record %v after the write, want x=1 and y=2", got)
	}
}

// TestFaultCapture: the stream consumer meets throttled GetRecords, an
// iterator that expired after the first foreign write was captured and
// the second written (the consumer resumes after the last record it
// handled, not at the stream's end), a throttled read of
// the record a foreign write is stamped after (past the SDK's retries) and
// a ledger claim whose reply is lost after DynamoDB applied it. The
// foreign writes are captured, each once, with the stamp the ledger
// holds, and none is rejected or skipped.
func TestFaultCapture(t *testing.T) {
	plain, _, _ := testClients(t)
	table := testTable(t, plain)
	var mu sync.Mutex
	faults := map[string]int{}
	hold, expire := false, false // GetRecords refused while hold, then expired twice
	pick := func(op string, body []byte) fault {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case op == "GetRecords" && faults[op] < 3:
			faults[op]++
			return throttle("LimitExceededException")
		case op == "GetRecords" && hold:
			faults["held"]++
			return throttle("LimitExceededException")
		case op == "GetRecords" && expire && faults["expired"] < 2:
			faults["expired"]++
			return fault{status: 400, body: `{"__type":"com.amazonaws.dynamodb.v20120810#ExpiredIteratorException","message":"injected: Iterator expired"}`}
		case op == "GetItem" && bytes.Contains(body, []byte("~r#todos#f")) && faults[op] < 4:
			faults[op]++
			return throttle("ProvisionedThroughputExceededException")
		case op == "UpdateItem" && bytes.Contains(body, []byte("~c#todos#f")) && faults[op] < 1:
			faults[op]++
			return fault{lose: true}
		}
		return fault{}
	}
	db, streams, _ := faultClients(t, pick)
	s := openTest(t, db, streams, table)
	captureWithStore(t, s)
	ctx := context.Background()

	put := func(title string) {
		t.Helper()
		if _, err := plain.PutItem(ctx, &awsdynamodb.PutItemInput{TableName: &table, Item: map[string]types.AttributeValue{
			attrPK: &types.AttributeValueMemberS{Value: "todos#f"}, attrSK: &types.AttributeValueMemberN{Value: "0"},
			"title": &types.AttributeValueMemberS{Value: title},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	put("first")
	waitValues(t, s, "todos", "f", "the first foreign write", func(v map[string]any) bool { return v["title"] == "first" })
	mu.Lock()
	hold = true
	mu.Unlock()
	// Write the second only once a GetRecords was held: one that passed
	// the picker before hold was set may reach DynamoDB Local after the
	// write and return it, and the expired iterator would never be met.
	// The consumer reads from one goroutine, so once a read is held none
	// passed before is still in flight.
	waitFor(t, "the consumer to be held back", func() bool { mu.Lock(); defer mu.Unlock(); return faults["held"] >= 1 })
	put("second")
	waitFor(t, "the consumer to be held back", func() bool { mu.Lock(); defer mu.Unlock(); return faults["held"] >= 3 })
	mu.Lock()
	hold, expire = false, true
	mu.Unlock()
	waitValues(t, s, "todos", "f", "the second foreign write", func(v map[string]any) bool { return v["title"] == "second" })
	mu.Lock()
	met := maps.Clone(faults)
	mu.Unlock()
	if met["GetRecords"] < 3 || met["expired"] < 2 || met["GetItem"] < 4 || met["UpdateItem"] < 1 {
		t.Fatalf("faults met %v; want every one", met)
	}
	if st := s.CaptureStats(); st.Rejected+st.Refused != 0 {
		t.Fatalf("capture stats %+v; want nothing rejected or refused", st)
	}
	e, err := s.Get(ctx, "todos", "f")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := s.Head(ctx, "todos")
	if e.Seq != 2 || h != 2 {
		t.Fatalf("record at seq %d, head %d; want each foreign write captured once (2)", e.Seq, h)
	}
	out, err := plain.GetItem(ctx, &awsdynamodb.GetItemInput{TableName: &table, Key: key(capturePK("todos", "f"), 0), ConsistentRead: ptr(true)})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := getN(out.Item, attrLedgerWall)
	l, _ := getN(out.Item, attrLedgerLogical)
	if f := e.Record.Fields["title"].Stamp; f.Wall != int64(w) || f.Logical != uint32(l) {
		t.Fatalf("title stamped %v, the ledger holds %d.%d", f, w, l)
	}
}

// TestFaultBumpReplyLost: the reply to an epoch bump's conditional
// UpdateItem is lost after DynamoDB applied it, and the retry's condition
// fails on the bump itself. The bump happened once, and says so: a bump
// from a read counter (the engine's proof that the store went back, which
// it logs and counts only when it reports true) reports true, and a
// collection's bump does not bump again.
func TestFaultBumpReplyLost(t *testing.T) {
	at := time.Unix(2_000_000_000, 0)
	storetest.CheckBumpReplyLost(t, at, func(t *testing.T, storeWide bool) (storetest.BumpStore, func() bool) {
		pk := epochPK("notes")
		if storeWide {
			pk = storePK
		}
		s, ft := faultStore(t, Config{Now: func() time.Time { return at }}, nth("UpdateItem", `"`+pk+`"`, 1, fault{lose: true}))
		return s, func() bool { return ft.count("UpdateItem") >= 2 }
	})
}

// TestFaultMetaUnprocessed: the strongly consistent BatchGetItem of Meta
// returns its keys unprocessed, as DynamoDB does under throttling; Meta
// reads them again, as the other batch reads do, instead of failing.
func TestFaultMetaUnprocessed(t *testing.T) {
	var mu sync.Mutex
	left := 0
	s, ft := faultStore(t, Config{}, func(op string, body []byte) fault {
		mu.Lock()
		defer mu.Unlock()
		if op != "BatchGetItem" || !bytes.Contains(body, []byte(`"~e#notes"`)) || left == 0 {
			return fault{}
		}
		left--
		var req struct{ RequestItems json.RawMessage }
		if err := json.Unmarshal(body, &req); err != nil {
			panic(err)
		}
		return fault{status: 200, body: `{"Responses":{},"UnprocessedKeys":` + string(req.RequestItems) + `}`}
	})
	ctx := context.Background()
	if err := s.BumpEpoch(ctx, "notes", stores.HistoryLost); err != nil {
		t.Fatal(err)
	}
	want, err := s.Meta(ctx, "notes")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	left = 2
	mu.Unlock()
	before := ft.count("BatchGetItem")
	got, err := s.Meta(ctx, "notes")
	if err != nil || got != want {
		t.Fatalf("Meta with its keys unprocessed twice: %+v, %v; want %+v", got, err, want)
	}
	if n := ft.count("BatchGetItem") - before; n < 3 {
		t.Fatalf("%d reads; the faults were not met", n)
	}
}
