package redis

import (
	"context"
	"testing"
	"time"
)

// StoreTime reads the server's clock, on a single node and on a cluster
// node: the machine's clock and the servers' are one here.
func TestStoreTime(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		s := openStore(t, tg, Options{})
		before := time.Now()
		at, res, err := s.StoreTime(context.Background())
		after := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		if res != time.Microsecond {
			t.Fatalf("resolution %v, want 1µs", res)
		}
		if at.Before(before.Add(-time.Millisecond)) || at.After(after.Add(time.Millisecond)) {
			t.Fatalf("store time %v, outside the call [%v, %v]", at, before, after)
		}
	})
}
