package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
)

// BumpStore is a store that bumps its store-wide counter only from the
// value read (every store of this module).
type BumpStore interface {
	stores.Store
	stores.EpochsBumperFrom
}

// LostBumpFactory opens a store whose clock reads at, in which the first
// bump of the store-wide counter (storeWide) or of collection "notes"'s
// counters is applied and its reply lost, so that the store's client tries
// it again: a timeout or a reset connection after the write, as each store
// injects it. met reports whether the fault was met.
type LostBumpFactory func(t *testing.T, storeWide bool) (s BumpStore, met func() bool)

// CheckBumpReplyLost checks that a bump whose reply was lost happened once
// and says so: BumpEpochsFrom of the counter read (the engine's proof that
// the store went back, which it logs and counts only when it reports true)
// reports true with the counter one bump on, and BumpEpoch moves the
// collection's epoch and lost counters one bump, not two.
func CheckBumpReplyLost(t *testing.T, at time.Time, open LostBumpFactory) {
	t.Helper()
	ctx := context.Background()
	meta := func(t *testing.T, s BumpStore) stores.Meta {
		t.Helper()
		m, err := s.Meta(ctx, "notes")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	t.Run("BumpEpochsFrom", func(t *testing.T) {
		s, met := open(t, true)
		from := stores.StoreEpochOf(meta(t, s))
		bumped, err := s.BumpEpochsFrom(ctx, from)
		if !met() {
			t.Fatal("the fault was not met")
		}
		if got, want := stores.StoreEpochOf(meta(t, s)), stores.NextEpoch(from, at); got != want || err != nil || !bumped {
			t.Fatalf("BumpEpochsFrom(%d) = %v, %v with the store-wide counter now %d; want true, nil and %d (one bump, reported)", from, bumped, err, got, want)
		}
	})
	t.Run("BumpEpoch", func(t *testing.T) {
		s, met := open(t, false)
		before := stores.LocalEpochOf(meta(t, s))
		err := s.BumpEpoch(ctx, "notes", stores.HistoryLost)
		if !met() {
			t.Fatal("the fault was not met")
		}
		m := meta(t, s)
		want := stores.NextEpoch(before, at)
		if got, lost := stores.LocalEpochOf(m), stores.LocalLostOf(m); err != nil || got != want || lost != want {
			t.Fatalf("BumpEpoch: %v, the epoch now %d (lost %d); want nil and %d for both (one bump)", err, got, lost, want)
		}
	})
}
