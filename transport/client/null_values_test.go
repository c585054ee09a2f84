package client_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/client"
)

// TestRealServerNullValues: a field whose value is null, and a document
// holding null within nested maps and lists, are values like any other
// (the envelope's null check is of known keys, not of what a record
// holds): they are pushed, pulled over HTTP and streamed live to another
// replica unchanged.
func TestRealServerNullValues(t *testing.T) {
	_, url, auth := realServer(t)
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := replicaOf(t, url, token, "a", nil, client.ReplicaConfig{})
	b := replicaOf(t, url, token, "b", nil, client.ReplicaConfig{})
	live := replicaOf(t, url, token, "c", nil, client.ReplicaConfig{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go live.Live(ctx)
	doc := map[string]any{
		"n":    nil,
		"deep": map[string]any{"a": nil, "l": []any{nil, int64(1), map[string]any{"z": nil}}},
		"t":    "text",
	}
	if err := a.SetDoc("notes", "x", doc); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(t.Context()); err != nil {
		t.Fatalf("push of a document holding null: %v", err)
	}
	if len(a.Pending()) != 0 || len(a.Rejected()) != 0 {
		t.Fatalf("pending %d, rejected %v", len(a.Pending()), a.Rejected())
	}
	if err := b.Sync(t.Context()); err != nil {
		t.Fatalf("pull of a document holding null: %v", err)
	}
	if got, ok, err := b.GetDoc("notes", "x"); err != nil || !ok || !reflect.DeepEqual(got, doc) {
		t.Fatalf("pulled: %v %v %#v, want %#v", ok, err, got, doc)
	}
	waitFor(t, "the live replica to hold the document", func() bool {
		got, ok, err := live.GetDoc("notes", "x")
		return err == nil && ok && reflect.DeepEqual(got, doc)
	})
}
