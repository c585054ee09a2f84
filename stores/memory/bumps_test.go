package memory

import (
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// TestBumps runs the kit's bump checks on a store whose clock they set;
// a restore puts back the epoch counters as they were when saved.
func TestBumps(t *testing.T) {
	storetest.RunBumps(t, func(_ testing.TB, now func() time.Time) stores.Store {
		s := New()
		s.now = now
		return s
	}, func(_ testing.TB, st stores.Store, coll string) func() {
		s := st.(*Store)
		s.mu.Lock()
		defer s.mu.Unlock()
		epoch := s.epoch
		l, ok := s.epochs[coll]
		return func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.epoch = epoch
			if ok {
				s.epochs[coll] = l
			} else {
				delete(s.epochs, coll)
			}
		}
	})
}
