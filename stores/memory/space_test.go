package memory_test

import (
	"runtime"
	"testing"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/storetest"
)

// BenchmarkSpace: storetest.BenchSpace on the memory store, whose live
// bytes are the process's heap after a GC, less the heap before the first
// store was made (CONVERGO_SPACE_BENCH=1).
func BenchmarkSpace(b *testing.B) {
	heap := func() int64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	base := heap()
	storetest.BenchSpace(b, func(testing.TB) stores.Store { return memory.New() },
		func(testing.TB, stores.Store) int64 { return heap() - base }, 1_000_000, 100_000)
}
