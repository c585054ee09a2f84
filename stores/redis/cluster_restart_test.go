package redis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/redis/redistest"
)

// privateCluster starts two redis-servers of the test's own as a cluster
// without persistence: node 1 holds every slot but slot, node 2 holds
// slot alone. Restarting node 2 loses what it held, and it comes back
// owning its slot (nodes.conf survives in its directory).
func privateCluster(t *testing.T, slot int) (one, two *redistest.Server) {
	t.Helper()
	start := func() *redistest.Server {
		return redistest.StartCluster(t, "--save", "", "--appendonly", "no", "--cluster-node-timeout", "2000")
	}
	one, two = start(), start()
	ctx := testContext(t)
	c1 := goredis.NewClient(&goredis.Options{Addr: one.Addr()})
	c2 := goredis.NewClient(&goredis.Options{Addr: two.Addr()})
	defer c1.Close()
	defer c2.Close()
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
	if err := c1.Do(ctx, "cluster", "meet", "127.0.0.1", two.Port, two.BusPort).Err(); err != nil {
		t.Fatal(err)
	}
	awaitClusterOK(t, one, two)
	return one, two
}

// awaitClusterOK waits until every node says the cluster is ok and
// knows both nodes.
func awaitClusterOK(t *testing.T, nodes ...*redistest.Server) {
	t.Helper()
	eventually(t, "the private cluster to be ok", func() (bool, string) {
		for _, n := range nodes {
			c := goredis.NewClient(&goredis.Options{Addr: n.Addr()})
			info, err := c.ClusterInfo(context.Background()).Result()
			c.Close()
			if err != nil {
				return false, err.Error()
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(nodes))) {
				return false, info
			}
		}
		return true, ""
	})
}

// TestClusterMasterRestartResets: a master of a cluster other than the one
// holding the store's subscription restarts and comes back empty. Its
// collection's sequence numbers start again from 1, so a cursor from
// before must be reset, history lost: the store must notice the restart
// although its subscription never broke. (The record at the cursor's
// position is the same before and after, so the engine's own check of
// that position cannot tell.)
func TestClusterMasterRestartResets(t *testing.T) {
	if keySlot("c") == keySlot("convergo") {
		t.Fatal("collection c shares the slot of the store's own keys")
	}
	one, two := privateCluster(t, keySlot("c"))
	s, err := Open(testContext(t), Options{
		Addrs: []string{one.Addr(), two.Addr()}, Cluster: true, KeyPrefix: "rw:",
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
	write := func(id, field string) {
		t.Helper()
		_, err := e.Apply(context.Background(), []crdt.Change{{Collection: "c", Record: crdt.SetField(id, field, mustValue(t, field), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "w"})}})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"a", "b", "c"} {
		write("r0", f) // seqs 1 to 3: r0 at 3
	}
	c := cursorAfterAll(t, e)
	two.Kill()
	two.Start()
	awaitClusterOK(t, one, two)
	for _, f := range []string{"x", "y", "z"} {
		write("r0", f) // seqs 1 to 3 again: r0 at 3, without a, b, c
	}
	write("r1", "n") // seq 4
	awaitReset(t, e, c, "after the restart its reader keeps r0 without x, y, z, and never gives back a, b, c")
}
