package client_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestRealServerAtMinRequestBytesTakesTheLargestRecord runs a server whose
// --max-body and --max-message are transport.MinRequestBytes, the least
// convergo serve takes: a change of a record at crdt.MaxRecordBytes, in a
// collection of the longest name, stamped by a replica of the longest id,
// is pushed and applied.
func TestRealServerAtMinRequestBytesTakesTheLargestRecord(t *testing.T) {
	eng, err := engine.Open(engine.Config{Store: memory.New()})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := transport.NewJWT([]byte("client-test-secret-0123456789"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: auth,
		Limits: transport.Limits{MaxBodyBytes: transport.MinRequestBytes, MaxMessageBytes: transport.MinRequestBytes}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		eng.Close()
	})
	coll := strings.Repeat("c", crdt.MaxCollectionBytes)
	token, err := auth.Issue("alice", []string{"*"}, []string{"*"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: hs.URL, Token: token, Device: strings.Repeat("d", proto.MaxDeviceBytes)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	id := strings.Repeat("i", crdt.MaxIDBytes)
	value := func(n int) []byte {
		v, err := crdt.EncodeValue(bytes.Repeat([]byte{7}, n))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// Three values of n bytes each, n the largest whose record is within
	// the record limit.
	record := func(n int) (crdt.Record, int) {
		rec := crdt.Record{ID: id, Fields: map[string]crdt.Field{}}
		for _, name := range []string{"a", "b", "c"} {
			s, err := c.Now()
			if err != nil {
				t.Fatal(err)
			}
			rec.Fields[name] = crdt.Field{Stamp: s, Value: value(n)}
		}
		b, err := crdt.EncodeRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		return rec, len(b)
	}
	n := crdt.MaxRecordBytes / 3
	rec, size := record(n)
	for ; size > crdt.MaxRecordBytes; rec, size = record(n) {
		n -= (size - crdt.MaxRecordBytes + 2) / 3
	}
	if size < crdt.MaxRecordBytes-8 {
		t.Fatalf("a record of %d bytes, want about %d", size, crdt.MaxRecordBytes)
	}
	res, err := c.Push(ctx, []crdt.Change{{Collection: coll, Record: rec}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Status != client.StatusApplied {
		t.Fatalf("push of a record at the record limit: %+v, want applied", res)
	}
}
