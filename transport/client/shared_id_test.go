package client_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/client"
)

// TestRealServerTwoReplicasOfOneID: two replicas that share a replica id
// (a program started twice with one Device) and a wall clock write the
// same field with equal stamps. Nothing can refuse them, but the merge's
// tie-break orders equal stamps, so both end on the server's value.
func TestRealServerTwoReplicasOfOneID(t *testing.T) {
	_, url, auth := realServer(t)
	ctx := t.Context()
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now()
	twin := func() *client.Replica {
		c, err := client.New(client.Config{URL: url, Token: token, Device: "laptop", Now: func() time.Time { return at }})
		if err != nil {
			t.Fatal(err)
		}
		r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := twin(), twin()
	for _, w := range []struct {
		r *client.Replica
		v string
	}{{a, "zzz"}, {b, "aaa"}} {
		if err := w.r.Set("notes", "n1", "title", w.v); err != nil {
			t.Fatal(err)
		}
	}
	ra, _ := a.Get("notes", "n1")
	rb, _ := b.Get("notes", "n1")
	if ra.Fields["title"].Stamp != rb.Fields["title"].Stamp {
		t.Fatalf("one id and one wall clock, and the stamps differ: %v %v", ra.Fields["title"].Stamp, rb.Fields["title"].Stamp)
	}
	for range 2 {
		for _, r := range []*client.Replica{b, a} {
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	ra, _ = a.Get("notes", "n1")
	rb, _ = b.Get("notes", "n1")
	if !bytes.Equal(ra.Fields["title"].Value, rb.Fields["title"].Value) {
		t.Fatalf("the twins diverge: %q and %q", ra.Fields["title"].Value, rb.Fields["title"].Value)
	}
	if len(a.Rejected())+len(b.Rejected()) != 0 {
		t.Fatalf("rejected: %v and %v, want none", a.Rejected(), b.Rejected())
	}
}
