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

// TestReplicaWithATokenFuncStartsOffline: a client whose TokenFunc gives
// its tokens, and which has made no request (the server is down), binds
// itself at its first write: the write calls the TokenFunc, with a
// context of its own bounded by Config.HandshakeTimeout (a write takes no
// context), and reads the subject from the token as at New for a static
// token.
func TestReplicaWithATokenFuncStartsOffline(t *testing.T) {
	_, _, auth := realServer(t)
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	calls, bounded := 0, false
	c, err := client.New(client.Config{URL: "http://127.0.0.1:1", Device: "laptop", Backoff: client.Backoff{MaxAttempts: 1},
		HandshakeTimeout: time.Minute,
		TokenFunc: func(ctx context.Context) (string, error) {
			calls++
			deadline, ok := ctx.Deadline()
			bounded = ok && time.Until(deadline) <= time.Minute && time.Until(deadline) > 0
			return token, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Fatalf("New and NewReplica called the TokenFunc %d times, want none", calls)
	}
	if err := r.Set("notes", "n1", "title", "early"); err != nil {
		t.Fatalf("a write before any request: %v", err)
	}
	if want := proto.ReplicaFor("alice", "laptop"); c.Replica() != want {
		t.Fatalf("replica id %q, want %q", c.Replica(), want)
	}
	if calls != 1 || !bounded {
		t.Fatalf("the first write called the TokenFunc %d times (bounded by HandshakeTimeout: %v), want once, bounded", calls, bounded)
	}
	if err := r.Set("notes", "n2", "title", "bound"); err != nil || calls != 1 {
		t.Fatalf("a write once bound: %v, %d calls of the TokenFunc, want no further call", err, calls)
	}
	if p := r.Pending(); len(p) != 2 || p[0].Record.Fields["title"].Stamp.Replica != c.Replica() {
		t.Fatalf("pending %+v, want both writes stamped %s", p, c.Replica())
	}
}

// TestReplicaWriteWhileTheTokenFuncFails: a TokenFunc that fails at a
// write of a client not bound yet leaves the write refused ErrUnbound,
// with the TokenFunc's error; the next write asks it again.
func TestReplicaWriteWhileTheTokenFuncFails(t *testing.T) {
	_, _, auth := realServer(t)
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	down := errors.New("identity provider down")
	fail := true
	c, err := client.New(client.Config{URL: "http://127.0.0.1:1", Device: "laptop",
		TokenFunc: func(context.Context) (string, error) {
			if fail {
				return "", down
			}
			return token, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set("notes", "n1", "title", "early"); !errors.Is(err, client.ErrUnbound) || !errors.Is(err, down) {
		t.Fatalf("a write while the TokenFunc fails: %v, want ErrUnbound and the TokenFunc's error", err)
	}
	fail = false
	if err := r.Set("notes", "n1", "title", "later"); err != nil {
		t.Fatalf("a write once the TokenFunc answers: %v", err)
	}
}
