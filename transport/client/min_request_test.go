package client_test

import (
	"bytes"
	"context"
	"net/http"
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
	hs, auth := minRequestServer(t, nil)
	c := minRequestClient(t, hs, auth)
	rec := largestRecord(t, c)
	res, err := c.Push(t.Context(), []crdt.Change{{Collection: longestCollection, Record: rec}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Status != client.StatusApplied {
		t.Fatalf("push of a record at the record limit: %+v, want applied", res)
	}
}

// TestRealServerAtMinRequestBytesRestoresTheLargestRecord is the restore's
// counterpart: a record at crdt.MaxRecordBytes in a collection of the
// longest name, pulled with its seal from one server, is given back to
// another on a store that lost it (the same seal key), both with
// --max-body and --max-message at transport.MinRequestBytes, and
// restored; the pull answer and the live frame that carried it were read
// whole.
func TestRealServerAtMinRequestBytesRestoresTheLargestRecord(t *testing.T) {
	key := []byte("min-request-seal-key-0123456789abcdef")
	hs, auth := minRequestServer(t, key)
	c := minRequestClient(t, hs, auth)
	ctx := t.Context()
	rec := largestRecord(t, c)
	res, err := c.Push(ctx, []crdt.Change{{Collection: longestCollection, Record: rec}})
	if err != nil || len(res) != 1 || res[0].Status != client.StatusApplied {
		t.Fatalf("push of a record at the record limit: %+v, %v; want applied", res, err)
	}
	page, err := c.Pull(ctx, longestCollection, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 1 || len(page.Seals) != 1 {
		t.Fatalf("pull: %d records, %d seals; want 1 and 1", len(page.Records), len(page.Seals))
	}
	b, err := crdt.EncodeRecord(page.Records[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < crdt.MaxRecordBytes-8 {
		t.Fatalf("pulled a record of %d bytes, want about %d", len(b), crdt.MaxRecordBytes)
	}
	// A live frame carries it whole too.
	live, err := client.NewReplica(minRequestClientOf(t, hs, auth, "live"), client.ReplicaConfig{Collections: []string{longestCollection}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(live.Close)
	liveCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- live.Live(liveCtx) }()
	holds := func(want crdt.Record) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if got, ok := live.Get(longestCollection, want.ID); ok && got.Equal(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the live replica did not get the record at the record limit within 10s")
			}
		}
	}
	holds(page.Records[0])
	// Written again while the session is up: its changes frame carries it.
	again := largestRecord(t, c)
	if res, err := c.Push(ctx, []crdt.Change{{Collection: longestCollection, Record: again}}); err != nil || len(res) != 1 || res[0].Status != client.StatusApplied {
		t.Fatalf("push again: %+v, %v; want applied", res, err)
	}
	holds(again)
	stop()
	<-done
	hs2, auth2 := minRequestServer(t, key)
	c2 := minRequestClient(t, hs2, auth2)
	got, err := c2.Restore(ctx, longestCollection, []proto.SealedRecord{{Record: page.Records[0], Seal: page.Seals[0]}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Status != client.StatusApplied {
		t.Fatalf("restore of a record at the record limit: %+v, want applied", got)
	}
}

// longestCollection is a collection name of crdt.MaxCollectionBytes.
var longestCollection = strings.Repeat("c", crdt.MaxCollectionBytes)

// minRequestServer runs a server on a store of its own whose --max-body
// and --max-message are transport.MinRequestBytes, the least convergo
// serve takes; sealKey nil for a random one. It returns its URL.
func minRequestServer(t *testing.T, sealKey []byte) (string, *transport.JWT) {
	t.Helper()
	eng, err := engine.Open(engine.Config{Store: memory.New()})
	_, url, auth := serveConfig(t, eng, err, transport.Config{SealKey: sealKey,
		Limits: transport.Limits{MaxBodyBytes: transport.MinRequestBytes, MaxMessageBytes: transport.MinRequestBytes}},
		func(h http.Handler) http.Handler { return h })
	return url, auth
}

// minRequestClient is a client of alice, with a device of the longest id,
// that said hello to the server at url.
func minRequestClient(t *testing.T, url string, auth *transport.JWT) *client.Client {
	t.Helper()
	return minRequestClientOf(t, url, auth, strings.Repeat("d", proto.MaxDeviceBytes))
}

// minRequestClientOf is a client of alice on device that said hello to the server at url.
func minRequestClientOf(t *testing.T, url string, auth *transport.JWT, device string) *client.Client {
	t.Helper()
	token, err := auth.Issue("alice", []string{"*"}, []string{"*"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: url, Token: token, Device: device})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}

// largestRecord is a record of the longest id whose plain form is within
// 8 bytes of crdt.MaxRecordBytes: three values of n bytes each, n the
// largest whose record is within the record limit, stamped by c.
func largestRecord(t *testing.T, c *client.Client) crdt.Record {
	t.Helper()
	id := strings.Repeat("i", crdt.MaxIDBytes)
	value := func(n int) []byte {
		v, err := crdt.EncodeValue(bytes.Repeat([]byte{7}, n))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
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
	return rec
}
