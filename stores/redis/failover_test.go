package redis

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis/redistest"
)

// failoverPrefix is the key prefix of the failover tests' stores.
const failoverPrefix = "fo:"

// failoverCluster is a private cluster without persistence: node one
// holds every slot but the slot of collection c, node two holds that slot
// and node three replicates it. Two and three authenticate to each other's
// replication as user repl, so deleting the user on the master cuts its
// replica off and keeps it cut. Its two server instances (a and b, each a
// store and an engine) are opened once every node lists the replica.
type failoverCluster struct {
	t               *testing.T
	ctx             context.Context
	one, two, three *redistest.Server
	c1, c2, c3      *goredis.Client
	slot            int
	a, b            *engine.Engine
	sa, sb          *Store
}

func newFailoverCluster(t *testing.T) *failoverCluster {
	t.Helper()
	f := &failoverCluster{t: t, ctx: testContext(t), slot: keySlot("c")}
	if f.slot == keySlot("convergo") || f.slot == keySlot(failoverPrefix+"convergo:notify") {
		t.Fatal("collection c shares the slot of the store's own keys or of its channel")
	}
	start := func(args ...string) *redistest.Server {
		return redistest.StartCluster(t, append([]string{"--save", "", "--appendonly", "no", "--cluster-node-timeout", "2000"}, args...)...)
	}
	f.one = start()
	f.two = start("--masteruser", "repl", "--masterauth", "pw")
	f.three = start("--masteruser", "repl", "--masterauth", "pw")
	node := func(s *redistest.Server) *goredis.Client {
		c := goredis.NewClient(&goredis.Options{Addr: s.Addr()})
		t.Cleanup(func() { c.Close() })
		return c
	}
	f.c1, f.c2, f.c3 = node(f.one), node(f.two), node(f.three)
	ctx := f.ctx
	if f.slot > 0 {
		f.must(f.c1.ClusterAddSlotsRange(ctx, 0, f.slot-1).Err())
	}
	if f.slot < 16383 {
		f.must(f.c1.ClusterAddSlotsRange(ctx, f.slot+1, 16383).Err())
	}
	f.must(f.c2.ClusterAddSlots(ctx, f.slot).Err())
	for _, c := range []*goredis.Client{f.c2, f.c3} {
		f.must(c.Do(ctx, "acl", "setuser", "repl", "on", ">pw", "+@all", "~*", "&*").Err())
	}
	for _, s := range []*redistest.Server{f.two, f.three} {
		f.must(f.c1.Do(ctx, "cluster", "meet", "127.0.0.1", s.Port, s.BusPort).Err())
	}
	awaitClusterOK(t, f.one, f.two, f.three)
	id2, err := f.c2.Do(ctx, "cluster", "myid").Text()
	f.must(err)
	f.must(f.c3.Do(ctx, "cluster", "replicate", id2).Err())
	f.awaitLink(f.c3, true)
	eventually(t, "every node to list the replica", func() (bool, string) {
		for _, c := range []*goredis.Client{f.c1, f.c2} {
			slots, err := c.ClusterSlots(ctx).Result()
			if err != nil {
				return false, err.Error()
			}
			for _, r := range slots {
				if r.Start == f.slot && len(r.Nodes) != 2 {
					return false, fmt.Sprint(slots)
				}
			}
		}
		return true, ""
	})
	f.sa, f.a = f.open()
	f.sb, f.b = f.open()
	// A promotion keeps the script cache: a replica that took over must
	// answer the first merge call with NOSCRIPT.
	if ex, err := f.c3.ScriptExists(ctx, mergeScript.Hash()).Result(); err != nil || len(ex) != 1 || ex[0] {
		t.Fatalf("the merge script on the replica after Open: %v, %v; want not loaded", ex, err)
	}
	return f
}

func (f *failoverCluster) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

// open opens a server instance: a store and an engine.
func (f *failoverCluster) open() (*Store, *engine.Engine) {
	t := f.t
	t.Helper()
	s, err := Open(f.ctx, Options{
		Addrs: []string{f.one.Addr(), f.two.Addr()}, Cluster: true, KeyPrefix: failoverPrefix,
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

// awaitLink waits until the replica c's link to its master is up, or
// down.
func (f *failoverCluster) awaitLink(c *goredis.Client, up bool) {
	f.t.Helper()
	eventually(f.t, fmt.Sprintf("the replica's link up: %v", up), func() (bool, string) {
		info, err := c.Info(f.ctx, "replication").Result()
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up") == up, info
	})
}

// promote makes the replica c master (takeover: without its master's
// agreement, as after a partition) and waits until it is.
func (f *failoverCluster) promote(c *goredis.Client, how string) {
	f.t.Helper()
	args := []any{"cluster", "failover"}
	if how != "" {
		args = append(args, how)
	}
	f.must(c.Do(f.ctx, args...).Err())
	eventually(f.t, "the replica promoted", func() (bool, string) {
		info, err := c.Info(f.ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master"), info
	})
}

// awaitDemoted waits until c, the master that another node took over
// from, knows it: a takeover tells the other nodes at once, but a node
// whose cluster bus link is being set up again (under load) learns it
// from the gossip later, and until then takes writes to the slot as
// master, to lose them when it learns (Redis Cluster's window for lost
// writes). A test that counts on the new master's history waits for it.
func (f *failoverCluster) awaitDemoted(c *goredis.Client) {
	f.t.Helper()
	eventually(f.t, "the old master demoted", func() (bool, string) {
		info, err := c.Info(f.ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:slave"), info
	})
}

// write applies a change to record id of collection c through e, trying
// again while the cluster settles.
// failOverToThree sets the scene of the failback tests: a writes seqs 1
// to 3 (a, b, c), three takes over gracefully with them, w writes seq 4
// (d) through three, and three's replica, two, acknowledges it.
func (f *failoverCluster) failOverToThree(w *engine.Engine) {
	f.t.Helper()
	for _, v := range []string{"a", "b", "c"} {
		f.write(f.a, "r0", v)
	}
	f.promote(f.c3, "") // graceful: three has a, b, c
	f.awaitLink(f.c2, true)
	f.write(w, "r0", "d")
	if n, err := f.c3.Do(f.ctx, "wait", 1, 5000).Int(); err != nil || n != 1 {
		f.t.Fatalf("wait for the replica: %d, %v", n, err)
	}
}

func (f *failoverCluster) write(e *engine.Engine, id, field string) {
	t := f.t
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

// TestClusterFailoverResets: the master of a collection's slot has a
// replica that stopped replicating; the master acknowledges three more
// writes, and the replica takes over without them. The collection's
// sequence numbers then go back, and the next writes, through a server
// that never read the collection's head, give them out again (to the same
// record, so neither engine's own checks can tell): a cursor from before
// must be reset, history lost, although the stores' subscriptions, on
// another master, never broke. The store learns of the failover when the
// merge script is missing on the promoted node (NOSCRIPT: the scripts are
// loaded on the masters only, never on their replicas, whose script cache
// a promotion keeps) or when the node's run is not one it checked.
func TestClusterFailoverResets(t *testing.T) {
	f := newFailoverCluster(t)
	for _, v := range []string{"a", "b", "c"} {
		f.write(f.a, "r0", v) // seqs 1 to 3
	}
	if n, err := f.c2.Do(f.ctx, "wait", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("wait for the replica: %d, %v", n, err)
	}
	f.must(f.c2.Do(f.ctx, "acl", "deluser", "repl").Err())
	f.awaitLink(f.c3, false)
	for _, v := range []string{"x", "y", "z"} {
		f.write(f.a, "r0", v) // seqs 4 to 6, on the master alone
	}
	c := cursorAfterAll(t, f.a)
	f.promote(f.c3, "takeover")
	f.awaitDemoted(f.c2)
	// The other instance, which never read the collection's head,
	// writes: seqs 4 to 7 again, r0 at 7 without x, y, z. The reader's
	// server sees the head pass its cursor, and r0 move on as usual.
	for _, v := range []string{"p", "q", "r", "s"} {
		f.write(f.b, "r0", v)
	}
	if head, err := f.sb.Head(f.ctx, "c"); err != nil || head != 7 {
		t.Fatalf("head after the failover: %d, %v; want 7 (the promoted replica lacks x, y, z)", head, err)
	}
	awaitReset(f.t, f.a, c, "after the failover its reader keeps x, y, z, which the store lost")
}

// TestClusterFailbackResets: as TestClusterFailoverResets, but the node
// that takes over was the master once, and holds the merge script from
// then: the master fails over to its replica gracefully (nothing lost;
// the new master is checked and the epoch moves), the new master's
// replica, the old master, is cut off, the new master acknowledges three
// writes, and the old master takes over again without them. A server that
// saw nothing of the first failover then writes: it must find the node's
// run changed, not trust the merge script in its cache.
func TestClusterFailbackResets(t *testing.T) {
	f := newFailoverCluster(t)
	f.failOverToThree(f.a) // d: a new epoch
	f.must(f.c3.Do(f.ctx, "acl", "deluser", "repl").Err())
	f.awaitLink(f.c2, false)
	for _, v := range []string{"x", "y", "z"} {
		f.write(f.a, "r0", v) // seqs 5 to 7, on three alone
	}
	c := cursorAfterAll(t, f.a)
	f.promote(f.c2, "takeover")
	f.awaitDemoted(f.c3)
	for _, v := range []string{"p", "q", "r", "s"} {
		f.write(f.b, "r0", v) // seqs 5 to 8 again, on two
	}
	if head, err := f.sb.Head(f.ctx, "c"); err != nil || head != 8 {
		t.Fatalf("head after the failback: %d, %v; want 8 (the old master lacks x, y, z)", head, err)
	}
	awaitReset(f.t, f.a, c, "after the failover its reader keeps x, y, z, which the store lost")
}

// TestClusterFailbackRedirectResets: as TestClusterFailbackResets, but the
// server that writes after the failback last saw the slot on the node
// that was master before it, and checked that node's run: its round trip
// goes there, the demoted node answers MOVED, and the merge calls would
// go on to the node that took over, which holds the merge script from its
// first time as master and whose run no check found. That node gives out
// the seqs of x, y, z again (to the same record, so neither engine's own
// checks can tell), past a reader's cursor: the store must check the run
// before, and start a new epoch, so the reader is reset.
func TestClusterFailbackRedirectResets(t *testing.T) {
	f := newFailoverCluster(t)
	f.failOverToThree(f.b) // d: b checks three's run
	f.must(f.c3.Do(f.ctx, "acl", "deluser", "repl").Err())
	f.awaitLink(f.c2, false)
	// Three, once demoted, stays cut off too: it keeps its replication
	// id, the one b checked.
	f.must(f.c2.Do(f.ctx, "acl", "deluser", "repl").Err())
	for _, v := range []string{"x", "y", "z"} {
		f.write(f.a, "r0", v) // seqs 5 to 7, on three alone
	}
	c := cursorAfterAll(t, f.a)
	// b's slot map must name three, as its write of d left it. A reload
	// that followed the MOVED may have asked a node gossip had not yet
	// told of the failover (seen under load): b reloads until every node
	// it asks agrees, which is what the scenario needs, not a bound on
	// how fast the cluster settles.
	cc := f.sb.client.(*goredis.ClusterClient)
	eventually(t, "b's master of the collection's slot before the failback to be three, "+f.three.Addr(), func() (bool, string) {
		m, err := cc.MasterForKey(f.ctx, f.sb.seqKey("c"))
		if err == nil && m.Options().Addr == f.three.Addr() {
			return true, ""
		}
		cc.ReloadState(f.ctx)
		if err != nil {
			return false, err.Error()
		}
		return false, m.Options().Addr
	})
	f.promote(f.c2, "takeover")
	f.awaitDemoted(f.c3)
	// One batch: seqs 5 to 8 on two, past the reader's cursor.
	var changes []crdt.Change
	for i, v := range []string{"p", "q", "r", "s"} {
		changes = append(changes, crdt.Change{Collection: "c", Record: crdt.SetField("r0", v, mustValue(t, v), crdt.Stamp{Wall: time.Now().UnixMilli() + int64(i), Replica: "w"})})
	}
	var err error
	for try := 0; try == 0 || err != nil; try++ {
		if try == 50 {
			t.Fatal(err)
		}
		if try > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		_, err = f.b.Apply(context.Background(), changes)
	}
	if head, err := f.sb.Head(f.ctx, "c"); err != nil || head != 8 {
		t.Fatalf("head after the failback: %d, %v; want 8 (the old master lacks x, y, z)", head, err)
	}
	awaitReset(f.t, f.a, c, "after the failback its reader keeps x, y, z, which the store lost, and misses the seqs the new master gave out again")
}

// TestClusterPurgeRedirectKeepsOtherHistory: a purge goes to the node a
// store last saw serving the collection's slot, and that node answers
// MOVED, naming a node that took the slot over and whose run no check
// found. Two deletes r1 (seq 3) while cut off; three takes over, b writes
// through three (its check starts a new epoch, kept on node one, with the
// store-wide counter) and reads a horizon of three's history: epoch and
// seq 6. Two takes over again, holding its own history, and the
// collection's own counter is the same on both nodes, so the epoch read
// matches the horizon's. Purge must not remove, under that horizon, r1's
// tombstone, which no reader of three's history pulled: the store checks
// the run of the node the redirect names first, as merge calls do.
func TestClusterPurgeRedirectKeepsOtherHistory(t *testing.T) {
	f := newFailoverCluster(t)
	apply := func(s *Store, ch crdt.Change) {
		t.Helper()
		for try := 0; ; try++ {
			_, err := s.Apply(context.Background(), []crdt.Change{ch})
			if err == nil {
				return
			}
			if try == 50 {
				t.Fatal(err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	set := func(id, v string) crdt.Change {
		return crdt.Change{Collection: "c", Record: crdt.SetField(id, "f", mustValue(t, v), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "w"})}
	}
	apply(f.sa, set("r0", "a")) // seq 1
	apply(f.sa, set("r1", "b")) // seq 2
	if n, err := f.c2.Do(f.ctx, "wait", 1, 5000).Int(); err != nil || n != 1 {
		t.Fatalf("wait for the replica: %d, %v", n, err)
	}
	f.must(f.c2.Do(f.ctx, "acl", "deluser", "repl").Err())
	f.awaitLink(f.c3, false)
	// Two, once demoted, stays cut off too: it keeps its history.
	f.must(f.c3.Do(f.ctx, "acl", "deluser", "repl").Err())
	time.Sleep(2 * time.Millisecond)
	apply(f.sa, crdt.Change{Collection: "c", Record: crdt.DeleteRecord("r1", crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "w"})}) // seq 3, on two alone
	f.promote(f.c3, "takeover")
	f.awaitDemoted(f.c2)
	for _, v := range []string{"p", "q", "r", "s"} {
		apply(f.sb, set("r0", v)) // seqs 3 to 6, on three
	}
	m, err := f.sb.Meta(f.ctx, "c")
	f.must(err)
	if head, err := f.sb.Head(f.ctx, "c"); err != nil || head != 6 {
		t.Fatalf("head after the failover: %d, %v; want 6 (three lacks r1's delete)", head, err)
	}
	if m, err := f.sb.client.(*goredis.ClusterClient).MasterForKey(f.ctx, f.sb.seqKey("c")); err != nil || m.Options().Addr != f.three.Addr() {
		t.Fatalf("b's master of the collection's slot before the failback: %v, %v; want three, %s", m, err, f.three.Addr())
	}
	f.promote(f.c2, "takeover")
	f.awaitDemoted(f.c3)
	h := stores.Horizon{Epoch: m.Epoch, Read: []uint64{6}, Wall: time.Now().UnixMilli() + 3_600_000}
	res, err := f.sb.Purge(f.ctx, "c", h, stores.PurgeScan{})
	if ok, herr := f.c2.HExists(f.ctx, f.sb.recKey("c"), "r1").Result(); herr != nil || !ok {
		t.Fatalf("r1 on two after a purge under a horizon of three's history (%+v, %v): %v, %v; want its tombstone kept, which no reader of that history pulled", res, err, ok, herr)
	}
}
