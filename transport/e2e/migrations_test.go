package e2e

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

const (
	schemaV1 = `{"version": 1, "steps": []}`
	schemaV2 = `{"version": 2, "steps": [{"to": 2, "ops": [
		{"op": "rename", "from": "title", "to": "name"},
		{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "},
		{"op": "default", "field": "priority", "value": 0}]}]}`
	schemaV3 = `{"version": 3, "steps": [{"to": 2, "ops": [
		{"op": "rename", "from": "title", "to": "name"},
		{"op": "split", "from": "who", "to": ["first", "last"], "sep": " "},
		{"op": "default", "field": "priority", "value": 0}]},
		{"to": 3, "ops": [{"op": "drop", "field": "first"}]}]}`
)

// TestSchemaVersionsAcrossRestart runs a collection on the embedded store
// through a server restart that installs its migration: a client of
// version 1 writes before; after, clients of versions 1 and 2 write and
// read the same records, each in its own shape, over pulls and live
// subscriptions; the old client's untranslatable change is refused alone;
// a client ahead of the server is answered schema_ahead; a record sealed
// at version 1 restores at version 1 only.
func TestSchemaVersionsAcrossRestart(t *testing.T) {
	const coll = "e2e.notes"
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "convergo.db")
	def := func(src string) *migrate.Definition {
		d, err := migrate.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	rules, err := engine.ParseRules([]byte(`{"` + coll + `": {"migrations": ` + schemaV2 + `}}`))
	if err != nil {
		t.Fatal(err)
	}

	// serve runs a server with rules on the store file until stop.
	serve := func(rules []engine.Rule) (url string, jwt *transport.JWT, stop func()) {
		st, err := bolt.Open(ctx, path, bolt.Options{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		eng, err := engine.Open(engine.Config{Store: st, PollInterval: time.Second, Logger: testLogger(t), Rules: rules})
		if err != nil {
			t.Fatal(err)
		}
		if jwt, err = transport.NewJWT(secret, nil); err != nil {
			t.Fatal(err)
		}
		srv, err := transport.New(transport.Config{Engine: eng, Authorizer: jwt, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv)
		var once sync.Once
		stop = func() {
			once.Do(func() {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				srv.Shutdown(sctx)
				hs.CloseClientConnections()
				hs.Close()
				eng.Close()
				st.Close()
			})
		}
		t.Cleanup(stop)
		return hs.URL, jwt, stop
	}
	newVersioned := func(url string, jwt *transport.JWT, device string, d *migrate.Definition) *client.Client {
		tok, err := jwt.Issue("ann", []string{coll}, []string{coll}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(client.Config{URL: url, Token: tok, Device: device, Logger: testLogger(t),
			Backoff:    client.Backoff{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond, MaxAttempts: 3},
			Migrations: map[string]*migrate.Definition{coll: d}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hello(ctx); err != nil {
			t.Fatal(err)
		}
		return c
	}
	write := func(c *client.Client, id string, fields map[string]any) client.Result {
		t.Helper()
		s, err := c.Now()
		if err != nil {
			t.Fatal(err)
		}
		r := crdt.Record{ID: id, Fields: map[string]crdt.Field{}}
		for k, v := range fields {
			b, err := crdt.EncodeValue(v)
			if err != nil {
				t.Fatal(err)
			}
			r.Fields[k] = crdt.Field{Stamp: s, Value: b}
		}
		res, err := c.Push(ctx, []crdt.Change{{Collection: coll, Record: r}})
		if err != nil {
			t.Fatal(err)
		}
		return res[0]
	}
	values := func(r crdt.Record) map[string]any {
		out := map[string]any{}
		for k, v := range r.Values() {
			var x any
			if err := crdt.DecodeValue(v, &x); err != nil {
				t.Fatal(err)
			}
			out[k] = x
		}
		return out
	}
	expect := func(who string, got map[string]crdt.Record, want map[string]map[string]any) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: got %d records, want %d", who, len(got), len(want))
		}
		for id, w := range want {
			g := values(got[id])
			if len(g) != len(w) {
				t.Errorf("%s: %s is %v, want %v", who, id, g, w)
				continue
			}
			for k, v := range w {
				if g[k] != v {
					t.Errorf("%s: %s is %v, want %v", who, id, g, w)
					break
				}
			}
		}
	}

	// Before: no migrations; a client of version 1 writes.
	url, jwt, stop := serve(nil)
	old := newVersioned(url, jwt, "old", def(schemaV1))
	if r := write(old, "n1", map[string]any{"title": "before", "who": "Ada Lovelace"}); r.Status != client.StatusApplied {
		t.Fatalf("write before: %+v", r)
	}
	stop()

	// After: the restart installs version 2.
	url, jwt, _ = serve(rules)
	v1 := newVersioned(url, jwt, "v1", def(schemaV1))
	v2 := newVersioned(url, jwt, "v2", def(schemaV2))

	// Live subscribers of both versions, from the beginning.
	type seen struct {
		mu   sync.Mutex
		recs map[string]crdt.Record
	}
	live := func(c *client.Client) *seen {
		s := &seen{recs: map[string]crdt.Record{}}
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		t.Cleanup(func() { cancel(); <-done })
		go func() {
			defer close(done)
			c.Live(lctx, map[string][]byte{coll: nil}, func(_ string, p client.Page) {
				s.mu.Lock()
				defer s.mu.Unlock()
				for _, r := range p.Records {
					s.recs[r.ID] = r
				}
			}, nil)
		}()
		return s
	}
	live1, live2 := live(v1), live(v2)

	if r := write(v1, "n2", map[string]any{"title": "from v1", "who": "Grace Hopper"}); r.Status != client.StatusApplied {
		t.Fatalf("v1 write: %+v", r)
	}
	if r := write(v2, "n3", map[string]any{"name": "from v2", "first": "Alan", "last": "Turing"}); r.Status != client.StatusApplied {
		t.Fatalf("v2 write: %+v", r)
	}
	if r := write(v2, "n1", map[string]any{"name": "renamed by v2"}); r.Status != client.StatusApplied {
		t.Fatalf("v2 edit of n1: %+v", r)
	}
	if r := write(v1, "n4", map[string]any{"who": 5}); r.Status != client.StatusRefused || !errors.Is(r.Err, client.ErrUntranslatable) {
		t.Fatalf("untranslatable write: got %+v, want refused untranslatable", r)
	}

	want1 := map[string]map[string]any{
		"n1": {"title": "renamed by v2", "who": "Ada Lovelace"},
		"n2": {"title": "from v1", "who": "Grace Hopper"},
		"n3": {"title": "from v2", "who": "Alan Turing"},
	}
	want2 := map[string]map[string]any{
		"n1": {"name": "renamed by v2", "first": "Ada", "last": "Lovelace"},
		"n2": {"name": "from v1", "first": "Grace", "last": "Hopper"},
		"n3": {"name": "from v2", "first": "Alan", "last": "Turing"},
	}
	expect("v1 pull", pullAll(t, v1, coll), want1)
	expect("v2 pull", pullAll(t, v2, coll), want2)

	// The live subscribers see the same, each in its version.
	deadline := time.Now().Add(20 * time.Second)
	for _, l := range []struct {
		name string
		s    *seen
		want map[string]map[string]any
	}{{"v1 live", live1, want1}, {"v2 live", live2, want2}} {
		for {
			l.s.mu.Lock()
			done := len(l.s.recs) == 3 && values(l.s.recs["n1"])[map[bool]string{true: "title", false: "name"}[l.name == "v1 live"]] == "renamed by v2"
			l.s.mu.Unlock()
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not caught up: %v", l.name, l.s.recs)
			}
			time.Sleep(20 * time.Millisecond)
		}
		l.s.mu.Lock()
		expect(l.name, l.s.recs, l.want)
		l.s.mu.Unlock()
	}

	// A client ahead of the server waits: schema_ahead.
	ahead := newVersioned(url, jwt, "v3", def(schemaV3))
	if _, err := ahead.Pull(ctx, coll, nil, 0); !errors.Is(err, client.ErrSchemaAhead) {
		t.Fatalf("pull at version 3: got %v, want ErrSchemaAhead", err)
	}
	if _, err := ahead.Push(ctx, []crdt.Change{{Collection: coll, Record: crdt.DeleteRecord("n1", mustNow(t, ahead))}}); !errors.Is(err, client.ErrSchemaAhead) {
		t.Fatalf("push at version 3: got %v, want ErrSchemaAhead", err)
	}

	// A record sealed at version 1 restores at version 1, not at 2.
	p, err := v1.Pull(ctx, coll, nil, 0)
	if err != nil || len(p.Seals) != len(p.Records) || len(p.Records) == 0 {
		t.Fatalf("pull: %d records, %d seals, %v", len(p.Records), len(p.Seals), err)
	}
	sealed := []proto.SealedRecord{{Record: p.Records[0], Seal: p.Seals[0]}}
	res, err := v1.Restore(ctx, coll, sealed)
	if err != nil || res[0].Status == client.StatusRefused {
		t.Fatalf("restore at version 1: %+v %v", res, err)
	}
	res, err = v2.Restore(ctx, coll, sealed)
	if err != nil || res[0].Status != client.StatusRefused || !errors.Is(res[0].Err, client.ErrBadSeal) {
		t.Fatalf("restore of a version 1 record at version 2: got %+v %v, want bad_seal", res, err)
	}
}

func mustNow(t *testing.T, c *client.Client) crdt.Stamp {
	t.Helper()
	s, err := c.Now()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
