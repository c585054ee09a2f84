package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
)

// The engine's own writes (Put, Update, Unset, Delete) come after what the
// record already holds, whichever instance put it there. A client's clock
// may run up to MaxDrift ahead, and the stamps of its writes with it; the
// instance that took them observed them, but another instance on the same
// store did not. There, a write made after reading the record stamped
// with its own clock alone lost to the client's earlier write, and the
// call still returned nil: the write was lost without a word.
func TestOwnWritesComeAfterWhatTheRecordHolds(t *testing.T) {
	ahead := 4 * time.Minute // within crdt.DefaultMaxDrift
	for _, tc := range []struct {
		name  string
		write func(ctx context.Context, b *engine.Engine) error
		want  engine.Doc // nil: the record is gone
	}{
		{"put", func(ctx context.Context, b *engine.Engine) error {
			return b.Put(ctx, "notes", "n1", engine.Doc{"title": "server"})
		}, engine.Doc{"title": "server"}},
		{"update", func(ctx context.Context, b *engine.Engine) error {
			return b.Update(ctx, "notes", "n1", engine.Doc{"title": "server"})
		}, engine.Doc{"title": "server", "done": false}},
		{"unset", func(ctx context.Context, b *engine.Engine) error {
			return b.Unset(ctx, "notes", "n1", "done")
		}, engine.Doc{"title": "client"}},
		{"delete", func(ctx context.Context, b *engine.Engine) error {
			return b.Delete(ctx, "notes", "n1")
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st := memory.New()
			a, b := openInstanceOn(t, st), openInstanceOn(t, st)
			// A client whose clock runs ahead pushes through instance a.
			wall := time.Now().Add(ahead).UnixMilli()
			rec := crdt.Record{ID: "n1", Fields: map[string]crdt.Field{
				"title": {Stamp: crdt.Stamp{Wall: wall, Replica: "client_d"}, Value: mustValue(t, "client")},
				"done":  {Stamp: crdt.Stamp{Wall: wall, Replica: "client_d"}, Value: mustValue(t, false)},
			}}
			res, err := a.Apply(ctx, []crdt.Change{{Collection: "notes", Record: rec}})
			if err != nil || res[0].Err != nil {
				t.Fatalf("client push: %v %+v", err, res)
			}
			// Instance b, which never saw that stamp, writes after reading.
			if err := tc.write(ctx, b); err != nil {
				t.Fatalf("%s on the other instance: %v", tc.name, err)
			}
			for name, e := range map[string]*engine.Engine{"a": a, "b": b} {
				got, err := e.Get(ctx, "notes", "n1")
				if tc.want == nil {
					if !errors.Is(err, engine.ErrNotFound) {
						t.Fatalf("read through %s after the delete: %v %v, want ErrNotFound", name, got, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("read through %s: %v", name, err)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("read through %s after %s: %v, want %v", name, tc.name, got, tc.want)
				}
				for k, v := range tc.want {
					if got[k] != v {
						t.Fatalf("read through %s after %s: %v, want %v", name, tc.name, got, tc.want)
					}
				}
			}
		})
	}
}

// openInstanceOn opens one more server instance on st, with the real clock.
func openInstanceOn(t *testing.T, st *memory.Store) *engine.Engine {
	t.Helper()
	e, err := engine.Open(engine.Config{Store: st, PollInterval: -1, CollectEvery: -1, CollectGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func mustValue(t *testing.T, v any) []byte {
	t.Helper()
	b, err := crdt.EncodeValue(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
