package redis

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"sync"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// beforeScript is a go-redis hook that calls before once, just before
// the first run of the script of hash (EVALSHA, or EVAL after NOSCRIPT).
type beforeScript struct {
	hash   string
	mu     sync.Mutex
	before func()
}

func (h *beforeScript) DialHook(next goredis.DialHook) goredis.DialHook { return next }
func (h *beforeScript) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return next
}

func (h *beforeScript) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		args := cmd.Args()
		if len(args) >= 2 && (cmd.Name() == "evalsha" && args[1] == h.hash ||
			cmd.Name() == "eval" && fmt.Sprintf("%x", sha1.Sum([]byte(fmt.Sprint(args[1])))) == h.hash) {
			h.mu.Lock()
			f := h.before
			h.before = nil
			h.mu.Unlock()
			if f != nil {
				f()
			}
		}
		return next(ctx, cmd)
	}
}

// TestPurgeEpochMovesBeforeScript: the collection's epoch changes after
// Purge read it (and found it the horizon's) and before purge.lua
// writes. The script checks the counters it was given are still there
// and writes nothing: the tombstone, which a reader of the new epoch has
// not read, is kept, and Purge says ErrEpochChanged. On a cluster the
// store-wide counter is in another slot than the collection's keys, and
// the script cannot check it (Purge's doc: the window left).
func TestPurgeEpochMovesBeforeScript(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		for _, b := range []struct {
			name      string
			storeWide bool
			bump      func(context.Context, *Store) error
		}{
			{"BumpEpoch", false, func(ctx context.Context, s *Store) error { return s.BumpEpoch(ctx, "c", stores.HistoryLost) }},
			{"BumpEpochs", true, func(ctx context.Context, s *Store) error { return s.BumpEpochs(ctx) }},
		} {
			t.Run(b.name, func(t *testing.T) {
				if tg.cluster && b.storeWide {
					t.Skip("on a cluster the store-wide counter is read before each script, not in it (redis.Store.Purge)")
				}
				ctx := testContext(t)
				s := openStore(t, tg, Options{})
				other := openStore(t, tg, Options{KeyPrefix: s.prefix})
				v, _ := crdt.EncodeValue("a")
				if _, err := s.Apply(ctx, []crdt.Change{
					{Collection: "c", Record: crdt.SetField("x", "f", v, crdt.Stamp{Wall: 10, Replica: "w"})},
					{Collection: "c", Record: crdt.DeleteRecord("x", crdt.Stamp{Wall: 20, Replica: "w"})},
				}); err != nil {
					t.Fatal(err)
				}
				m, err := s.Meta(ctx, "c")
				if err != nil {
					t.Fatal(err)
				}
				head, err := s.Head(ctx, "c")
				if err != nil {
					t.Fatal(err)
				}
				h := &beforeScript{hash: purgeScript.Hash()}
				bumped := false
				h.before = func() {
					if err := b.bump(ctx, other); err != nil {
						t.Error(err)
					}
					bumped = true
				}
				addHook(ctx, t, s, h)
				res, err := s.Purge(ctx, "c", stores.Horizon{Epoch: m.Epoch, Read: []uint64{head}, Wall: 100}, stores.PurgeScan{})
				if !bumped {
					t.Fatal("the purge script never ran")
				}
				if !errors.Is(err, stores.ErrEpochChanged) {
					t.Errorf("Purge whose epoch changed before its script: %+v, %v; want %v", res, err, stores.ErrEpochChanged)
				}
				if _, err := s.Get(ctx, "c", "x"); err != nil {
					t.Errorf("x after the purge: %v; want its tombstone kept", err)
				}
			})
		}
	})
}

// addHook adds h to the store's client or, on a cluster, to every node's
// client instead, which sends the cluster client's commands and those
// that go to the node whose run was checked (Options, Hooks: the way a
// caller instruments a cluster).
func addHook(ctx context.Context, t *testing.T, s *Store, h goredis.Hook) {
	t.Helper()
	c, ok := s.client.(*goredis.ClusterClient)
	if !ok {
		s.client.AddHook(h)
		return
	}
	c.OnNewNode(func(n *goredis.Client) { n.AddHook(h) })
	if err := c.ForEachShard(ctx, func(ctx context.Context, n *goredis.Client) error {
		n.AddHook(h)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
