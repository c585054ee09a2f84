package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Notifications are hints that may be late or merged: the checks wait for
// them up to notifyWait, and wait notifyQuiet to see that none came.
const (
	notifyWait  = 10 * time.Second
	notifyQuiet = 200 * time.Millisecond
)

// watcher records notifications without blocking the store.
type watcher struct {
	mu     sync.Mutex
	got    []stores.Notification
	signal chan struct{} // a notification arrived
	stop   func()
}

func watch(t testing.TB, s stores.Store) *watcher {
	t.Helper()
	w := &watcher{signal: make(chan struct{}, 1)}
	w.stop = s.Watch(func(n stores.Notification) {
		w.mu.Lock()
		w.got = append(w.got, n)
		w.mu.Unlock()
		select {
		case w.signal <- struct{}{}:
		default:
		}
	})
	if w.stop == nil {
		t.Fatal("Watch returned a nil stop function")
	}
	t.Cleanup(w.stop)
	return w
}

// mark returns a position in the notifications received so far.
func (w *watcher) mark() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.got)
}

// since returns the notifications for coll received after mark.
func (w *watcher) since(mark int, coll string) []stores.Notification {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []stores.Notification
	for _, n := range w.got[mark:] {
		if !n.Resync && n.Collection == coll {
			out = append(out, n)
		}
	}
	return out
}

// await waits for a notification that coll reached seq or beyond, and
// returns every notification for coll received until then.
func (w *watcher) await(t testing.TB, coll string, seq uint64) []stores.Notification {
	t.Helper()
	timeout := time.After(notifyWait)
	for {
		seen := w.since(0, coll)
		for i, n := range seen {
			if n.Seq >= seq {
				return seen[:i+1]
			}
		}
		select {
		case <-w.signal:
		case <-timeout:
			t.Fatalf("no notification for %s at seq %d or beyond within %s (got %v)", coll, seq, notifyWait, seen)
		}
	}
}

// settle gives late notifications time to arrive.
func settle() { time.Sleep(notifyQuiet) }

// testWatch checks that a change is followed by a notification with its
// collection and new head.
func testWatch(t *testing.T, f Factory) {
	s := open(t, f)
	w := watch(t, s)
	// A notification comes after the commit: a subscriber that pulls when
	// notified must find the change, or it could wait forever for the next
	// one. The check runs off the store's goroutine, since fn must not block.
	var (
		mu      sync.Mutex // guards stopped and checks.Add against checks.Wait
		stopped bool
		checks  sync.WaitGroup
		early   = make(chan string, 100)
	)
	stop := s.Watch(func(n stores.Notification) {
		mu.Lock()
		defer mu.Unlock()
		if n.Resync || stopped {
			return
		}
		checks.Add(1)
		go func() {
			defer checks.Done()
			if h, err := s.Head(context.Background(), n.Collection); err == nil && h < n.Seq {
				select {
				case early <- fmt.Sprintf("notified %s at seq %d while Head was %d", n.Collection, n.Seq, h):
				default:
				}
			}
		}()
	})
	defer func() {
		stop()
		mu.Lock()
		stopped = true
		mu.Unlock()
		checks.Wait()
		close(early)
		for msg := range early {
			t.Error(msg)
		}
	}()
	res := apply(t, s, chg("wa", crdt.SetField("r", "f", val(t, 1), st(1, "a"))))[0]
	for _, n := range w.await(t, "wa", res.Seq) {
		if n.Seq > res.Seq {
			t.Fatalf("notification for seq %d, but the head is %d", n.Seq, res.Seq)
		}
	}
	// Two collections in one batch: both are notified.
	res2 := apply(t, s,
		chg("wa", crdt.SetField("q", "f", val(t, 1), st(1, "a"))),
		chg("wb", crdt.SetField("q", "f", val(t, 1), st(1, "a"))),
	)
	w.await(t, "wa", res2[0].Seq)
	w.await(t, "wb", res2[1].Seq)
	// A burst of changes ends with a notification of the last head, perhaps
	// after merged ones; every notification names a seq that exists.
	var last uint64
	for i := range 20 {
		last = apply(t, s, chg("wa", crdt.SetField("burst", "f", val(t, i), st(int64(10+i), "a"))))[0].Seq
	}
	for _, n := range w.await(t, "wa", last) {
		if n.Seq > last {
			t.Fatalf("notification for seq %d beyond the head %d", n.Seq, last)
		}
	}
	// A second watcher gets notifications too.
	w2 := watch(t, s)
	res = apply(t, s, chg("wa", crdt.SetField("r", "f", val(t, 2), st(2, "a"))))[0]
	w.await(t, "wa", res.Seq)
	w2.await(t, "wa", res.Seq)
}

// testWatchStop checks that stop ends notifications and may be called
// twice.
func testWatchStop(t *testing.T, f Factory) {
	s := open(t, f)
	stopped, live := watch(t, s), watch(t, s)
	res := apply(t, s, chg("ws", crdt.SetField("r", "f", val(t, 1), st(1, "a"))))[0]
	stopped.await(t, "ws", res.Seq)
	live.await(t, "ws", res.Seq)
	stopped.stop()
	stopped.stop()
	mark := stopped.mark()
	res = apply(t, s, chg("ws", crdt.SetField("r", "f", val(t, 2), st(2, "a"))))[0]
	live.await(t, "ws", res.Seq)
	settle()
	for _, n := range stopped.since(mark, "ws") {
		if n.Seq >= res.Seq {
			t.Fatalf("stopped watcher was notified of seq %d", n.Seq)
		}
	}
}

// testWatchNoop checks that a batch that alters nothing notifies no one.
func testWatchNoop(t *testing.T, f Factory) {
	s := open(t, f)
	w := watch(t, s)
	c := chg("wn", crdt.SetField("r", "f", val(t, 1), st(1, "a")))
	res := apply(t, s, c)[0]
	w.await(t, "wn", res.Seq)
	settle() // let late or repeated hints of that change arrive
	mark := w.mark()
	if apply(t, s, c, chg("wn", crdt.Record{ID: "nothing"}))[0].Changed {
		t.Fatal("replayed change altered the record")
	}
	// A change to another collection, notified after the no-op would be.
	other := apply(t, s, chg("wn-other", crdt.SetField("r", "f", val(t, 1), st(1, "a"))))[0]
	w.await(t, "wn-other", other.Seq)
	settle()
	if got := w.since(mark, "wn"); len(got) > 0 {
		t.Fatalf("no-op batch was notified: %v", got)
	}
}

// testCancelled checks that every I/O method returns promptly with the
// context's error.
func testCancelled(t *testing.T, f Factory) {
	s := open(t, f)
	apply(t, s, chg("cx", crdt.SetField("r", "f", val(t, 1), st(1, "a"))))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel2()
	for _, tc := range []struct {
		ctx  context.Context
		want error
	}{{cancelled, context.Canceled}, {expired, context.DeadlineExceeded}} {
		calls := map[string]func(ctx context.Context) error{
			"Apply": func(ctx context.Context) error {
				_, err := s.Apply(ctx, []crdt.Change{chg("cx", crdt.SetField("r", "f", val(t, 2), st(2, "a")))})
				return err
			},
			"Pull": func(ctx context.Context) error { _, err := s.Pull(ctx, "cx", 0, lim(10)); return err },
			"Get":  func(ctx context.Context) error { _, err := s.Get(ctx, "cx", "r"); return err },
			"Head": func(ctx context.Context) error { _, err := s.Head(ctx, "cx"); return err },
		}
		for name, call := range calls {
			start := time.Now()
			err := call(tc.ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("%s with a done context: got %v, want an error wrapping %v", name, err, tc.want)
			}
			// Generous: the check is that the call does not wait for the
			// backend, not how fast it is.
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("%s with a done context took %s", name, d)
			}
		}
	}
	// The store still works.
	wantRecord(t, "Get after cancelled calls", get(t, s, "cx", "r").Record, crdt.SetField("r", "f", val(t, 1), st(1, "a")))
}

// testClosed checks that methods return ErrClosed after Close and that
// Close is idempotent.
func testClosed(t *testing.T, f Factory) {
	s := f(t)
	ctx := context.Background()
	apply(t, s, chg("cl", crdt.SetField("r", "f", val(t, 1), st(1, "a"))))
	w := watch(t, s)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := s.Apply(ctx, []crdt.Change{chg("cl", crdt.SetField("r", "f", val(t, 2), st(2, "a")))})
	wantErr(t, "Apply after Close", err, stores.ErrClosed)
	_, err = s.Pull(ctx, "cl", 0, lim(10))
	wantErr(t, "Pull after Close", err, stores.ErrClosed)
	_, err = s.Get(ctx, "cl", "r")
	wantErr(t, "Get after Close", err, stores.ErrClosed)
	_, err = s.Head(ctx, "cl")
	wantErr(t, "Head after Close", err, stores.ErrClosed)
	stop := s.Watch(func(stores.Notification) {})
	if stop == nil {
		t.Fatal("Watch after Close returned a nil stop function")
	}
	stop()
	w.stop()
}

// testCloseWhileBusy closes the store under concurrent writers and readers:
// each call in flight either completes or fails with ErrClosed, and every
// call returns.
func testCloseWhileBusy(t *testing.T, f Factory) {
	s := f(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	var applied atomic.Int64
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				var err error
				if i%2 == 0 {
					_, err = s.Apply(ctx, []crdt.Change{chg("busy", crdt.SetField(fmt.Sprintf("w%d-%d", w, i), "f", []byte{0x01}, st(int64(i+1), "a")))})
					if err == nil {
						applied.Add(1)
					}
				} else {
					_, err = s.Pull(ctx, "busy", 0, lim(10))
				}
				if errors.Is(err, stores.ErrClosed) {
					return
				}
				if err != nil {
					errs <- fmt.Errorf("call %d of goroutine %d during Close: %w (want success or ErrClosed)", i, w, err)
					return
				}
			}
		}()
	}
	for deadline := time.Now().Add(notifyWait); applied.Load() < 20 && len(errs) == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close under load: %v", err)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(notifyWait):
		t.Fatalf("calls still running %s after Close", notifyWait)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
