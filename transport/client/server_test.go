package client_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// realServer runs a transport.Server over a memory store and returns its
// engine, its URL and a token issuer.
func realServer(t *testing.T) (*engine.Engine, string, *transport.JWT) {
	t.Helper()
	eng, err := engine.Open(engine.Config{Store: memory.New()})
	if err != nil {
		t.Fatal(err)
	}
	auth, err := transport.NewJWT([]byte("client-test-secret-0123456789"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: auth})
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
	return eng, hs.URL, auth
}

// TestRealServerRevoked denies a subject on a real server: the next sync
// of its replica purges the records and moves the outbox to the rejected
// changes with code revoked, and the replica syncs no more.
func TestRealServerRevoked(t *testing.T) {
	eng, url, auth := realServer(t)
	ctx := t.Context()
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: url, Token: token, Device: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set("notes", "n1", "title", "kept"); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Set("notes", "n2", "title", "queued"); err != nil {
		t.Fatal(err)
	}

	if err := transport.Deny(ctx, eng, transport.DenyEntry{ID: transport.DenySubject + "alice", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	// The server follows its deny list: wait until it refuses.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = r.Pull(ctx)
		if errors.Is(err, client.ErrRevoked) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the server never revoked alice")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.Records("notes"); len(got) != 0 {
		t.Fatalf("%d records held after revoked", len(got))
	}
	if got := r.Pending(); len(got) != 0 {
		t.Fatalf("outbox %+v after revoked", got)
	}
	rej := r.Rejected()
	if len(rej) != 1 || rej[0].RecordID != "n2" || rej[0].Code != proto.CodeRevoked {
		t.Fatalf("rejected %+v, want n2 with code revoked", rej)
	}
	if err := r.Sync(ctx); !errors.Is(err, client.ErrRevoked) {
		t.Fatalf("sync after revoked: %v, want ErrRevoked", err)
	}
	if err := r.Set("notes", "n3", "title", "x"); !errors.Is(err, client.ErrRevoked) {
		t.Fatalf("write after revoked: %v, want ErrRevoked", err)
	}
}

// TestRealServerLiveRevoked denies a subject whose replica is live: the
// server ends the session with revoked, and Live returns it after the
// replica purged itself.
func TestRealServerLiveRevoked(t *testing.T) {
	eng, url, auth := realServer(t)
	ctx := t.Context()
	token, err := auth.Issue("bob", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: url, Token: token, Device: "phone"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set("notes", "n1", "title", "synced"); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- r.Live(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Records("notes")) == 0 || len(r.Cursor("notes")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("live never delivered n1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := transport.Deny(ctx, eng, transport.DenyEntry{ID: transport.DenySubject + "bob", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, client.ErrRevoked) {
			t.Fatalf("live: %v, want ErrRevoked", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("live went on after bob was denied")
	}
	if got := r.Records("notes"); len(got) != 0 {
		t.Fatalf("%d records held after revoked", len(got))
	}
}
