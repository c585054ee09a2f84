package redis

import (
	"context"
	"crypto/sha1"
	"fmt"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// retryOnce is a go-redis hook that runs the first run of a script
// (EVALSHA, or EVAL after NOSCRIPT) twice, as go-redis's own retry does when the reply to the first run was
// lost (a read timeout, a connection reset) after Redis ran it.
type retryOnce struct {
	hash string
	mu   sync.Mutex
	done bool
}

func (h *retryOnce) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *retryOnce) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func (h *retryOnce) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		args := cmd.Args()
		if len(args) < 2 || !(cmd.Name() == "evalsha" && args[1] == h.hash ||
			cmd.Name() == "eval" && fmt.Sprintf("%x", sha1.Sum([]byte(fmt.Sprint(args[1])))) == h.hash) {
			return next(ctx, cmd)
		}
		h.mu.Lock()
		again := !h.done
		h.mu.Unlock()
		err := next(ctx, cmd)
		if err != nil || !again {
			return err
		}
		h.mu.Lock()
		h.done = true
		h.mu.Unlock()
		return next(ctx, cmd) // the retry, its reply the one the caller reads
	}
}

func (h *retryOnce) ran() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done
}

// TestBumpReplyLost: go-redis runs a bump's script again when the reply
// to the first run was lost, and the second run finds the counter moved by
// the first. The bump happened once, and says so: a bump from a read
// counter (the engine's proof that the store went back, which it logs and
// counts only when it reports true) reports true, and a collection's bump
// does not bump again.
func TestBumpReplyLost(t *testing.T) {
	at := time.Unix(2_000_000_000, 0)
	eachTarget(t, func(t *testing.T, tg target) {
		storetest.CheckBumpReplyLost(t, at, func(t *testing.T, storeWide bool) (storetest.BumpStore, func() bool) {
			script := bumpScript
			if storeWide {
				script = setEpochScript
			}
			s := openStore(t, tg, Options{Now: func() time.Time { return at }})
			h := &retryOnce{hash: script.Hash()}
			s.client.AddHook(h)
			return s, h.ran
		})
	})
}

// TestServerCheckReplyLost: the check of the servers' runs finds a master
// that restarted without appendfsync always and bumps the store-wide
// epoch; go-redis runs its script again, the reply to the first run lost.
// The bump happened once and is announced: watchers get a Resync (before,
// the second run answered that another instance had recorded the runs,
// and nobody announced the new epoch).
func TestServerCheckReplyLost(t *testing.T) {
	at := time.Unix(2_000_000_000, 0)
	eachTarget(t, func(t *testing.T, tg target) {
		s := openStore(t, tg, Options{Now: func() time.Time { return at }})
		ctx := testContext(t)
		m, err := s.Meta(ctx, "notes")
		if err != nil {
			t.Fatal(err)
		}
		from := stores.StoreEpochOf(m)
		var mu sync.Mutex
		resyncs := 0
		defer s.Watch(func(n stores.Notification) {
			if n.Resync {
				mu.Lock()
				resyncs++
				mu.Unlock()
			}
		})()
		time.Sleep(300 * time.Millisecond) // the subscription Watch starts checks the runs too
		h := &retryOnce{hash: checkServerScript.Hash()}
		s.client.AddHook(h)
		mu.Lock()
		resyncs = 0
		mu.Unlock()
		// A run recorded that no master has now: a restart, which lost
		// what was not yet on disk.
		if err := s.client.Set(ctx, s.serverKey(), "0123456789abcdef/fedcba9876543210", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := s.checkRun(ctx); err != nil {
			t.Fatal(err)
		}
		if !h.ran() {
			t.Fatal("the script never ran twice")
		}
		m2, err := s.Meta(ctx, "notes")
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		n := resyncs
		mu.Unlock()
		if got, want := stores.StoreEpochOf(m2), stores.NextEpoch(from, at); got != want || n == 0 {
			t.Fatalf("store-wide epoch %d, %d resyncs; want %d (one bump) and a resync", got, n, want)
		}
	})
}
