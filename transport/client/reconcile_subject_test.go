package client

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// TestCollectedOfAnotherSubjectIsNotRestampedAsTheNewOne: a change
// refused collected whose push is answered after the client greeted as
// another subject (a TokenFunc's new token, told by a hello meanwhile) is
// not written again with fresh stamps: they would be the new subject's,
// and the first subject's edit would go out as the second's. It stays
// rejected collected, for its subject to write again (docs/protocol.md,
// "Reconciliation", step 3), as in the browser client.
func TestCollectedOfAnotherSubjectIsNotRestampedAsTheNewOne(t *testing.T) {
	f := newFakeServer(t)
	f.subjects.Store(true) // the token names the subject
	var subject atomic.Value
	subject.Store("alice")
	ctx := t.Context()
	seed(t, f, map[string]string{"t1": "a", "t2": "a", "t3": "a"})
	w := newWatchedWith(t, f, "", func(cfg *Config) {
		cfg.Device = "phone"
		cfg.TokenFunc = func(context.Context) (string, error) { return subject.Load().(string), nil }
	}, ReplicaConfig{})
	a := &away{watched: w}
	c := a.Client()
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	alice := c.Replica()
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// Alice's edit, stamped before the write horizon.
	if err := a.Set("todos", "t1", "title", "alice's edit"); err != nil {
		t.Fatal(err)
	}
	a.horizon = c.cfg.Now().UnixMilli() + 1
	f.collect("todos", a.horizon)
	time.Sleep(time.Until(time.UnixMilli(a.horizon + 1))) // bob's stamps after it
	// The push of alice's edit is answered once the client greeted as bob.
	var switched atomic.Bool
	hook := func(changes []crdt.Change) string {
		if !switched.Load() && slices.ContainsFunc(changes, func(ch crdt.Change) bool { return ch.Record.ID == "t1" }) {
			switched.Store(true)
			subject.Store("bob")
			if _, err := c.Hello(context.Background()); err != nil {
				t.Error(err)
			}
		}
		return ""
	}
	f.refuseWhole.Store(&hook)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if !switched.Load() {
		t.Fatal("alice's edit was never pushed")
	}
	bob := c.Replica()
	if bob == alice || !strings.HasPrefix(bob, proto.ReplicaPrefix("bob")) {
		t.Fatalf("the client writes as %s after the hello, want bob's id", bob)
	}
	f.smu.Lock()
	pushed := slices.Clone(f.pushedRecords["todos/t1"])
	f.smu.Unlock()
	for _, rec := range pushed {
		for _, s := range stampsOf(rec) {
			if s.Replica == bob {
				t.Fatalf("alice's edit of t1 pushed with bob's stamp %v", s)
			}
		}
	}
	rej := a.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "t1" || rej[0].Code != proto.CodeCollected {
		t.Fatalf("rejected %+v, want alice's edit of t1, code collected", rej)
	}
}
