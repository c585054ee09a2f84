package client_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/client"
)

// TestRealServerCollectedUnderANewerVersion: a replica of schema version
// 1 wrote a record's street and city at different times, before the
// server's notes moved to version 2, which merges them into address.
// Another replica deleted the record; the server collected it while the
// first was away. Back, the first is reset lease_expired and gives back
// its stamps of the record one change per stamp: a part of a merge alone
// cannot be translated, but it is refused collected as any stamp of a
// collected record, and the replica drops the record as every other
// replica did, instead of keeping it for ever.
func TestRealServerCollectedUnderANewerVersion(t *testing.T) {
	ctx := t.Context()
	var now atomic.Int64
	now.Store(time.Now().UnixMilli())
	store := memory.New()
	t.Cleanup(func() { store.Close() })
	open := func(rules string) *engine.Engine {
		rs, err := engine.ParseRules([]byte(rules))
		if err != nil {
			t.Fatal(err)
		}
		eng, err := engine.Open(engine.Config{Store: store, Rules: rs, PollInterval: -1, CollectEvery: -1, CollectGrace: -1,
			Now: func() time.Time { return time.UnixMilli(now.Load()) }})
		if err != nil {
			t.Fatal(err)
		}
		return eng
	}
	// One URL: the server of version 1, then that of version 2 on the
	// same store.
	var current atomic.Pointer[http.Handler]
	eng1 := open(`{"notes": {"maxOffline": "1h"}}`)
	_, url, auth := serveThrough(t, eng1, nil, func(h http.Handler) http.Handler {
		current.Store(&h)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*current.Load()).ServeHTTP(w, r) })
	})
	eng2 := open(`{"notes": {"maxOffline": "1h", "migrations": {"version": 2, "steps": [{"to": 2, "ops": [
		{"op": "merge", "from": ["street", "city"], "to": "address", "sep": ", "}]}]}}}`)
	var next http.Handler
	serveThrough(t, eng2, nil, func(h http.Handler) http.Handler { next = h; return h })

	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	replica := func(device string, def *migrate.Definition) *client.Replica {
		cfg := client.Config{URL: url, Token: token, Device: device}
		if def != nil {
			cfg.Migrations = map[string]*migrate.Definition{"notes": def}
		}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hello(ctx); err != nil {
			t.Fatal(err)
		}
		r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}, FreshFor: -1})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	v1, err := migrate.Parse([]byte(`{"version": 1, "steps": []}`))
	if err != nil {
		t.Fatal(err)
	}
	laptop, phone := replica("laptop", v1), replica("phone", nil)
	for _, f := range [][2]string{{"street", "Main St"}, {"city", "Springfield"}} {
		if err := laptop.Set("notes", "home", f[0], f[1]); err != nil {
			t.Fatal(err)
		}
		if err := laptop.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		now.Add(1000)
	}
	// The server has collected notes since now.
	if _, err := eng1.Collect(ctx); err != nil {
		t.Fatal(err)
	}
	current.Store(&next)

	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := phone.Delete("notes", "home"); err != nil {
		t.Fatal(err)
	}
	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	now.Add((2 * time.Hour).Milliseconds())
	if _, err := phone.Client().Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	reports, err := eng2.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(reports) != 1 || reports[0].Records != 1 {
		t.Fatalf("collect: %+v, want home removed", reports)
	}

	if _, err := laptop.Client().Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if err := laptop.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := liveIDs(laptop); len(got) != 0 {
		rec, _ := laptop.Get("notes", "home")
		t.Fatalf("the laptop holds %v (home: %+v), deleted and collected everywhere else", got, rec)
	}
	if got := liveIDs(phone); len(got) != 0 {
		t.Fatalf("the phone holds %v", got)
	}
}
