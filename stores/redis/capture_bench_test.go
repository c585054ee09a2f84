package redis

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// BenchmarkCapture measures, in one run on a single Redis, raw HSET
// throughput of 8 plain writers, then the same writers' HSETs on captured
// keys: captured writes/s (from the first write until the last change was
// applied to the store) and capture latency (from an HSET's reply to the
// store's Apply of its change), p50 and p99. Run it with -benchtime=1x;
// each iteration writes captureBenchKeys keys.
func BenchmarkCapture(b *testing.B) {
	tg := singleTarget(b)
	const writers, keys = 8, captureBenchKeys
	for b.Loop() {
		prefix := uniquePrefix()
		cleanupPrefix(b, tg, prefix)
		app := goredis.NewClient(&goredis.Options{Addr: tg.addrs[0], PoolSize: writers})
		write := func(pattern string, written []time.Time) time.Duration {
			start := time.Now()
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for i := w; i < keys; i += writers {
						if err := app.HSet(context.Background(), fmt.Sprintf(pattern, i), "title", "todo "+strconv.Itoa(i), "done", "no").Err(); err != nil {
							b.Error(err)
							return
						}
						if written != nil {
							written[i] = time.Now()
						}
					}
				})
			}
			wg.Wait()
			return time.Since(start)
		}
		raw := write(prefix+"raw:%d", nil)

		s := openStore(b, tg, Options{KeyPrefix: prefix, Capture: []CaptureRule{{Collection: "todos", KeyPattern: prefix + "app:todo:*"}}})
		written := make([]time.Time, keys)
		applied := make([]time.Time, keys)
		var mu sync.Mutex
		n := 0
		done := make(chan struct{})
		stop := s.Capture(stores.CaptureSink{Apply: func(ctx context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
			if _, err := s.Apply(ctx, changes); err != nil {
				return nil, err
			}
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range changes {
				i, _ := strconv.Atoi(c.Record.ID)
				if applied[i].IsZero() {
					applied[i] = now
					n++
					if n == keys {
						close(done)
					}
				}
			}
			return make([]stores.CaptureResult, len(changes)), nil
		}})
		time.Sleep(200 * time.Millisecond) // subscriptions up
		start := time.Now()
		write(prefix+"app:todo:%d", written)
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			b.Fatalf("captured %d of %d", n, keys)
		}
		elapsed := applied[0]
		for _, t := range applied {
			if t.After(elapsed) {
				elapsed = t
			}
		}
		stop()
		app.Close()
		lat := make([]time.Duration, keys)
		for i := range lat {
			lat[i] = applied[i].Sub(written[i])
		}
		slices.Sort(lat)
		b.ReportMetric(float64(keys)/raw.Seconds(), "raw-hset/s")
		b.ReportMetric(float64(keys)/elapsed.Sub(start).Seconds(), "captured/s")
		b.ReportMetric(float64(lat[keys/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[keys*99/100].Microseconds())/1000, "p99-ms")
	}
}

const captureBenchKeys = 20000
