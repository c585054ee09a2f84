package client_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestWritesAfterTheClockCameBack writes while the local clock runs an
// hour fast (refused clock_drift, as it must be), then once it is back
// and a hello told the client the server's time: the clock that issued
// the refused stamps must not hold the later writes an hour ahead,
// refused in their turn until real time catches up.
func TestWritesAfterTheClockCameBack(t *testing.T) {
	eng, err := engine.Open(engine.Config{Store: memory.New()})
	_, url, auth := serve(t, eng, err)
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var fast atomic.Int64
	r := helloReplica(t, client.Config{URL: url, Token: token, Device: "laptop",
		Now: func() time.Time { return time.Now().Add(time.Duration(fast.Load())) }}, client.ReplicaConfig{})
	fast.Store(int64(time.Hour))
	if err := r.Set("notes", "early", "title", "an hour fast"); err != nil {
		t.Fatal(err)
	}
	_ = r.Flush(t.Context())
	if rej := r.Rejected(); len(rej) != 1 || rej[0].Code != proto.CodeClockDrift {
		t.Fatalf("the write an hour fast: rejected %+v, want one clock_drift", rej)
	}
	fast.Store(0)
	if _, err := r.Client().Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"later", "early"} {
		if err := r.Set("notes", id, "title", "in time"); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if rej := r.Rejected(); len(rej) != 1 {
		t.Fatalf("the writes once the clock came back: rejected %+v, want only the first", rej)
	}
	for _, id := range []string{"later", "early"} {
		g, err := eng.GetRecord(t.Context(), "notes", id)
		if err != nil || !g.Record.Exists() {
			t.Fatalf("%s on the server: %+v, %v", id, g.Record, err)
		}
	}
}

// TestStampsKeepIncreasingWhenTheLocalClockGoesBack sets the local clock
// an hour back between two writes, with no hello between them: the
// second write stamps after the first (the clock is restarted only by
// what a hello says of the server's time).
func TestStampsKeepIncreasingWhenTheLocalClockGoesBack(t *testing.T) {
	eng, err := engine.Open(engine.Config{Store: memory.New()})
	_, url, auth := serve(t, eng, err)
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var back atomic.Int64
	r := helloReplica(t, client.Config{URL: url, Token: token, Device: "laptop",
		Now: func() time.Time { return time.Now().Add(-time.Duration(back.Load())) }}, client.ReplicaConfig{})
	if err := r.Set("notes", "n1", "title", "first"); err != nil {
		t.Fatal(err)
	}
	back.Store(int64(time.Hour))
	if err := r.Set("notes", "n1", "title", "second"); err != nil {
		t.Fatal(err)
	}
	second, _ := crdt.EncodeValue("second")
	if got, ok := r.Get("notes", "n1"); !ok || string(got.Fields["title"].Value) != string(second) {
		t.Fatalf("n1 after the second write: %+v, want title second", got)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	g, err := eng.GetRecord(t.Context(), "notes", "n1")
	if err != nil || string(g.Record.Fields["title"].Value) != string(second) {
		t.Fatalf("n1 on the server: %+v, %v; want title second", g.Record, err)
	}
}
