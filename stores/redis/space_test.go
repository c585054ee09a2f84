package redis

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// BenchmarkSpace: storetest.BenchSpace on Redis, each store on a
// redis-server of its own (CONVERGO_REDIS_SERVER_BIN; no persistence),
// whose live bytes are INFO memory's used_memory (the server's own
// baseline, about a megabyte, included) (CONVERGO_SPACE_BENCH=1).
func BenchmarkSpace(b *testing.B) {
	bin := os.Getenv("CONVERGO_REDIS_SERVER_BIN")
	if bin == "" {
		b.Skip("set CONVERGO_REDIS_SERVER_BIN to a redis-server binary")
	}
	addrs := map[stores.Store]string{}
	storetest.BenchSpace(b, func(t testing.TB) stores.Store {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no", "--dir", b.TempDir())
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		for i := 0; ; i++ {
			c := goredis.NewClient(&goredis.Options{Addr: addr})
			err := c.Ping(context.Background()).Err()
			c.Close()
			if err == nil {
				break
			}
			if i > 100 {
				t.Fatal(err)
			}
			time.Sleep(50 * time.Millisecond)
		}
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
