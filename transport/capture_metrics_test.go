package transport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/storetest"
)

// What capture did reaches /metrics: a plain hash another program wrote
// and the engine applied, one the engine refused for good (over the field
// limit) and a key that maps to no change (not a hash) are each counted,
// with no label that names a collection or a key.
func TestMetricsCountCaptures(t *testing.T) {
	addr := storetest.Endpoint(t, "CONVERGO_REDIS_ADDR")
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "capmetrics:" + hex.EncodeToString(b[:]) + ":"
	ctx := context.Background()
	app := goredis.NewClient(&goredis.Options{Addr: addr})
	t.Cleanup(func() {
		// The test's keys alone, by their prefix.
		iter := app.Scan(context.Background(), 0, prefix+"*", 1000).Iterator()
		for iter.Next(context.Background()) {
			app.Del(context.Background(), iter.Val())
		}
		app.Close()
	})
	st, err := redis.Open(ctx, redis.Options{Addrs: []string{addr}, KeyPrefix: prefix,
		Capture:         []redis.CaptureRule{{Collection: "todos", KeyPattern: prefix + "app:todo:*"}},
		CaptureInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ts := newTestServer(t, nil)
	ts.serveOver(t, st)
	for _, name := range []string{`convergo_capture_applied_total`, `convergo_capture_rejected_total{reason="refused"}`,
		`convergo_capture_rejected_total{reason="unmappable"}`, `convergo_capture_overflowed_total`, `convergo_capture_parked_bytes`} {
		if v := ts.metric(t, name); v != 0 {
			t.Fatalf("%s %v before any capture, want 0", name, v)
		}
	}

	key := func(id string) string { return prefix + "app:todo:" + id }
	if err := app.HSet(ctx, key("1"), "title", "milk").Err(); err != nil {
		t.Fatal(err)
	}
	big := make([]any, 0, 2*(crdt.MaxFieldsPerRecord+1))
	for i := range crdt.MaxFieldsPerRecord + 1 {
		big = append(big, fmt.Sprintf("f%d", i), "v")
	}
	if err := app.HSet(ctx, key("big"), big...).Err(); err != nil {
		t.Fatal(err)
	}
	if err := app.Set(ctx, key("text"), "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Each write once; a key that stays unmappable is counted again at
	// each reconciliation pass that meets it (Redis), so at least once.
	want := []struct {
		name  string
		n     float64
		exact bool
	}{
		{`convergo_capture_applied_total`, 1, true},
		{`convergo_capture_rejected_total{reason="refused"}`, 1, true},
		{`convergo_capture_rejected_total{reason="unmappable"}`, 1, false},
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, w := range want {
		for {
			v := ts.metric(t, w.name)
			if v == w.n || v > w.n && !w.exact {
				break
			}
			if v > w.n || time.Now().After(deadline) {
				t.Fatalf("%s %v, want %v", w.name, v, w.n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
