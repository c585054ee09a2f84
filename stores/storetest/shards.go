package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// RunShard runs the conformance suite against one shard of stores whose
// collections have k > 1 log shards (stores.Sharder): newStore must
// return stores that give every collection the suite writes k shards.
// Every check of the suite holds per shard (the contract of Sharder), so
// the suite sees the store through a view of shard shard alone: record ids
// are renamed, keeping their length (the limit checks write records of
// exactly the largest size), to ids that live in that shard, and named
// back on the way out; Pull is PullShard, Head that shard's head, and
// notifications of other shards are dropped. Collections the suite only
// reads (never written, so of one log) go to the store as they are.
// Checks across shards are the caller's (the engine merges shards).
func RunShard(t *testing.T, newStore Factory, k, shard int) {
	t.Helper()
	if k < 2 || shard < 0 || shard >= k {
		t.Fatalf("RunShard(k %d, shard %d): want k >= 2 and a shard below it", k, shard)
	}
	Run(t, func(t testing.TB) stores.Store {
		s := newStore(t)
		sh, ok := s.(stores.Sharder)
		if !ok {
			t.Fatalf("%T does not shard (stores.Sharder)", s)
		}
		v := &shardView{Store: s, sh: sh, k: k, shard: shard, to: map[string]string{}, from: map[string]string{}, written: map[string]bool{}}
		if u, ok := s.(stores.Usager); ok {
			if p, ok := s.(stores.Purger); ok {
				return shardPurgeView{shardUsageView{v, u}, p}
			}
			return shardUsageView{v, u}
		}
		return v
	})
}

// shardView is the suite's view of one shard of a sharded store.
type shardView struct {
	stores.Store
	sh       stores.Sharder
	k, shard int
	mu       sync.Mutex
	to, from map[string]string // "coll\x00id": the store's id; and back
	written  map[string]bool   // collections the view wrote to
}

// idChars are what a renamed id's changed byte is chosen from.
const idChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

// rename returns the id the store holds for the suite's id: the id itself
// when it lives in the view's shard, else the id with one ASCII byte
// replaced so that it does (or, when no byte will do, its last character
// replaced by ASCII bytes), and no other id of the collection has it.
// Invalid ids pass unchanged, to be refused.
func (v *shardView) rename(coll, id string) string {
	if crdt.ValidateID(id) != nil {
		return id
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if got, ok := v.to[coll+"\x00"+id]; ok {
		return got
	}
	taken := func(c string) bool { _, ok := v.from[coll+"\x00"+c]; return ok }
	pick := ""
	if stores.ShardOf(id, v.k) == v.shard && !taken(id) {
		pick = id
	}
	for i := len(id) - 1; i >= 0 && pick == ""; i-- {
		if id[i] >= 0x80 {
			continue // keep UTF-8 intact: change ASCII bytes only
		}
		for j := 0; j < len(idChars) && pick == ""; j++ {
			c := id[:i] + idChars[j:j+1] + id[i+1:]
			if stores.ShardOf(c, v.k) == v.shard && !taken(c) {
				pick = c
			}
		}
	}
	// An id without an ASCII byte to change (a lone "é") has its last
	// character replaced by as many ASCII bytes as it takes.
	if r, n := utf8.DecodeLastRuneInString(id); pick == "" && r != utf8.RuneError && n >= 2 {
		head, tail := id[:len(id)-n], strings.Repeat("a", n-2)
		for j := 0; j < len(idChars)*len(idChars) && pick == ""; j++ {
			c := head + string(idChars[j/len(idChars)]) + string(idChars[j%len(idChars)]) + tail
			if stores.ShardOf(c, v.k) == v.shard && !taken(c) {
				pick = c
			}
		}
	}
	if pick == "" {
		panic(fmt.Sprintf("storetest: no id like %q in shard %d of %d", id, v.shard, v.k))
	}
	v.to[coll+"\x00"+id], v.from[coll+"\x00"+pick] = pick, id
	return pick
}

// original is the suite's id of an id the store holds.
func (v *shardView) original(coll, id string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if o, ok := v.from[coll+"\x00"+id]; ok {
		return o
	}
	return id
}

func (v *shardView) sharded(ctx context.Context, coll string) (bool, error) {
	if crdt.ValidateCollection(coll) != nil {
		return false, nil // the store refuses it
	}
	m, err := v.Store.Meta(ctx, coll)
	if err != nil {
		return false, err
	}
	v.mu.Lock()
	written := v.written[coll]
	v.mu.Unlock()
	if k := stores.ShardsOf(m); (k > 1 || written) && k != v.k {
		return false, fmt.Errorf("storetest: collection %s has %d shards, want %d", coll, k, v.k)
	}
	return stores.ShardsOf(m) > 1, nil
}

func (v *shardView) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	renamed := make([]crdt.Change, len(changes))
	for i, c := range changes {
		c.Record.ID = v.rename(c.Collection, c.Record.ID)
		renamed[i] = c
	}
	res, err := v.Store.Apply(ctx, renamed)
	if err == nil {
		v.mu.Lock()
		for _, c := range changes {
			v.written[c.Collection] = true
		}
		v.mu.Unlock()
	}
	return res, err
}

// Pull and Head ask the store's Meta whether the collection is sharded
// yet (its first write shards it) and read accordingly; a write between
// the two makes the store refuse a single-log read or answer a sum, so
// they look again.
func (v *shardView) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	var p stores.Page
	var err error
	for range 3 {
		var sharded bool
		if sharded, err = v.sharded(ctx, coll); err != nil {
			return stores.Page{}, err
		}
		if !sharded {
			p, err = v.Store.Pull(ctx, coll, after, limit)
		} else {
			p, err = v.sh.PullShard(ctx, coll, v.shard, after, limit)
		}
		if !errors.Is(err, stores.ErrInvalid) {
			break
		}
	}
	for i := range p.Entries {
		p.Entries[i].Record.ID = v.original(coll, p.Entries[i].Record.ID)
	}
	return p, err
}

func (v *shardView) Get(ctx context.Context, coll, id string) (stores.Entry, error) {
	e, err := v.Store.Get(ctx, coll, v.rename(coll, id))
	if err == nil {
		e.Record.ID = v.original(coll, e.Record.ID)
	}
	return e, err
}

func (v *shardView) Head(ctx context.Context, coll string) (uint64, error) {
	for {
		sharded, err := v.sharded(ctx, coll)
		if err != nil {
			return 0, err
		}
		if sharded {
			heads, err := v.sh.ShardHeads(ctx, coll)
			if err != nil {
				return 0, err
			}
			return heads[v.shard], nil
		}
		h, err := v.Store.Head(ctx, coll)
		if err != nil {
			return 0, err
		}
		if again, err := v.sharded(ctx, coll); err != nil || !again {
			return h, err
		}
	}
}

func (v *shardView) Watch(fn func(stores.Notification)) func() {
	return v.Store.Watch(func(n stores.Notification) {
		if n.Shards > 1 && n.Shard != v.shard {
			return
		}
		fn(n)
	})
}

// shardUsageView is a shardView of a store that keeps usage: a
// collection's usage is its own, whichever shards its records are in.
type shardUsageView struct {
	*shardView
	u stores.Usager
}

func (v shardUsageView) Usage(ctx context.Context, coll string) (stores.Usage, error) {
	return v.u.Usage(ctx, coll)
}

// shardPurgeView is a shardUsageView of a store that purges: the suite's
// one-position horizon and resume point are the view's shard's, the
// other shards' positions 0 (nothing there is touched).
type shardPurgeView struct {
	shardUsageView
	p stores.Purger
}

func (v shardPurgeView) Purge(ctx context.Context, coll string, h stores.Horizon, scan stores.PurgeScan) (stores.PurgeResult, error) {
	sharded, err := v.sharded(ctx, coll)
	if err != nil {
		return stores.PurgeResult{}, err
	}
	if !sharded || len(h.Read) != 1 || (scan.After != nil && len(scan.After) != 1) {
		return v.p.Purge(ctx, coll, h, scan)
	}
	widen := func(pos []uint64) []uint64 {
		if pos == nil {
			return nil
		}
		w := make([]uint64, v.k)
		w[v.shard] = pos[0]
		return w
	}
	h.Read = widen(h.Read)
	scan.After = widen(scan.After)
	res, err := v.p.Purge(ctx, coll, h, scan)
	if len(res.Next) == v.k {
		res.Next = []uint64{res.Next[v.shard]}
	}
	return res, err
}
