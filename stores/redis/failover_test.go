package redis

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/redis/redistest"
)

// TestClusterFailoverResets: the master of a collection's slot has a
// replica that stopped replicating; the master acknowledges three more
// writes, and the replica takes over without them. The collection's
// sequence numbers then go back, and the next writes, through a server
// that never read the collection's head, give them out again (to the same
// record, so neither engine's own checks can tell): a cursor from before
// must be reset, history lost, although the stores' subscriptions, on
// another master, never broke. The store
// learns of the failover when the merge script is missing on the promoted
// node (NOSCRIPT): so the scripts must be loaded on the masters only, never
// on their replicas, whose script cache a promotion keeps.
func TestClusterFailoverResets(t *testing.T) {
	const prefix = "fo:"
	slot := keySlot("c")
	if slot == keySlot("convergo") || slot == keySlot(prefix+"convergo:notify") {
		t.Fatal("collection c shares the slot of the store's own keys or of its channel")
	}
	start := func(args ...string) *redistest.Server {
		return redistest.StartCluster(t, append([]string{"--save", "", "--appendonly", "no", "--cluster-node-timeout", "2000"}, args...)...)
	}
	one, two := start(), start()
	// The replica authenticates to its master as user repl: deleting the
	// user cuts replication and keeps it cut.
	three := start("--masteruser", "repl", "--masterauth", "pw")
	ctx := testContext(t)
	node := func(s *redistest.Server) *goredis.Client {
		c := goredis.NewClient(&goredis.Options{Addr: s.Addr()})
		t.Cleanup(func() { c.Close() })
		return c
	}
	c1, c2, c3 := node(one), node(two), node(three)
	if slot > 0 {
		if err := c1.ClusterAddSlotsRange(ctx, 0, slot-1).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if slot < 16383 {
		if err := c1.ClusterAddSlotsRange(ctx, slot+1, 16383).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c2.ClusterAddSlots(ctx, slot).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c2.Do(ctx, "acl", "setuser", "repl", "on", ">pw", "+@all", "~*", "&*").Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*redistest.Server{two, three} {
		if err := c1.Do(ctx, "cluster", "meet", "127.0.0.1", s.Port, s.BusPort).Err(); err != nil {
			t.Fatal(err)
		}
	}
	awaitClusterOK(t, one, two, three)
	id2, err := c2.Do(ctx, "cluster", "myid").Text()
	if err != nil {
		t.Fatal(err)
	}
	if err := c3.Do(ctx, "cluster", "replicate", id2).Err(); err != nil {
		t.Fatal(err)
	}
	linked := func(up bool) func() (bool, string) {
		return func() (bool, string) {
			info, err := c3.Info(ctx, "replication").Result()
			if err != nil {
				return false, err.Error()
			}
			return strings.Contains(info, "master_link_status:up") == up, info
		}
	}
	eventually(t, "the replica in sync", linked(true))

	eventually(t, "every node to list the replica", func() (bool, string) {
		for _, c := range []*goredis.Client{c1, c2} {
			slots, err := c.ClusterSlots(ctx).Result()
			if err != nil {
				return false, err.Error()
			}
			for _, r := range slots {
				if r.Start == slot && len(r.Nodes) != 2 {
					return false, fmt.Sprint(slots)
				}
			}
		}
		return true, ""
	})
	// Two server instances, each with its store and engine, both started
	// before the failover.
	open := func() (*Store, *engine.Engine) {
		s, err := Open(ctx, Options{
			Addrs: []string{one.Addr(), two.Addr()}, Cluster: true, KeyPrefix: prefix,
			DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		e, err := engine.Open(engine.Config{Store: s, Replica: "srv", PollInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close(); s.Close() })
		return s, e
	}
	_, e := open()
	s2, e2 := open()
	write := func(e *engine.Engine, id, field string) {
		t.Helper()
		for try := 0; ; try++ {
			_, err := e.Apply(context.Background(), []crdt.Change{{Collection: "c", Record: crdt.SetField(id, field, mustValue(t, field), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "w"})}})
			if err == nil {
				return
			}
			if try == 50 {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	for _, f := range []string{"a", "b", "c"} {
		write(e, "r0", f) // seqs 1 to 3
	}
	if n, err := c2.Do(ctx, "wait", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("wait for the replica: %d, %v", n, err)
	}
	if err := c2.Do(ctx, "acl", "deluser", "repl").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the replica cut off", linked(false))
	for _, f := range []string{"x", "y", "z"} {
		write(e, "r0", f) // seqs 4 to 6, on the master alone
	}
	c := cursorAfterAll(t, e)
	if err := c3.Do(ctx, "cluster", "failover", "takeover").Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the replica promoted", func() (bool, string) {
		info, err := c3.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master"), info
	})
	// The other instance, which never read the collection's head,
	// writes: seqs 4 to 7 again, r0 at 7 without x, y, z. The reader's
	// server sees the head pass its cursor, and r0 move on as usual.
	for _, f := range []string{"p", "q", "r", "s"} {
		write(e2, "r0", f)
	}
	if head, err := s2.Head(ctx, "c"); err != nil || head != 7 {
		t.Fatalf("head after the failover: %d, %v; want 7 (the promoted replica lacks x, y, z)", head, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := e.Pull(context.Background(), "c", c, engine.PageLimit{})
		var re *engine.ResetError
		if errors.As(err, &re) {
			if re.Reason != engine.ResetHistoryLost {
				t.Fatalf("reset %v, want history lost", re)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a cursor from before the failover pulled %d entries (%v) and no reset: its reader keeps x, y, z, which the store lost, which it holds beside p, q, r, s", len(p.Entries), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
