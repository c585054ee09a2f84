package client

import (
	"context"
	"testing"
	"time"
)

// TestLivePushCancelledThenUnanswered: a push over a live session is
// cancelled by its caller while it waits for its answer, and the server
// never answers it, the session staying heard. The next push must not
// wait for that answer for ever: past the push timeout the session is
// dropped as dead to pushes, as for a push waiting itself, and the next
// push goes.
func TestLivePushCancelledThenUnanswered(t *testing.T) {
	f := newFakeServer(t)
	c := f.client(t, "a", func(cfg *Config) {
		cfg.PushTimeout = 300 * time.Millisecond
		cfg.PingInterval = 50 * time.Millisecond // the session stays heard
	})
	r, err := NewReplica(c, ReplicaConfig{Collections: []string{"c"}})
	if err != nil {
		t.Fatal(err)
	}
	runLive(t, r)
	liveOpen(t, r)
	f.holdLive.Store(true)
	if err := r.Set("c", "r", "f", 1); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := r.Flush(short); err == nil {
		t.Fatal("the flush of an unanswered push returned no error before its context ended")
	}
	f.holdLive.Store(false)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("the next flush: %v (waiting for the answer of the cancelled push)", err)
	}
	if p := r.Pending(); len(p) != 0 {
		t.Fatalf("outbox %+v", p)
	}
}
