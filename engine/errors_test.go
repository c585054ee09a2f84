package engine

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestErrorFamily checks that a refusal matches its sentinel whichever
// layer the caller names (crdt, stores, engine) and that the message names
// the operation the caller made.
func TestErrorFamily(t *testing.T) {
	e := openEngine(t, "srv", &fakeClock{ms: 1_000_000})
	ctx := context.Background()
	big := strings.Repeat("x", crdt.MaxRecordBytes)
	for _, tc := range []struct {
		name    string
		call    func() error
		op      string
		targets []error
	}{
		{"put too large", func() error { return e.Put(ctx, "todos", "t1", Doc{"v": big}) }, "put todos/t1",
			[]error{crdt.ErrTooLarge, stores.ErrTooLarge, ErrTooLarge}},
		{"update too large", func() error { return e.Update(ctx, "todos", "t1", Doc{"v": big}) }, "update todos/t1",
			[]error{crdt.ErrTooLarge, stores.ErrTooLarge, ErrTooLarge}},
		{"put bad collection", func() error { return e.Put(ctx, "bad name", "t1", Doc{"v": 1}) }, "put bad name/t1",
			[]error{crdt.ErrInvalid, stores.ErrInvalid, ErrInvalid}},
		{"get bad collection", func() error { _, err := e.Get(ctx, "bad name", "t1"); return err }, "get bad name/t1",
			[]error{crdt.ErrInvalid, stores.ErrInvalid, ErrInvalid}},
		{"delete bad id", func() error { return e.Delete(ctx, "todos", "") }, "delete todos/",
			[]error{crdt.ErrInvalid, stores.ErrInvalid, ErrInvalid}},
		{"unset bad field", func() error { return e.Unset(ctx, "todos", "t1", "") }, "unset todos/t1",
			[]error{crdt.ErrInvalid, stores.ErrInvalid, ErrInvalid}},
		{"get missing", func() error { _, err := e.Get(ctx, "todos", "nope"); return err }, "get todos/nope",
			[]error{stores.ErrNotFound, ErrNotFound}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("got no error")
			}
			for _, target := range tc.targets {
				if !errors.Is(err, target) {
					t.Errorf("got %q, want it to match %q", err, target)
				}
			}
			if !strings.HasPrefix(err.Error(), tc.op+": ") {
				t.Errorf("got %q, want it to start with %q", err, tc.op+": ")
			}
		})
	}
}
