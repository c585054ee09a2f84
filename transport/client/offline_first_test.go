package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestRealServerReplicaWritesBeforeItsFirstHello writes through a replica
// whose client has no Config.Replica and has never reached the server: its
// token names the subject, whose replica prefix the client computes (as
// the browser client does), so the write is stamped with an id the server
// takes, and the first sync pushes it.
func TestRealServerReplicaWritesBeforeItsFirstHello(t *testing.T) {
	_, url, auth := realServer(t)
	ctx := t.Context()
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: url, Token: token, Device: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set("notes", "n1", "title", "offline"); err != nil {
		t.Fatalf("a write before the first hello: %v", err)
	}
	if want := proto.ReplicaFor("alice", "laptop"); c.Replica() != want {
		t.Fatalf("replica id %q, want %q", c.Replica(), want)
	}
	if err := r.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(r.Pending()); n != 0 {
		t.Fatalf("%d changes still pending after the sync, want the write acknowledged", n)
	}
	reader := replicaOf(t, url, token, "phone", nil, client.ReplicaConfig{})
	if err := reader.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := held(reader); len(got) != 1 || got[0] != "n1" {
		t.Fatalf("the server holds %v, want n1", got)
	}
}

// TestReplicaWritesOfflineWithATokenFunc: a client whose TokenFunc gives
// its tokens binds itself at the first token it reads, even for a request
// the network then fails, and writes from then on.
func TestReplicaWritesOfflineWithATokenFunc(t *testing.T) {
	_, _, auth := realServer(t)
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: "http://127.0.0.1:1", Device: "laptop", Backoff: client.Backoff{MaxAttempts: 1},
		TokenFunc: func(context.Context) (string, error) { return token, nil }})
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(t.Context()); err == nil {
		t.Fatal("a sync with the server down succeeded")
	}
	if err := r.Set("notes", "n1", "title", "offline"); err != nil {
		t.Fatalf("a write offline: %v", err)
	}
	if want := proto.ReplicaFor("alice", "laptop"); c.Replica() != want {
		t.Fatalf("replica id %q, want %q", c.Replica(), want)
	}
}

// TestClientWithAnUnreadableTokenWaitsForItsHello: a token that is no JWT
// names no subject the client can read; it stays unbound until a hello.
func TestClientWithAnUnreadableTokenWaitsForItsHello(t *testing.T) {
	c, err := client.New(client.Config{URL: "http://127.0.0.1:1", Token: "opaque", Device: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Now(); !errors.Is(err, client.ErrUnbound) {
		t.Fatalf("Now with an opaque token: %v, want ErrUnbound", err)
	}
}

// TestReplicaWithATokenFuncStartsOffline: a program that may start
// offline greets the server first, as the package doc says, and writes
// when the hello fails; before any request its writes fail ErrUnbound.
func TestReplicaWithATokenFuncStartsOffline(t *testing.T) {
	_, _, auth := realServer(t)
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: "http://127.0.0.1:1", Device: "laptop", Backoff: client.Backoff{MaxAttempts: 1},
		TokenFunc: func(context.Context) (string, error) { return token, nil }})
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set("notes", "n1", "title", "early"); !errors.Is(err, client.ErrUnbound) {
		t.Fatalf("a write before any request: %v, want ErrUnbound", err)
	}
	if _, err := c.Hello(t.Context()); err == nil {
		t.Fatal("a hello with the server down succeeded")
	}
	if err := r.Set("notes", "n1", "title", "offline"); err != nil {
		t.Fatalf("a write after a failed hello: %v", err)
	}
}
