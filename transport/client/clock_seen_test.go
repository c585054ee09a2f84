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

// aheadScene is a real server that lets stamps run up to 30 minutes
// ahead of its clock, a note n1 whose title a writer with a clock 10
// minutes fast wrote, and a replica of notes with ccfg (URL and token
// filled in) that pulled it.
func aheadScene(t *testing.T, ccfg client.Config) *client.Replica {
	t.Helper()
	eng, err := engine.Open(engine.Config{Store: memory.New(), MaxDrift: 30 * time.Minute})
	_, url, auth := serve(t, eng, err)
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The fast writer never says hello, so nothing corrects its clock.
	fast, err := client.New(client.Config{URL: url, Token: token, Replica: proto.ReplicaFor("alice", "fast"),
		Now: func() time.Time { return time.Now().Add(10 * time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	s, err := fast.Now()
	if err != nil {
		t.Fatal(err)
	}
	v, _ := crdt.EncodeValue("theirs")
	res, err := fast.Push(t.Context(), []crdt.Change{{Collection: "notes", Record: crdt.SetField("n1", "title", v, s)}})
	if err != nil || res[0].Status != client.StatusApplied {
		t.Fatalf("fast write: %+v, %v", res, err)
	}
	ccfg.URL, ccfg.Token, ccfg.Device = url, token, "laptop"
	r := helloReplica(t, ccfg, client.ReplicaConfig{})
	if err := r.Pull(t.Context()); err != nil {
		t.Fatal(err)
	}
	return r
}

// title is the title of n1 in r's local view.
func title(t *testing.T, r *client.Replica) string {
	t.Helper()
	var doc struct {
		Title string `cbor:"title"`
	}
	if ok, err := r.GetInto("notes", "n1", &doc); err != nil || !ok {
		t.Fatalf("n1: %v, %v", ok, err)
	}
	return doc.Title
}

// TestWriteOverAStampAheadWithinTheServersDrift writes over a value
// whose stamp is ahead of the client's clock by more than the default
// drift bound but within the one the server's hello announces: the
// server took that stamp, so the client's clock must adopt it, and the
// write made after the client saw the value wins over it, locally and
// on the server.
func TestWriteOverAStampAheadWithinTheServersDrift(t *testing.T) {
	r := aheadScene(t, client.Config{})
	if got := title(t, r); got != "theirs" {
		t.Fatalf("pulled title %q, want theirs", got)
	}
	if err := r.Set("notes", "n1", "title", "mine"); err != nil {
		t.Fatal(err)
	}
	if got := title(t, r); got != "mine" {
		t.Fatalf("title after the write %q, want mine: a write over a value it saw stamped before it", got)
	}
	if err := r.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := title(t, r); got != "mine" {
		t.Fatalf("title after sync %q, want mine", got)
	}
}

// TestWriteStampsAfterTheRecordItWrites writes over a value whose stamp
// was too far ahead for the client's clock (a Config.MaxDrift of 5
// minutes) when it was pulled, but no longer is when the write is made:
// the write stamps after what the record holds, and wins.
func TestWriteStampsAfterTheRecordItWrites(t *testing.T) {
	var later atomic.Int64
	r := aheadScene(t, client.Config{MaxDrift: 5 * time.Minute,
		Now: func() time.Time { return time.Now().Add(time.Duration(later.Load())) }})
	later.Store(int64(6 * time.Minute))
	if err := r.Set("notes", "n1", "title", "mine"); err != nil {
		t.Fatal(err)
	}
	if got := title(t, r); got != "mine" {
		t.Fatalf("title after the write %q, want mine: a write over a value it saw stamped before it", got)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := r.Pull(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := title(t, r); got != "mine" {
		t.Fatalf("title after sync %q, want mine", got)
	}
}
