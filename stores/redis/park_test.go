package redis

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// parkCapturer is a capturer of collection locked (keys app:locked:ID)
// whose logs go to logs and whose clock is *now, with a sink that refuses
// every batch of more than one change for good and fails every single
// change while *fail is set: a try of several keys then fails on each of
// them alone.
func parkCapturer(t *testing.T, logs *syncBuffer, now *time.Time, fail *bool) (*capturer, *sinkReg) {
	t.Helper()
	s := &Store{log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	c := newCapturer(s, Options{Capture: []CaptureRule{{Collection: "locked", KeyPattern: "app:locked:*"}}})
	c.now = func() time.Time { return *now }
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := &sinkReg{ctx: ctx, cancel: cancel, sink: stores.CaptureSink{Apply: func(_ context.Context, cs []crdt.Change) ([]stores.CaptureResult, error) {
		switch {
		case len(cs) > 1:
			return nil, fmt.Errorf("%w: one of them is too large", stores.ErrTooLarge)
		case *fail:
			return nil, fmt.Errorf("%w: locked is fenced", stores.ErrUnavailable)
		}
		return make([]stores.CaptureResult, len(cs)), nil
	}}}
	return c, reg
}

func lockedPending(n int) ([]pending, map[string]bool) {
	var ps []pending
	again := map[string]bool{}
	for i := 1; i <= n; i++ {
		k := fmt.Sprintf("app:locked:%d", i)
		ps = append(ps, pending{key: k, change: crdt.Change{Collection: "locked", Record: crdt.Record{ID: fmt.Sprint(i)}}})
		again[k] = false
	}
	return ps, again
}

// TestParkAttemptsOncePerTry: a try of a parked collection that fails on
// several keys (each offered alone) counts one attempt, not one per key,
// so the pause before the next try grows once per try.
func TestParkAttemptsOncePerTry(t *testing.T) {
	logs := &syncBuffer{}
	now, fail := time.UnixMilli(1_700_000_000_000), true
	c, reg := parkCapturer(t, logs, &now, &fail)
	ctx := context.Background()
	ps, again := lockedPending(3)
	if err := c.split(ctx, reg, ps, again, fmt.Errorf("%w: one of them is too large", stores.ErrTooLarge)); err != nil {
		t.Fatal(err)
	}
	p := c.parked["locked"]
	if p == nil || len(p.keys) != 3 || p.attempts != 0 || !p.next.Equal(now.Add(parkPause(0))) {
		t.Fatalf("parked %+v; want 3 keys, no attempt counted yet, next try after parkPause(0)", p)
	}
	for try := 1; try <= 3; try++ {
		now = p.next
		c.tryParked()
		if !p.trying {
			t.Fatalf("try %d: the collection is not being tried", try)
		}
		c.mu.Lock()
		clear(c.queue)
		c.mu.Unlock()
		if err := c.split(ctx, reg, ps, again, fmt.Errorf("%w: one of them is too large", stores.ErrTooLarge)); err != nil {
			t.Fatal(err)
		}
		if p.attempts != try || !p.next.Equal(now.Add(parkPause(try))) {
			t.Fatalf("after failed try %d of 3 keys: %d attempts, next try in %v; want %d attempts and %v", try, p.attempts, p.next.Sub(now), try, parkPause(try))
		}
	}
}

// TestParkLogLevels: a collection parked by a one-off failure of the
// sink, taken on its first try, logs no warning (the parked keys show at
// once in the counts all the same); one whose first try fails too logs
// one warning then, and none on later tries.
func TestParkLogLevels(t *testing.T) {
	for _, failedTries := range []int{0, 3} {
		t.Run(fmt.Sprintf("failed_tries=%d", failedTries), func(t *testing.T) {
			logs := &syncBuffer{}
			now, fail := time.UnixMilli(1_700_000_000_000), true
			c, reg := parkCapturer(t, logs, &now, &fail)
			ctx := context.Background()
			ps, again := lockedPending(2)
			if err := c.split(ctx, reg, ps, again, fmt.Errorf("%w: one of them is too large", stores.ErrTooLarge)); err != nil {
				t.Fatal(err)
			}
			if n := c.parkedKeys(); n != 2 {
				t.Fatalf("%d keys parked, want 2 shown at once", n)
			}
			if strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), `level=INFO msg="capture: a collection's changes fail; its keys are parked`) {
				t.Fatalf("logs on parking, want the parked state at info and no warning:\n%s", logs)
			}
			p := c.parked["locked"]
			for try := 1; try <= failedTries; try++ {
				now = p.next
				c.tryParked()
				if err := c.split(ctx, reg, ps, again, fmt.Errorf("%w: one of them is too large", stores.ErrTooLarge)); err != nil {
					t.Fatal(err)
				}
				if n := strings.Count(logs.String(), "level=WARN"); n != 1 || !strings.Contains(logs.String(), `level=WARN msg="capture: a parked collection's changes still fail after a retry`) {
					t.Fatalf("%d warnings after failed try %d, want the one of the collection still parked (on its first failed try only):\n%s", n, try, logs)
				}
			}
			// The sink takes the changes: the collection leaves the
			// parked state (as deliver does once a try succeeds).
			now = p.next
			c.tryParked()
			c.unpark(map[string]bool{"locked": true})
			if n := c.parkedKeys(); n != 0 || len(c.parked) != 0 {
				t.Fatalf("%d keys parked after the try was taken, want none", n)
			}
			if n := strings.Count(logs.String(), "level=WARN"); n != min(failedTries, 1) {
				t.Fatalf("%d warnings, want %d:\n%s", n, min(failedTries, 1), logs)
			}
			if !strings.Contains(logs.String(), `level=INFO msg="capture: a parked collection's changes were taken`) {
				t.Fatalf("no log of the collection leaving the parked state:\n%s", logs)
			}
		})
	}
}
