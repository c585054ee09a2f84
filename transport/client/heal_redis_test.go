package client_test

import (
	"context"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/redis/redistest"
	"github.com/convergo/convergo/transport/client"
)

// TestHealLiveRedisRestartedEmpty: Redis without persistence restarts
// under a running server while two replicas are live (the server goes on,
// and so do their sessions): the store notices, the sessions are reset
// with history lost and heal, and the server and both replicas converge
// on everything acknowledged, with no session dialled again.
func TestHealLiveRedisRestartedEmpty(t *testing.T) {
	rs := redistest.Start(t, "--save", "", "--appendonly", "no") // restarted, it comes back empty
	s := newLossServerOn(t, false, func() stores.Store {
		st, err := redis.Open(context.Background(), redis.Options{
			Addrs: []string{rs.Addr()}, KeyPrefix: "heal:",
			DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
	alice, reader, want := s.liveWriterAndReader(t)
	waitLong(t, "two live sessions", func() bool { return s.liveConns(t) == 2 })
	dials := s.lives.Load()
	rs.Kill()
	rs.Start()
	s.eventuallyConverged(t, want, map[string]*client.Replica{"alice": alice, "reader": reader}, nil)
	set(t, alice, "after", "n", 1)
	if err := alice.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitLong(t, "the reader to get a write live", func() bool { _, ok := reader.Get("notes", "after"); return ok })
	if n := s.lives.Load() - dials; n != 0 {
		t.Errorf("%d live dials across the Redis restart, want none", n)
	}
}

// TestHealLiveRedisTwoServers: as TestHealLiveRedisRestartedEmpty, with
// two servers on the one Redis, a writer live on one and a reader live
// on the other, and Redis restarted empty or from a snapshot older than
// the writer's last writes (which the reader streamed): both instances
// notice, both sessions are reset and heal, and both servers serve
// everything acknowledged.
func TestHealLiveRedisTwoServers(t *testing.T) {
	for _, older := range []bool{false, true} {
		t.Run(map[bool]string{false: "restarted empty", true: "restarted from an older snapshot"}[older], func(t *testing.T) {
			rs := redistest.Start(t, "--save", "", "--appendonly", "no")
			open := func() stores.Store {
				st, err := redis.Open(context.Background(), redis.Options{
					Addrs: []string{rs.Addr()}, KeyPrefix: "heal2:",
					DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1,
				})
				if err != nil {
					t.Fatal(err)
				}
				return st
			}
			one, two := newLossServerOn(t, false, open), newLossServerOn(t, false, open)
			alice := one.replica("alice", true, client.ReplicaConfig{}, nil)
			bob := one.replica("bob", true, client.ReplicaConfig{}, nil)
			reader := two.replica("reader", false, client.ReplicaConfig{}, nil)
			setEach(t, alice, "a", "n", 0, 10)
			setEach(t, bob, "b", "n", 0, 10)
			syncAll(t, alice, bob, reader, alice)
			runLive(t, alice)
			runLive(t, reader)
			waitLong(t, "a live session on each server", func() bool { return one.liveConns(t) == 1 && two.liveConns(t) == 1 })
			if older {
				// The snapshot Redis comes back from; alice writes past it,
				// and the reader streams her writes through the other server.
				rc := goredis.NewClient(&goredis.Options{Addr: rs.Addr()})
				if err := rc.Save(t.Context()).Err(); err != nil {
					t.Fatal(err)
				}
				rc.Close()
				setEach(t, alice, "late", "n", 0, 3)
				if err := alice.Flush(t.Context()); err != nil {
					t.Fatal(err)
				}
				waitLong(t, "the reader to stream alice's late writes", func() bool { _, ok := reader.Get("notes", "late2"); return ok })
			}
			want := reader.Records("notes")
			if n := map[bool]int{false: 20, true: 23}[older]; len(want) != n {
				t.Fatalf("the reader holds %d records, want %d", len(want), n)
			}
			rs.Kill()
			rs.Start()
			replicas := map[string]*client.Replica{"alice": alice, "reader": reader}
			one.eventuallyConverged(t, want, replicas, nil)
			two.eventuallyConverged(t, want, replicas, nil)
			// Healed, not kept: each server resets its live session. The
			// heal of the first to notice gives the records back before the
			// other need have read, so convergence comes first and the reset
			// of the other session follows its next read of the log.
			for name, s := range map[string]*lossServer{"one": one, "two": two} {
				waitLong(t, "server "+name+` to count a reset with history lost (convergo_resets_total{reason="history_lost"})`, func() bool {
					return s.metric(t, `convergo_resets_total{reason="history_lost"}`) >= 1
				})
			}
			set(t, alice, "after", "n", 1)
			if err := alice.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			waitLong(t, "the reader to get a write live through the other server", func() bool { _, ok := reader.Get("notes", "after"); return ok })
		})
	}
}
