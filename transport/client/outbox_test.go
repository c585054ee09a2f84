package client

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// Fault modes of a push in the outbox model.
const (
	modeOK   = iota
	modeDown // 503 before applying anything
	modeLost // applied, then the connection drops before the answer
)

// faultyServer wraps f's handler: pushes fail as its mode says.
func faultyServer(t *testing.T, f *fakeServer) *atomic.Int32 {
	var mode atomic.Int32
	inner := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != proto.PathPush {
			inner.ServeHTTP(w, r)
			return
		}
		switch mode.Load() {
		case modeDown:
			writeError(w, http.StatusServiceUnavailable, proto.CodeUnavailable, "down")
		case modeLost:
			inner.ServeHTTP(httptest.NewRecorder(), r)
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
		default:
			inner.ServeHTTP(w, r)
		}
	})
	return &mode
}

// TestOutboxModel drives a Replica through random writes, pushes that fail
// before or after the server applied them, and pulls, against a model: the
// outbox is exactly the writes not yet acknowledged, in order; the server
// holds every acknowledged write; local state holds every write. After a
// final clean sync, local state, server state and the merge of every write
// are equal.
func TestOutboxModel(t *testing.T) {
	f := newFakeServer(t)
	mode := faultyServer(t, f)
	var run atomic.Int64
	rapid.Check(t, func(rt *rapid.T) {
		coll := fmt.Sprint("m", run.Add(1))
		c, err := New(Config{URL: f.srv.URL, Replica: "r" + coll, Backoff: Backoff{MaxAttempts: 1}})
		if err != nil {
			rt.Fatal(err)
		}
		r, err := NewReplica(c, ReplicaConfig{Collections: []string{coll}})
		if err != nil {
			rt.Fatal(err)
		}
		var written, pending []crdt.Change
		ctx := t.Context()
		ids := []string{"a", "b", "c"}
		fields := []string{"x", "y"}

		checkInvariants := func() {
			got := r.Pending()
			if len(got) != len(pending) {
				rt.Fatalf("outbox holds %d changes, model %d", len(got), len(pending))
			}
			for i := range got {
				if !got[i].Record.Equal(pending[i].Record) {
					rt.Fatalf("outbox[%d] = %s, model %s", i, got[i].Record.ID, pending[i].Record.ID)
				}
			}
			acked := len(written) - len(pending)
			for _, ch := range written[:acked] {
				e, err := f.eng.GetRecord(ctx, coll, ch.Record.ID)
				if err != nil {
					rt.Fatalf("acknowledged change to %s missing on the server: %v", ch.Record.ID, err)
				}
				if _, changed := crdt.Merge(e.Record, ch.Record); changed {
					rt.Fatalf("acknowledged change to %s not held by the server", ch.Record.ID)
				}
			}
			for _, ch := range written {
				local, _ := r.Get(coll, ch.Record.ID)
				if _, changed := crdt.Merge(local, ch.Record); changed {
					rt.Fatalf("local write to %s not held locally", ch.Record.ID)
				}
			}
		}

		rt.Repeat(map[string]func(*rapid.T){
			"write": func(rt *rapid.T) {
				id := rapid.SampledFrom(ids).Draw(rt, "id")
				field := rapid.SampledFrom(fields).Draw(rt, "field")
				var err error
				switch rapid.IntRange(0, 2).Draw(rt, "op") {
				case 0:
					err = r.Set(coll, id, field, rapid.IntRange(0, 9).Draw(rt, "v"))
				case 1:
					err = r.Unset(coll, id, field)
				case 2:
					err = r.Delete(coll, id)
				}
				if err != nil {
					rt.Fatal(err)
				}
				p := r.Pending()
				written = append(written, p[len(p)-1])
				pending = append(pending, p[len(p)-1])
			},
			"flush": func(rt *rapid.T) {
				m := rapid.IntRange(modeOK, modeLost).Draw(rt, "mode")
				mode.Store(int32(m))
				err := r.Flush(ctx)
				mode.Store(modeOK)
				switch {
				case m == modeOK && err != nil:
					rt.Fatalf("flush: %v", err)
				case m != modeOK && len(pending) > 0 && err == nil:
					rt.Fatal("a failed push reported success")
				case m == modeOK:
					pending = nil
				}
			},
			"pull": func(rt *rapid.T) {
				if err := r.Pull(ctx); err != nil {
					rt.Fatalf("pull: %v", err)
				}
			},
			"": func(rt *rapid.T) { checkInvariants() },
		})

		if err := r.Sync(ctx); err != nil {
			rt.Fatal(err)
		}
		pending = nil
		checkInvariants()
		model := map[string]crdt.Record{}
		for _, ch := range written {
			rec := model[ch.Record.ID]
			rec.Merge(ch.Record)
			model[ch.Record.ID] = rec
		}
		local := r.Records(coll)
		for _, id := range slices.Sorted(maps.Keys(model)) {
			e, err := f.eng.GetRecord(ctx, coll, id)
			if err != nil {
				rt.Fatalf("%s: %v", id, err)
			}
			if !e.Record.Equal(model[id].Normalize()) || !local[id].Normalize().Equal(e.Record) {
				rt.Fatalf("%s: server %+v, local %+v, model %+v", id, e.Record, local[id], model[id])
			}
		}
		if len(local) != len(model) {
			rt.Fatalf("local has %d records, model %d", len(local), len(model))
		}
	})
}
