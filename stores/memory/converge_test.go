package memory_test

import (
	"testing"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/storetest"
)

func TestConverge(t *testing.T) {
	storetest.Converge(t, func(testing.TB) stores.Store { return memory.New() })
}
