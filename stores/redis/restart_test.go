package redis

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis/redistest"
)

// startServer starts a private redis-server with an append-only file
// fsynced before every reply (appendfsync always).
func startServer(t testing.TB) *redistest.Server {
	t.Helper()
	return startServerFsync(t, "always")
}

// startServerFsync starts a private redis-server with an append-only file
// and the appendfsync policy fsync.
func startServerFsync(t testing.TB, fsync string) *redistest.Server {
	t.Helper()
	return redistest.Start(t, "--save", "", "--appendonly", "yes", "--appendfsync", fsync, "--enable-debug-command", "local")
}

// TestServerCrashAndRestart kills Redis with SIGKILL under a store and
// starts it again on its data: calls fail with ErrUnavailable while it is
// down and promptly (the port refuses at once; each try dials once, and the
// retries are bounded); every
// acknowledged change is still there afterwards (appendfsync always); the
// merge script, gone from the new server's script cache, is loaded again
// by the EVAL fallback; and the watcher gets a Resync when its
// subscription comes back.
func TestServerCrashAndRestart(t *testing.T) {
	srv := startServer(t)
	ctx := testContext(t)
	s, err := Open(ctx, Options{
		Addrs: []string{srv.Addr()}, KeyPrefix: "crash:",
		// Timeouts a loaded machine meets on an fsync before every reply:
		// once the server is killed its port refuses at once, so they do
		// not bound the calls made while it is down.
		DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
		MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := newRecorder()
	defer s.Watch(rec.notify)()
	rec.waitFor(t, "the first subscription", func(n int, _ map[string]uint64) bool { return n >= 1 })

	put := func(ctx context.Context, i int) ([]stores.Result, error) {
		return s.Apply(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField(fmt.Sprintf("r%d", i), "n", mustValue(t, int64(i)), crdt.Stamp{Wall: int64(1 + i), Replica: "a"})}})
	}
	const acked = 20
	for i := range acked {
		if _, err := put(ctx, i); err != nil {
			t.Fatalf("apply %d: %v", i, err)
		}
	}

	srv.Kill()
	start := time.Now()
	_, err = put(ctx, acked)
	if !errors.Is(err, stores.ErrUnavailable) {
		t.Fatalf("apply with Redis down: got %v, want ErrUnavailable", err)
	}
	if _, err := s.Head(ctx, "c"); !errors.Is(err, stores.ErrUnavailable) {
		t.Fatalf("head with Redis down: got %v, want ErrUnavailable", err)
	}
	// Each try dials once and the port refuses at once: both calls end in
	// tens of milliseconds (some 70 ms at a load of 6 on 2 cores), their
	// tries' backoff included. Dialling five times 100 ms apart per try,
	// as go-redis does unless told otherwise, they took over 3 s.
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("calls with Redis down took %s; with one dial per try and the port refusing at once, they should end at once", d)
	}
	// A caller's deadline bounds a call too.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = put(short, acked)
	cancel()
	if err == nil {
		t.Fatal("apply with Redis down and a 50ms deadline succeeded")
	}

	srv.Start()
	var head uint64
	deadline := time.Now().Add(10 * time.Second)
	for {
		head, err = s.Head(ctx, "c")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("head after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if head != acked {
		t.Fatalf("head after restart: got %d, want %d (every acknowledged change)", head, acked)
	}
	page, err := s.Pull(ctx, "c", 0, stores.PageLimit{Records: stores.MaxPage, Bytes: 1 << 30})
	if err != nil || len(page.Entries) != acked {
		t.Fatalf("pull after restart: got %d entries, %v; want %d", len(page.Entries), err, acked)
	}
	// The restarted server has an empty script cache: Apply works through
	// the EVAL fallback, and the change is notified on the new subscription.
	rec.waitFor(t, "a Resync after the restart", func(n int, _ map[string]uint64) bool { return n >= 2 })
	res, err := put(ctx, acked)
	if err != nil || !res[0].Changed || res[0].Seq != acked+1 {
		t.Fatalf("apply after restart: got %+v, %v; want changed at seq %d", res, err, acked+1)
	}
	rec.waitFor(t, "the change after the restart", func(_ int, h map[string]uint64) bool { return h["c"] == acked+1 })
}

// TestContextBoundsCalls blocks a private Redis with DEBUG SLEEP and checks
// that a call whose context expires returns promptly with the context's
// error, although the store's read timeout is much longer: the store turns
// on go-redis's ContextTimeoutEnabled.
func TestContextBoundsCalls(t *testing.T) {
	srv := startServer(t)
	ctx := testContext(t)
	s, err := Open(ctx, Options{Addrs: []string{srv.Addr()}, ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	change := []crdt.Change{{Collection: "c", Record: crdt.SetField("r", "f", mustValue(t, 1), crdt.Stamp{Wall: 1, Replica: "a"})}}
	if _, err := s.Apply(ctx, change); err != nil { // loads the script
		t.Fatal(err)
	}
	// The server stays blocked for 5 s; the test ends long before, and the
	// server is killed then.
	go func() { _ = s.client.Do(ctx, "DEBUG", "SLEEP", "5").Err() }()
	time.Sleep(200 * time.Millisecond) // let DEBUG SLEEP reach the server

	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = s.Apply(short, change)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("apply on a blocked server: got %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("apply on a blocked server returned after %s, want about 200ms", d)
	}
}

// TestOpenChecksMode checks that Open refuses a single-node client pointed
// at a cluster node (it would fail on every collection outside the node's
// slots) and a cluster client pointed at a server without cluster support.
func TestOpenChecksMode(t *testing.T) {
	single, cluster := singleTarget(t), clusterTarget(t)
	ctx := testContext(t)
	if s, err := Open(ctx, Options{Addrs: cluster.addrs[:1]}); !errors.Is(err, stores.ErrInvalid) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("single-node client on a cluster node: got %v, want ErrInvalid", err)
	}
	if s, err := Open(ctx, Options{Addrs: single.addrs, Cluster: true}); err == nil {
		s.Close()
		t.Fatal("cluster client on a single server: got no error")
	}
	s, err := Open(ctx, Options{Addrs: cluster.addrs[:1], Cluster: true}) // one node is enough to find the rest
	if err != nil {
		t.Fatalf("cluster client from one node: %v", err)
	}
	s.Close()
}
