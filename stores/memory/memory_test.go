package memory_test

import (
	"testing"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/storetest"
)

func newStore(testing.TB) stores.Store { return memory.New() }

func TestConformance(t *testing.T) { storetest.Run(t, newStore) }

func BenchmarkStore(b *testing.B) { storetest.Bench(b, newStore) }
