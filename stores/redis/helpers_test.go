package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// The integration tests need a Redis 7 server and a Redis 7 Cluster. They
// find them through storetest.Endpoint, which skips a test (saying which
// variable to set) when its service is not configured, or fails it under
// the README's test command, which sets both.
const (
	envAddr         = "CONVERGO_REDIS_ADDR"          // host:port of a single Redis
	envClusterAddrs = "CONVERGO_REDIS_CLUSTER_ADDRS" // comma-separated cluster nodes
)

// target is one Redis deployment the tests run against.
type target struct {
	name    string
	addrs   []string
	cluster bool
}

func singleTarget(t testing.TB) target {
	t.Helper()
	return target{name: "single", addrs: []string{storetest.Endpoint(t, envAddr)}}
}

func clusterTarget(t testing.TB) target {
	t.Helper()
	return target{name: "cluster", addrs: strings.Split(storetest.Endpoint(t, envClusterAddrs), ","), cluster: true}
}

// eachTarget runs f once against the single node and once against the
// cluster, each as a subtest that skips when its variable is unset.
func eachTarget(t *testing.T, f func(t *testing.T, tg target)) {
	t.Run("single", func(t *testing.T) { f(t, singleTarget(t)) })
	t.Run("cluster", func(t *testing.T) { f(t, clusterTarget(t)) })
}

// uniquePrefix returns a fresh key prefix for one test.
func uniquePrefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "convergotest:" + hex.EncodeToString(b) + ":"
}

func (tg target) options(prefix string) Options {
	return Options{Addrs: tg.addrs, Cluster: tg.cluster, KeyPrefix: prefix}
}

// openStore opens a store on tg with a fresh key prefix (or the one in
// opts), closes it and deletes the prefix's keys when the test ends.
func openStore(t testing.TB, tg target, opts Options) *Store {
	t.Helper()
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = uniquePrefix()
	}
	opts.Addrs, opts.Cluster = tg.addrs, tg.cluster
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, opts)
	if err != nil {
		t.Fatalf("open %s: %v", tg.name, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	cleanupPrefix(t, tg, opts.KeyPrefix)
	return s
}

// cleanupPrefix deletes every key under prefix when the test ends: SCAN on
// each master (in a cluster every node holds its own keys) and DEL key by
// key (a multi-key DEL across slots is refused in a cluster).
func cleanupPrefix(t testing.TB, tg target, prefix string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		client := goredis.NewUniversalClient(&goredis.UniversalOptions{Addrs: tg.addrs, IsClusterMode: tg.cluster})
		defer client.Close()
		del := func(ctx context.Context, node *goredis.Client) error {
			iter := node.Scan(ctx, 0, globEscape(prefix)+"*", 500).Iterator()
			pipe := node.Pipeline()
			for iter.Next(ctx) {
				pipe.Unlink(ctx, iter.Val())
			}
			if err := iter.Err(); err != nil {
				return err
			}
			if pipe.Len() == 0 {
				return nil
			}
			_, err := pipe.Exec(ctx)
			return err
		}
		var err error
		switch c := client.(type) {
		case *goredis.ClusterClient:
			err = c.ForEachMaster(ctx, del)
		case *goredis.Client:
			err = del(ctx, c)
		}
		if err != nil {
			t.Errorf("delete keys under %q: %v", prefix, err)
		}
	})
}

func testContext(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// page10 is a page limit of 10 records and the default byte budget.
var page10 = stores.PageLimit{Records: 10, Bytes: stores.DefaultPageBytes}
