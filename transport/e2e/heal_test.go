package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores/bolt/bolttest"
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
		runHeal(t, bin, "bolt:"+path, nil, func(t *testing.T) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		})
	})
	// The documented backup and restore: a copy of the file taken while the
	// server ran, written past, then put back, and `convergo store
	// mark-restored` run before the server starts again.
	t.Run("embedded, a backup restored", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		path, backup := filepath.Join(dir, "convergo.db"), filepath.Join(dir, "backup.db")
		runHeal(t, bin, "bolt:"+path, func(t *testing.T) {
			bolttest.CopyWithNote(t, path, backup)
		}, func(t *testing.T) {
			bolttest.CopyWithNote(t, backup, path)
			if out, err := exec.Command(bin, "store", "mark-restored", "--store", "bolt:"+path).CombinedOutput(); err != nil {
				t.Fatalf("convergo store mark-restored: %v\n%s", err, out)
			}
		})
	})
	// The file alone put back, as above, and the procedure forgotten: the
	// note the store keeps beside the file counts more writes than the
	// file, and the store starts the new epoch itself when it opens.
	t.Run("embedded, the file alone put back, mark-restored forgotten", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		path, backup := filepath.Join(dir, "convergo.db"), filepath.Join(dir, "backup.db")
		url := runHeal(t, bin, "bolt:"+path, func(t *testing.T) {
			bolttest.CopyFile(t, path, backup)
		}, func(t *testing.T) {
			bolttest.CopyFile(t, backup, path)
		})
		// The readers came back to a new epoch, not with proof the engine
		// had to find (a cursor past the head, which it would also act on).
		metrics := get(t, url+"/metrics")
		if !strings.Contains(metrics, "\nconvergo_store_went_back_total 0\n") {
			t.Errorf("the engine found the store gone back by itself; want the store to have noticed at open:\n%s", grepLines(metrics, "convergo_store_went_back_total", "convergo_resets_total"))
		}
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		redisBin := storetest.Endpoint(t, "CONVERGO_REDIS_SERVER_BIN")
		dir, raddr := t.TempDir(), freeAddr(t)
		startRedis(t, redisBin, raddr, dir)
		runHeal(t, bin, "redis://"+raddr, nil, func(t *testing.T) {
			rc := goredis.NewClient(&goredis.Options{Addr: raddr})
			defer rc.Close()
			if err := rc.FlushAll(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		})
	})
}

// runHeal writes through three clients, calls backup (if any) once the
// server holds their first writes, writes more, stops the server, calls
// lose, starts it again, and checks the heal.
func runHeal(t *testing.T, bin, store string, backup, lose func(*testing.T)) (url string) {
	ctx := t.Context()
	const coll = "heal.notes"
	addr := freeAddr(t)
	url = "http://" + addr
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
	if backup != nil {
		for i := range 5 {
			if err := bob.Set(coll, fmt.Sprint("early", i), "m", i); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range []*client.Replica{bob, alice, reader} {
			if err := r.Sync(ctx); err != nil {
				t.Fatal(err)
			}
		}
		backup(t)
	}
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
	if n := 20 + 5*btoi(backup != nil); len(want) != n {
		t.Fatalf("before the loss the reader holds %d records, want %d", len(want), n)
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
	return url
}

// get returns the body of a GET of url.
func get(t *testing.T, url string) string {
	t.Helper()
	return getWith(t, http.DefaultClient, url)
}

// getWith returns the body of a GET of url by hc.
func getWith(t *testing.T, hc *http.Client, url string) string {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// grepLines returns the lines of s that start with one of prefixes.
func grepLines(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
