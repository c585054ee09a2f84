package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestFollow(t *testing.T) {
	e := openEngine(t, "srv", &fakeClock{ms: 1_000_000})
	ctx := context.Background()
	for i := range 3 {
		if err := e.Put(ctx, "todos", fmt.Sprintf("t%d", i), Doc{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan string, 100)
	done := make(chan error, 1)
	var last Cursor
	go func() {
		done <- e.Follow(fctx, "todos", Cursor{}, func(p Page) error {
			for _, en := range p.Entries {
				seen <- en.Record.ID
			}
			last = p.Next
			return nil
		})
	}()
	expect := func(want ...string) {
		t.Helper()
		for i, w := range want {
			select {
			case got := <-seen:
				if got != w {
					t.Fatalf("record %d: got %s, want %s", i, got, w)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("record %d: nothing after 5s, want %s", i, w)
			}
		}
	}
	expect("t0", "t1", "t2")
	// Written while Follow waits: it wakes and reads them.
	if err := e.Update(ctx, "todos", "t1", Doc{"n": 10}); err != nil {
		t.Fatal(err)
	}
	if err := e.Put(ctx, "todos", "t3", Doc{"n": 3}); err != nil {
		t.Fatal(err)
	}
	expect("t1", "t3")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Follow returned %v, want context.Canceled", err)
	}
	if last.Seq() != 5 {
		t.Fatalf("last cursor %v, want seq 5", last)
	}

	// An error of fn ends Follow with that error; closing the engine ends
	// it with ErrClosed.
	stop := errors.New("stop")
	if err := e.Follow(ctx, "todos", Cursor{}, func(Page) error { return stop }); err != stop {
		t.Fatalf("got %v, want fn's error", err)
	}
	go func() { time.Sleep(20 * time.Millisecond); e.Close() }()
	if err := e.Follow(ctx, "todos", last, func(Page) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v after Close, want ErrClosed", err)
	}
}

func TestFollowScoped(t *testing.T) {
	e := openEngine(t, "srv", &fakeClock{ms: 1_000_000})
	ctx := context.Background()
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		done <- e.FollowScoped(fctx, "todos", Cursor{}, mustScope(t, "eq", "owner", "a"), func(p Page) error {
			for _, en := range p.Entries {
				seen <- "+" + en.Record.ID
			}
			for _, l := range p.Left {
				seen <- "-" + l.ID
			}
			return nil
		})
	}()
	for _, step := range []struct {
		id, owner, want string
	}{{"t1", "a", "+t1"}, {"t2", "b", "-t2"}, {"t1", "b", "-t1"}, {"t2", "a", "+t2"}} {
		if err := e.Put(ctx, "todos", step.id, Doc{"owner": step.owner}); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-seen:
			if got != step.want {
				t.Fatalf("got %s, want %s", got, step.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("nothing after 5s, want %s", step.want)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("FollowScoped returned %v, want context.Canceled", err)
	}
}
