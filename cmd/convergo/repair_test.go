package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"testing"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/stores/storeurl"
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

// convergo repair rebuilds a DynamoDB collection whose table (restored
// from a backup) holds a record item without its log entry: a pull from
// the beginning delivers the record after it, in a new epoch (rebuilt).
func TestRepairDynamoDB(t *testing.T) {
	ctx := context.Background()
	endpoint := storetest.Endpoint(t, "CONVERGO_DYNAMODB_ENDPOINT")
	table := "cmdtest-repair-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	url := "dynamodb://" + table + "?region=us-east-1&create=1&capture=0&endpoint=" + endpoint
	db := dynamoClient(t, endpoint)
	t.Cleanup(func() {
		if _, err := db.DeleteTable(context.Background(), &awsdynamodb.DeleteTableInput{TableName: &table}); err != nil {
			t.Logf("delete table %s: %v", table, err)
		}
	})
	st, err := storeurl.Open(ctx, url, storeurl.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	v, _ := crdt.EncodeValue("x")
	for _, id := range []string{"r1", "r2", "r3"} {
		if _, err := st.Apply(ctx, []crdt.Change{{Collection: "todos", Record: crdt.SetField(id, "f", v, crdt.Stamp{Wall: 1, Replica: "w"})}}); err != nil {
			t.Fatal(err)
		}
	}
	deleteLogEntry(t, db, table, "todos", 2)
	if ids := pulledIDs(t, st, "todos"); strings.Join(ids, " ") != "r1 r3" {
		t.Fatalf("before the repair a pull delivers %v, want [r1 r3]", ids)
	}
	before, err := st.Meta(ctx, "todos")
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(ctx, []string{"repair", "--store", url, "--collection", "todos"}, &out, &errOut); err != nil {
		t.Fatalf("repair: %v (%s)", err, errOut.String())
	}
	if !strings.Contains(out.String(), "3 records") {
		t.Errorf("repair said %q", out.String())
	}
	if ids := pulledIDs(t, st, "todos"); strings.Join(ids, " ") != "r1 r2 r3" {
		t.Fatalf("after the repair a pull delivers %v, want [r1 r2 r3]", ids)
	}
	after, err := st.Meta(ctx, "todos")
	if err != nil || after.Epoch <= before.Epoch || after.Lost != before.Lost {
		t.Fatalf("Meta %+v (%v) after the repair, %+v before: want a new epoch of cause rebuilt", after, err, before)
	}
}

func redisSet(ctx context.Context, addr, key string) error {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	return c.Set(ctx, key, "overwritten", 0).Err()
}
