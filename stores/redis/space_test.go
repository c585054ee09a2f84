package redis

import (
	"context"
	"strconv"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis/redistest"
	"github.com/convergo/convergo/stores/storetest"
)

// BenchmarkSpace: storetest.BenchSpace on Redis, each store on a
// redis-server of its own (redistest.Start; no persistence), whose live
// bytes are INFO memory's used_memory (the server's own
// baseline, about a megabyte, included) (CONVERGO_SPACE_BENCH=1).
func BenchmarkSpace(b *testing.B) {
	addrs := map[stores.Store]string{}
	storetest.BenchSpace(b, func(t testing.TB) stores.Store {
		addr := redistest.Start(t, "--save", "", "--appendonly", "no").Addr()
		s := openStore(t, target{name: "space", addrs: []string{addr}}, Options{})
		addrs[s] = addr
		return s
	}, func(t testing.TB, s stores.Store) int64 {
		c := goredis.NewClient(&goredis.Options{Addr: addrs[s]})
		defer c.Close()
		info, err := c.Info(context.Background(), "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		v, err := strconv.ParseInt(strings.TrimSpace(infoField(info, "used_memory")), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}, 1_000_000, 100_000)
}
