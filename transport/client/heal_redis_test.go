package client_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport/client"
)

// privateRedis is a redis-server of the test's own, without persistence,
// on a port of 6390 to 6399: restarted, it comes back empty.
type privateRedis struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
}

func startPrivateRedis(t *testing.T) *privateRedis {
	t.Helper()
	r := &privateRedis{t: t, bin: storetest.Endpoint(t, "CONVERGO_REDIS_SERVER_BIN"), dir: t.TempDir()}
	for port := 6390; port <= 6399; port++ {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			l.Close()
			r.port = port
			break
		}
	}
	if r.port == 0 {
		t.Skip("no free port in 6390-6399 for a private redis-server")
	}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *privateRedis) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *privateRedis) start() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--save", "", "--appendonly", "no", "--logfile", filepath.Join(r.dir, "redis.log"))
	if err := r.cmd.Start(); err != nil {
		r.t.Fatalf("start %s: %v", r.bin, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", r.addr(), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server on %s did not start: %v\n%s", r.addr(), err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill stops the server with SIGKILL, as a crash would.
func (r *privateRedis) kill() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// TestHealLiveRedisRestartedEmpty: Redis without persistence restarts
// under a running server while two replicas are live (the server goes on,
// and so do their sessions): the store notices, the sessions are reset
// with history lost and heal, and the server and both replicas converge
// on everything acknowledged, with no session dialled again.
func TestHealLiveRedisRestartedEmpty(t *testing.T) {
	rs := startPrivateRedis(t)
	s := newLossServerOn(t, false, func() stores.Store {
		st, err := redis.Open(context.Background(), redis.Options{
			Addrs: []string{rs.addr()}, KeyPrefix: "heal:",
			DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	})
	alice := s.replica("alice", true, client.ReplicaConfig{}, nil)
	reader := s.replica("reader", false, client.ReplicaConfig{}, nil)
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	for i := range 10 {
		set(t, alice, fmt.Sprint("a", i), "n", i)
		set(t, bob, fmt.Sprint("b", i), "n", i)
	}
	syncAll(t, alice, bob, reader, alice)
	want := reader.Records("notes")
	if len(want) != 20 {
		t.Fatalf("the reader holds %d records, want 20", len(want))
	}
	runLive(t, alice)
	runLive(t, reader)
	waitLong(t, "two live sessions", func() bool { return s.liveConns(t) == 2 })
	// Bob goes away for good: the reader alone holds his records.
	dials := s.lives.Load()
	rs.kill()
	rs.start()
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
