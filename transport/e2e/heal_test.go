package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
)

// TestHealAfterTheStoreIsLost loses the server's store while Go clients
// hold its data — the bolt file removed, or Redis emptied — and checks that
// after their next sync (reset, pull, restore, push) the server holds every
// record any client held, including records only a reader still had, and
// that every replica converges to it.
func TestHealAfterTheStoreIsLost(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and restarts the convergo binary")
	}
	bin := buildConvergo(t)
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "convergo.db")
		runHeal(t, bin, "bolt:"+path, func(t *testing.T) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		redisBin := storetest.Endpoint(t, "CONVERGO_REDIS_SERVER_BIN")
		dir, raddr := t.TempDir(), freeAddr(t)
		startRedis(t, redisBin, raddr, dir)
		runHeal(t, bin, "redis://"+raddr, func(t *testing.T) {
			rc := goredis.NewClient(&goredis.Options{Addr: raddr})
			defer rc.Close()
			if err := rc.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		})
	})
}

func runHeal(t *testing.T, bin, store string, lose func(*testing.T)) {
	ctx := t.Context()
	const coll = "heal.notes"
	addr := freeAddr(t)
	url := "http://" + addr
	jwt, err := transport.NewJWT(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	replica := func(sub string, write bool) *client.Replica {
		var w []string
		if write {
			w = []string{coll}
		}
		tok, err := jwt.Issue(sub, []string{coll}, w, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c := newClient(t, url, tok, sub+"-"+randomSuffix(t), nil)
		r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{coll}})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	srv := startConvergo(t, bin, addr, store)
	alice, bob, reader := replica("alice", true), replica("bob", true), replica("reader", false)
	for i := range 20 {
		if err := alice.Set(coll, fmt.Sprint("a", i), "n", i); err != nil {
			t.Fatal(err)
		}
		if err := bob.Set(coll, fmt.Sprint("a", i%5), "m", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := bob.Delete(coll, "a3"); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*client.Replica{alice, bob, reader, alice, bob, reader} {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := reader.Records(coll)
	if len(want) != 20 {
		t.Fatalf("before the loss the reader holds %d records, want 20", len(want))
	}
	// Bob goes away for good: what he wrote lives on only in the others.
	srv.kill(t)
	lose(t)
	srv = startConvergo(t, bin, addr, store)

	// The reader heals alone first: it may not write, yet it gives back
	// every record it was shown, bob's included, as the server sealed them.
	if err := reader.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*client.Replica{alice, reader, alice} {
		if err := r.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	fresh := replica("newcomer", false)
	if err := fresh.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*client.Replica{"alice": alice, "reader": reader, "newcomer": fresh} {
		if d := diffRecords(r.Records(coll), want); d != "" {
			t.Errorf("%s after the heal differs from what was held before the loss:\n%s", name, d)
		}
	}
	_ = crdt.Record{}
}
