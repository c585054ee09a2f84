package client

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestBackoffDelayBounds(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b := Backoff{
			Initial: time.Duration(rapid.Int64Range(0, int64(time.Second)).Draw(t, "initial")),
			Max:     time.Duration(rapid.Int64Range(0, int64(time.Minute)).Draw(t, "max")),
		}.withDefaults()
		attempt := rapid.IntRange(0, 200).Draw(t, "attempt")
		floor := time.Duration(rapid.Int64Range(0, int64(time.Minute)).Draw(t, "floor"))
		ceil := b.Initial
		for range min(attempt, 62) {
			if ceil >= b.Max {
				break
			}
			ceil *= 2
		}
		ceil = min(ceil, b.Max)
		d := b.delay(attempt, floor)
		if d < floor || d > max(ceil, floor) {
			t.Fatalf("delay(%d, %s) = %s, want within [%s, %s]", attempt, floor, d, floor, max(ceil, floor))
		}
	})
}

func TestBackoffJitterSpreads(t *testing.T) {
	// Full jitter: many clients retrying at once must not pick one delay.
	b := Backoff{Initial: time.Second, Max: time.Minute}.withDefaults()
	seen := map[time.Duration]bool{}
	for range 100 {
		seen[b.delay(3, 0)] = true
	}
	if len(seen) < 50 {
		t.Fatalf("100 delays took only %d distinct values", len(seen))
	}
}
