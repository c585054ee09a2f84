package stores

import (
	"testing"
	"time"
)

func TestNextEpoch(t *testing.T) {
	at := time.Unix(1_764_892_800, 0) // 2025-12-05
	tests := []struct {
		name string
		cur  uint64
		now  time.Time
		want uint64
	}{
		{"a counter behind the clock jumps to it", 0, at, 1_764_892_800},
		{"one counted up from the same value a second later is later", 0, at.Add(time.Second), 1_764_892_801},
		{"a counter at the clock counts on", 1_764_892_800, at, 1_764_892_801},
		{"a counter ahead of the clock counts on", 1_764_892_900, at, 1_764_892_901},
		{"a clock before 1970 is no clock", 5, time.Unix(-10, 0), 6},
		{"the zero time too", 5, time.Time{}, 6},
		// MetaOf keeps 32 bits of a counter: a clock past them (a host's
		// clock set wrong, or the year 2106) would put the counter where
		// its epochs wrap to small numbers, and every bump after it too.
		{"a clock past the 32 bits MetaOf keeps is no clock", 1_764_892_800, time.Unix(1<<32+5, 0), 1_764_892_801},
		{"the last second they hold is", 5, time.Unix(1<<32-1, 0), 1<<32 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := NextEpoch(tt.cur, tt.now); got != tt.want {
				t.Errorf("NextEpoch(%d, %v) = %d, want %d", tt.cur, tt.now, got, tt.want)
			}
		})
	}
}

// TestEpochsOfMeta: MetaOf keeps 32 bits of each counter, the store-wide
// one above the collection's, and the readers take them apart again;
// IsStoreEpoch compares a counter as a store holds it with one read back,
// modulo 2^32.
func TestEpochsOfMeta(t *testing.T) {
	m := MetaOf(1<<32+7, 1<<33+5, 3)
	if got := StoreEpochOf(m); got != 7 {
		t.Errorf("StoreEpochOf = %d, want 7", got)
	}
	if got := LocalEpochOf(m); got != 5 {
		t.Errorf("LocalEpochOf = %d, want 5", got)
	}
	if got := LocalLostOf(m); got != 3 {
		t.Errorf("LocalLostOf = %d, want 3", got)
	}
	for _, tt := range []struct {
		counter, from uint64
		want          bool
	}{
		{7, 7, true},
		{1<<32 + 7, 7, true},
		{8, 7, false},
		{1<<32 + 8, 7, false},
	} {
		if got := IsStoreEpoch(tt.counter, tt.from); got != tt.want {
			t.Errorf("IsStoreEpoch(%d, %d) = %v, want %v", tt.counter, tt.from, got, tt.want)
		}
	}
}

// TestLostBefore: the latest loss is read in the larger of the
// store-wide counter and the collection's own at its latest loss, and
// the time returned is after the second that counter names; a rebuild,
// which raises the collection's counter alone, moves nothing.
func TestLostBefore(t *testing.T) {
	const at = 1_764_892_800 // 2025-12-05, a counter NextEpoch raised
	tests := []struct {
		name                   string
		store, local, lostHere uint64
		want                   int64
	}{
		{"never lost", 0, 0, 0, 1},
		{"counters not by the clock read as long ago", 3, 7, 5, 6},
		{"the store's bump", at, 2, 0, at + 1},
		{"a loss of the collection after it", at, at + 60, at + 60, at + 61},
		{"a loss of the collection before it", at, at - 60, at - 60, at + 1},
		{"a rebuild after the loss", 0, at + 60, at, at + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := MetaOf(tt.store, tt.local, tt.lostHere)
			if got := LostBefore(m); !got.Equal(time.Unix(tt.want, 0)) {
				t.Errorf("LostBefore(%+v) = %v, want %v", m, got.Unix(), tt.want)
			}
		})
	}
}
