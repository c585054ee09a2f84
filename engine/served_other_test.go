package engine

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/stores/memory"
)

// heldHead is a memory store whose next Head, once held, says so on
// entered and waits for release: the watch loop's read of a collection,
// held between the Resync that woke it and its read of the store's
// history.
type heldHead struct {
	*memory.Store
	mu      sync.Mutex
	entered chan struct{}
	release chan struct{}
}

func (h *heldHead) hold() (entered, release chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entered, h.release = make(chan struct{}), make(chan struct{})
	return h.entered, h.release
}

func (h *heldHead) Head(ctx context.Context, coll string) (uint64, error) {
	h.mu.Lock()
	entered, release := h.entered, h.release
	h.entered = nil
	h.mu.Unlock()
	if entered != nil {
		close(entered)
		<-release
	}
	return h.Store.Head(ctx, coll)
}

// TestNewHistoryWakesSubscribersAfterAnotherReaderPulledInIt: the store
// starts a new history, history lost, and another reader of the
// collection (a new one, or one reset already) pulls from the start in
// it before the watch loop has read it: the subscribers, served in the
// old history, are still told (they pull, and are reset). The new
// history's head is no higher than the one they were told, so nothing
// but that would make them pull until a writer wrote past it, and what
// is written at positions at or below their cursor would never reach
// them.
func TestNewHistoryWakesSubscribersAfterAnotherReaderPulledInIt(t *testing.T) {
	e, sub, old, release := subscriberServedInOldHistory(t)
	pullTo(t, e, "todos", nil) // another reader, from the start: served in the new history
	close(release)
	select {
	case h := <-sub.C():
		t.Logf("the subscriber was told head %d", h)
	case <-time.After(5 * time.Second):
		t.Fatal("the new history did not wake the subscriber served in the old one: another reader was served in the new history before the watch loop read it")
	}
	wantReset(t, e, "todos", old, ResetHistoryLost)
}

// subscriberServedInOldHistory sets the scene of the tests above and
// below: a subscriber of todos served in the store's history, then a new
// history (history lost) whose Resync has the watch loop read, held
// before its read of the head until release is closed. It returns the
// subscriber's cursor in the old history.
func subscriberServedInOldHistory(t *testing.T) (e *Engine, sub *Subscription, old []byte, release chan struct{}) {
	t.Helper()
	st := &heldHead{Store: memory.New()}
	t.Cleanup(func() { st.Close() })
	e = engineOn(t, st)
	write(t, e, "todos", 0, 5)
	sub, err := e.Subscribe("todos")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	old = pullTo(t, e, "todos", nil) // the subscriber's reader
	e.publish("todos", 5)
	<-sub.C()

	entered, release := st.hold()
	if err := st.BumpEpochs(context.Background()); err != nil { // its Resync wakes the watch loop
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the new history's Resync did not make the watch loop read")
	}
	return e, sub, old, release
}

// The engine remembers the histories pages were served in for a bounded
// number of collections. Past the bound it forgets them all, and a
// collection it no longer remembers must count as served in another
// history: the subscriber served in the old one is woken (a pull that
// finds nothing changed costs a round, a subscriber never told, every
// change at or below its cursor).
func TestNewHistoryWakesSubscribersAfterTheHistoriesServedWereForgotten(t *testing.T) {
	e, sub, old, release := subscriberServedInOldHistory(t)
	pullTo(t, e, "todos", nil) // served in the new history
	// Pages of as many other collections, served since: the engine forgets
	// what it remembered of todos.
	for i := range maxHistory {
		e.served.note(fmt.Sprintf("c%d", i), served{epoch: 1})
	}
	close(release)
	select {
	case h := <-sub.C():
		t.Logf("the subscriber was told head %d", h)
	case <-time.After(5 * time.Second):
		t.Fatalf("the new history did not wake the subscriber served in the old one once pages of %d other collections made the engine forget todos's", maxHistory)
	}
	wantReset(t, e, "todos", old, ResetHistoryLost)
}
