package transport

import (
	"context"
	"testing"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
)

// An operator's deny or allow comes after the entry's last one, whichever
// instance wrote it. Two instances' clocks may differ by up to the
// engine's MaxClockSkew without either being off; stamped from the
// writing instance's clock alone, an allow made on the slower one after a
// deny made on the faster one lost to it (the subject stayed refused),
// and a deny made after an allow lost the same way (the subject was not
// refused), while both calls returned nil.
func TestDenyAndAllowComeAfterTheEntrysLast(t *testing.T) {
	ctx := context.Background()
	st := memory.New()
	open := func(ahead time.Duration) *engine.Engine {
		e, err := engine.Open(engine.Config{Store: st, PollInterval: -1, CollectEvery: -1, CollectGrace: -1,
			Now: func() time.Time { return time.Now().Add(ahead) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		if err := e.ClockHealth(); err != nil {
			t.Fatalf("an instance %v ahead: %v, want its clock within bounds", ahead, err)
		}
		return e
	}
	fast, slow := open(2*time.Minute), open(0)
	listed := func() map[string]bool {
		t.Helper()
		es, err := DenyEntries(ctx, slow)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, e := range es {
			out[e.ID] = true
		}
		return out
	}
	const alice, bob = DenySubject + "alice", DenySubject + "bob"

	if err := Deny(ctx, fast, DenyEntry{ID: alice, Reason: "left"}); err != nil {
		t.Fatal(err)
	}
	if err := Allow(ctx, slow, alice); err != nil {
		t.Fatal(err)
	}
	if listed()[alice] {
		t.Fatal("allowed on the slower instance after a deny on the faster one: still on the deny list")
	}

	if err := Allow(ctx, fast, bob); err != nil {
		t.Fatal(err)
	}
	if err := Deny(ctx, slow, DenyEntry{ID: bob, Reason: "lost laptop"}); err != nil {
		t.Fatal(err)
	}
	if !listed()[bob] {
		t.Fatal("denied on the slower instance after an allow on the faster one: not on the deny list")
	}
}
