package client

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A live session reads as its hello's token. When the server ends it
// with revoked (the deny list names that token's id, say) after the
// TokenFunc has replaced the token, the refusal says nothing of the
// current token (docs/protocol.md, section 10): the replica purges
// nothing, and Live dials again with the current token, as an HTTP
// request refused so is sent again with it.
func TestLiveRevokedForAReplacedTokenPurgesNothing(t *testing.T) {
	f := newFakeServer(t)
	seed(t, f, map[string]string{"t1": "a"})
	var tok atomic.Value
	tok.Store("old")
	r := newWatched(t, f, "r", func(cfg *Config) {
		cfg.TokenFunc = func(context.Context) (string, error) { return tok.Load().(string), nil }
	})
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() { errc <- r.Live(ctx) }()
	eventually(t, "t1", func() bool { return hasValue(r.Replica, "todos", "t1", "list") })
	if err := r.Set("todos", "t1", "title", "x"); err != nil {
		t.Fatal(err)
	}
	tok.Store("new") // the app refreshed its token; the session keeps the old one
	f.control("revoke")
	eventually(t, "a second session", func() bool { return f.liveDials.Load() >= 2 || r.Revoked() != nil })
	if err := r.Revoked(); err != nil {
		t.Fatalf("revoked for the replaced token: %v", err)
	}
	if len(r.Records("todos")) == 0 || len(r.Pending()) != 1 || len(r.Rejected()) != 0 {
		t.Fatalf("after the old token's revocation: records %v, outbox %d, rejected %d; want all kept", r.Records("todos"), len(r.Pending()), len(r.Rejected()))
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("live: %v, want it running until cancelled", err)
	}
}

// The same for a push over the session: refused whole revoked (or
// forbidden) for the session's token, replaced since, it goes again over
// HTTP with the current token, and the replica purges nothing.
func TestLivePushRevokedForAReplacedTokenGoesAgain(t *testing.T) {
	f := newFakeServer(t)
	var tok atomic.Value
	tok.Store("old")
	r := newWatched(t, f, "r", func(cfg *Config) {
		cfg.TokenFunc = func(context.Context) (string, error) { return tok.Load().(string), nil }
	})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Live(ctx) }()
	eventually(t, "a live session", func() bool { return r.Client().link() != nil })
	var refused atomic.Int64
	once := func([]crdt.Change) string {
		if refused.Add(1) == 1 {
			return proto.CodeRevoked // the session's token is denied
		}
		return ""
	}
	f.refuseWhole.Store(&once)
	tok.Store("new")
	if err := r.Set("todos", "t1", "title", "x"); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if err := r.Revoked(); err != nil {
		t.Fatalf("revoked for the replaced token: %v", err)
	}
	if f.livePushes.Load() != 1 || len(r.Pending()) != 0 || len(r.Rejected()) != 0 {
		t.Fatalf("%d live pushes, %d pending, %d rejected; want the live push refused, then taken over HTTP", f.livePushes.Load(), len(r.Pending()), len(r.Rejected()))
	}
	cancel()
	<-errc
}
