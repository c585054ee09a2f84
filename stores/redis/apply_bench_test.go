package redis

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
)

// BenchmarkApplyScript measures Store.Apply on a single Redis the way the
// server's apply benchmark loads it (8 writers, batches of 100 changes, each
// setting one field of a record picked among 100,000 that all exist), and
// reports the changes per second and Redis's own CPU per change (INFO cpu,
// main thread), without and with the written cache. Run it with a private
// Redis, -benchtime=1x:
//
//	CONVERGO_REDIS_ADDR=127.0.0.1:6390 go test ./stores/redis -run '^$' -bench ApplyScript -benchtime 1x
func BenchmarkApplyScript(b *testing.B) {
	b.Run("default", func(b *testing.B) { benchmarkApplyScript(b, Options{PoolSize: 64}) })
	// With every record in the written cache (cas.go).
	b.Run("written-cache", func(b *testing.B) { benchmarkApplyScript(b, Options{PoolSize: 64, WrittenCacheBytes: 32 << 20}) })
}

func benchmarkApplyScript(b *testing.B, opts Options) {
	tg := singleTarget(b)
	const writers, batch, records = 8, 100, 100_000
	ctx := context.Background()
	s := openStore(b, tg, opts)
	value, _ := crdt.EncodeValue("buy oat milk and a loaf of rye bread")
	stamp := func(w, i int) crdt.Stamp {
		return crdt.Stamp{Wall: time.Now().UnixMilli(), Logical: uint32(i), Replica: "bench-writer-" + strconv.Itoa(w)}
	}
	// Every record exists first, as after a while of the server benchmark.
	for start := 0; start < records; start += 1000 {
		changes := make([]crdt.Change, 1000)
		for i := range changes {
			changes[i] = crdt.Change{Collection: "todos", Record: crdt.SetField("todo-"+strconv.Itoa(start+i), "title", value, stamp(0, i))}
		}
		for c := 0; c < len(changes); c += batch {
			if _, err := s.Apply(ctx, changes[c:c+batch]); err != nil {
				b.Fatal(err)
			}
		}
	}
	for b.Loop() {
		cpu0 := redisCPU(b, s.client)
		own0 := processCPU(b)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		mallocs0 := ms.Mallocs
		fell0 := s.commits.fellBack.Load()
		read0 := s.commits.recordsRead.Load()
		var wg sync.WaitGroup
		var mu sync.Mutex
		total := 0
		start := time.Now()
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				n := 0
				for time.Since(start) < 3*time.Second {
					changes := make([]crdt.Change, batch)
					for i := range changes {
						changes[i] = crdt.Change{Collection: "todos", Record: crdt.SetField("todo-"+strconv.Itoa(rng.IntN(records)), "title", value, stamp(w+1, n))}
						n++
					}
					if _, err := s.Apply(ctx, changes); err != nil {
						b.Error(err)
						return
					}
				}
				mu.Lock()
				total += n
				mu.Unlock()
			})
		}
		wg.Wait()
		el := time.Since(start)
		cpu := redisCPU(b, s.client) - cpu0
		own := processCPU(b) - own0
		runtime.ReadMemStats(&ms)
		mallocs := ms.Mallocs - mallocs0
		b.ReportMetric(float64(total)/el.Seconds(), "changes/s")
		b.ReportMetric(cpu.Seconds()*1e6/float64(total), "redis-µs/change")
		// This process's CPU: the store's, and the writers' making of
		// the changes (the same on either side of a comparison).
		b.ReportMetric(own.Seconds()*1e6/float64(total), "go-µs/change")
		b.ReportMetric(float64(mallocs)/float64(total), "go-allocs/change")
		// Records the script merged itself: those of the calls it refused
		// because another writer had changed one of their records since
		// Go read it, sent again without a plan (cas.go).
		b.ReportMetric(float64(s.commits.fellBack.Load()-fell0)/float64(total), "merged-in-script/change")
		// Records read before the round trips: the written cache and the
		// earlier calls of a round give the others (cas.go).
		b.ReportMetric(float64(s.commits.recordsRead.Load()-read0)/float64(total), "read/change")
	}
}

// processCPU is this process's CPU time so far, user and system.
func processCPU(b *testing.B) time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		b.Fatal(err)
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}

// redisCPU is the Redis main thread's CPU time so far.
func redisCPU(b *testing.B, c goredis.UniversalClient) time.Duration {
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, f := range []string{"used_cpu_user_main_thread", "used_cpu_sys_main_thread"} {
		v, err := strconv.ParseFloat(strings.TrimSpace(infoField(info, f)), 64)
		if err != nil {
			b.Fatal(fmt.Errorf("INFO cpu %s: %w", f, err))
		}
		total += v
	}
	return time.Duration(total * float64(time.Second))
}
