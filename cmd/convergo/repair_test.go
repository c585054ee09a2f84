package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/storetest"
)

func TestRepairNeedsFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"repair", "--store", "memory:"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "--collection") {
		t.Fatalf("repair without --collection: got %v", err)
	}
	if err := run(context.Background(), []string{"repair", "--store", "memory:", "--collection", "c"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "nothing to repair") {
		t.Fatalf("repair of a memory store: got %v", err)
	}
}

// convergo repair rebuilds a Redis collection whose log was overwritten.
func TestRepairRedis(t *testing.T) {
	addr := storetest.Endpoint(t, "CONVERGO_REDIS_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	prefix := "convergotest:" + hex.EncodeToString(b) + ":"
	s, err := redis.Open(ctx, redis.Options{Addrs: []string{addr}, KeyPrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	defer func() {
		c := goredis.NewClient(&goredis.Options{Addr: addr})
		defer c.Close()
		keys, _ := c.Keys(context.Background(), prefix+"*").Result()
		for _, k := range keys {
			c.Del(context.Background(), k)
		}
	}()
	if _, err := s.Identity(ctx); err != nil { // as a server's first read does
		t.Fatal(err)
	}
	v, _ := crdt.EncodeValue("x")
	for _, id := range []string{"a", "b"} {
		if _, err := s.Apply(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField(id, "f", v, crdt.Stamp{Wall: 1, Replica: "w"})}}); err != nil {
			t.Fatal(err)
		}
	}
	// Damage the log behind the store's back: a string where the zset was.
	if err := redisSet(ctx, addr, prefix+"{c}:log"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, "c", 0, stores.PageLimit{Records: 10, Bytes: 1 << 20}); err == nil {
		t.Fatal("pull of a damaged log succeeded")
	}
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"repair", "--store", "redis://" + addr + "?prefix=" + prefix, "--collection", "c"}, &out, &errOut); err != nil {
		t.Fatalf("repair: %v (%s)", err, errOut.String())
	}
	if !strings.Contains(out.String(), "2 records") {
		t.Errorf("repair said %q", out.String())
	}
	p, err := s.Pull(ctx, "c", 0, stores.PageLimit{Records: 10, Bytes: 1 << 20})
	if err != nil || len(p.Entries) != 2 {
		t.Fatalf("pull after repair: %+v, %v", p, err)
	}
}

func redisSet(ctx context.Context, addr, key string) error {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	return c.Set(ctx, key, "overwritten", 0).Err()
}
