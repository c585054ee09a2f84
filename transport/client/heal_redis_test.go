package client_test

import (
	"context"
	"testing"
	"time"

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
