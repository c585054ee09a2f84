package client_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/client"
)

// A replica whose token changes to another subject's keeps the changes it
// wrote as the first subject for when that subject signs in again
// (docs/protocol.md, section 4, "Replica ids"), as the browser client
// does: pushed under the new subject they would be refused
// forged_replica, rolled back and lost to the outbox. Its new writes go.
func TestOutboxOfAnotherSubjectWaitsForIt(t *testing.T) {
	eng, r, signIn := switchingSubjects(t)
	ctx := t.Context()
	c := r.Client()
	if err := r.Set("notes", "a1", "title", "alice's"); err != nil { // offline
		t.Fatal(err)
	}
	signIn("bob") // the user switches; the app greets again
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("notes", "b1", "title", "bob's"); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("flush as bob: %v", err)
	}
	for _, j := range r.Rejected() {
		t.Errorf("rejected as bob: %s %s: %s %s", j.Collection, j.RecordID, j.Code, j.Message)
	}
	if rec, err := eng.Get(ctx, "notes", "b1"); err != nil || rec == nil {
		t.Errorf("bob's write not on the server: %v %v", rec, err)
	}
	if p := r.Pending(); len(p) != 1 || p[0].Record.ID != "a1" {
		t.Fatalf("pending as bob: %d changes, want alice's a1 kept", len(p))
	}
	if _, err := eng.Get(ctx, "notes", "a1"); !errors.Is(err, stores.ErrNotFound) {
		t.Fatalf("alice's write pushed under bob's token: %v", err)
	}
	signIn("alice") // alice signs in again: her write goes
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("flush as alice: %v", err)
	}
	if rec, err := eng.Get(ctx, "notes", "a1"); err != nil || rec == nil {
		t.Fatalf("alice's write not on the server: %v %v", rec, err)
	}
	if p, j := r.Pending(), r.Rejected(); len(p) != 0 || len(j) != 0 {
		t.Fatalf("after alice's flush: %d pending, %d rejected, want none", len(p), len(j))
	}
}

// The same when the token changes to another subject's and no hello has
// told the client yet: the push of the first subject's changes under the
// new token comes back forged_replica; the replica greets, learns the new
// subject, and keeps them for the first.
func TestOutboxRefusedForgedAfterATokenOfAnotherSubjectWaits(t *testing.T) {
	eng, r, signIn := switchingSubjects(t)
	ctx := t.Context()
	c := r.Client()
	aliceID := c.Replica()
	if err := r.Set("notes", "a1", "title", "alice's"); err != nil {
		t.Fatal(err)
	}
	signIn("bob") // no hello yet
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	for _, j := range r.Rejected() {
		t.Errorf("rejected: %s %s: %s %s", j.Collection, j.RecordID, j.Code, j.Message)
	}
	if p := r.Pending(); len(p) != 1 || p[0].Record.ID != "a1" {
		t.Fatalf("pending: %d changes, want alice's a1 kept", len(p))
	}
	if now := c.Replica(); now == aliceID {
		t.Fatalf("the client is still bound to %s after a refusal forged_replica", now)
	}
	signIn("alice")
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("flush as alice: %v", err)
	}
	if _, err := eng.Get(ctx, "notes", "a1"); err != nil {
		t.Fatalf("alice's write not on the server: %v", err)
	}
}

// switchingSubjects is a real server and a replica on device "phone",
// greeted with alice's token (read and write "notes"); signIn switches the
// token its TokenFunc gives to alice's or bob's.
func switchingSubjects(t *testing.T) (*engine.Engine, *client.Replica, func(subject string)) {
	t.Helper()
	eng, url, auth := realServer(t)
	tokens := map[string]string{}
	for _, sub := range []string{"alice", "bob"} {
		tok, err := auth.Issue(sub, []string{"notes"}, []string{"notes"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tokens[sub] = tok
	}
	var tok atomic.Value
	tok.Store(tokens["alice"])
	r := helloReplica(t, client.Config{URL: url, Device: "phone", TokenFunc: func(context.Context) (string, error) { return tok.Load().(string), nil }}, client.ReplicaConfig{})
	return eng, r, func(subject string) { tok.Store(tokens[subject]) }
}
