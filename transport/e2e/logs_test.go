package e2e

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/convergo/convergo/stores/storetest"
)

// TestJSONLogsWhileRedisIsDown runs `convergo serve --log-format json` on
// a Redis that then dies: every line the server writes to stderr while it
// finds the store down, and until it stops, is one JSON object, as
// operations.md promises, so that a log pipeline parsing them loses
// nothing. The Redis client library logs failed dials through a logger of
// its own, which wrote plain-text lines ("redis: 2026/... pool.go:...")
// past the server's handler.
func TestJSONLogsWhileRedisIsDown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the convergo binary and redis-server")
	}
	rp, p, base := serveOnOwnRedis(t, "--log-format", "json")

	rp.kill(t)
	// The server says so once its /readyz finds the store down.
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(p.out.String(), "readiness lost") {
		_, _, _ = getURL(base + "/readyz")
		if p.exited() {
			t.Fatalf("the server exited: %v", p.err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the server did not log that it lost readiness a minute after Redis died")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-p.done
	for i, line := range strings.Split(strings.TrimSuffix(p.out.String(), "\n"), "\n") {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			t.Errorf("line %d of the server's output with --log-format json is not JSON: %q", i+1, line)
		}
	}
}

// serveOnOwnRedis starts the convergo binary on a redis-server of its own
// (CONVERGO_REDIS_SERVER_BIN), with flags after the usual ones, and waits
// until it is ready: the process of each and the server's base URL.
func serveOnOwnRedis(t *testing.T, flags ...string) (redis, server *process, base string) {
	t.Helper()
	redisBin := storetest.Endpoint(t, "CONVERGO_REDIS_SERVER_BIN")
	bin := buildConvergo(t)
	raddr, addr := freeAddr(t), freeAddr(t)
	redis = startRedis(t, redisBin, raddr, t.TempDir())
	args := append([]string{"serve", "--addr", addr, "--store", "redis://" + raddr, "--secret", string(secret), "--demo=false"}, flags...)
	server = startProcess(t, "convergo serve", bin, args...)
	base = "http://" + addr
	waitHTTP(t, server, base+"/readyz")
	return redis, server, base
}
