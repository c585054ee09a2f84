package redis

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// splitClient sends a store's commands to one client and its subscription
// to another (through a proxy the test can freeze).
type splitClient struct {
	goredis.UniversalClient
	sub goredis.UniversalClient
}

func (c splitClient) Subscribe(ctx context.Context, channels ...string) *goredis.PubSub {
	return c.sub.Subscribe(ctx, channels...)
}

// openSplit opens a store whose subscription goes through a proxy and
// whose commands go straight to Redis.
func openSplit(t *testing.T, opts Options) (*Store, *blackhole) {
	t.Helper()
	tg := singleTarget(t)
	proxy := startBlackhole(t, tg.addrs[0])
	direct := goredis.NewClient(&goredis.Options{Addr: tg.addrs[0], ContextTimeoutEnabled: true})
	viaProxy := goredis.NewClient(&goredis.Options{Addr: proxy.addr(), ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { direct.Close(); viaProxy.Close() })
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = uniquePrefix()
	}
	s, err := New(splitClient{direct, viaProxy}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cleanupPrefix(t, tg, opts.KeyPrefix)
	return s, proxy
}

// A store tells its own watchers of its writes directly: with its
// subscription frozen (and the heartbeat off, so nothing replaces it), a
// watcher still hears of the write at once.
func TestLocalWatchersWithoutPubSub(t *testing.T) {
	s, proxy := openSplit(t, Options{Heartbeat: -1})
	rec := newRecorder()
	defer s.Watch(rec.notify)()
	rec.waitFor(t, "the first subscription", func(n int, _ map[string]uint64) bool { return n >= 1 })
	proxy.freeze()
	if _, err := s.Apply(testContext(t), []crdt.Change{{Collection: "c", Record: crdt.SetField("r", "f", mustValue(t, 1), crdt.Stamp{Wall: 1, Replica: "w"})}}); err != nil {
		t.Fatal(err)
	}
	// Nothing else can tell it: the publication is held on the frozen
	// connection, and a subscription go-redis or the store opens again
	// reports a Resync, never the head.
	rec.waitFor(t, "the write, told locally", func(_ int, h map[string]uint64) bool { return h["c"] == 1 })
}

// With the default heartbeat a silent subscription is found and replaced
// within a few seconds (2×DefaultHeartbeat and a reconnection): the
// replacement is the heartbeat's, not go-redis's own health check's, which
// pings only after 3 s of silence and so would find the stall later.
func TestDefaultHeartbeatFindsStallInSeconds(t *testing.T) {
	if 2*DefaultHeartbeat > 3*time.Second {
		t.Fatalf("DefaultHeartbeat %s: a stall would go unnoticed for %s", DefaultHeartbeat, 2*DefaultHeartbeat)
	}
	var logs storetest.LogBuffer
	s, proxy := openSplit(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	rec := newRecorder()
	defer s.Watch(rec.notify)()
	rec.waitFor(t, "the first subscription", func(n int, _ map[string]uint64) bool { return n >= 1 })
	proxy.freeze()
	rec.waitFor(t, "a Resync after the stall", func(n int, _ map[string]uint64) bool { return n >= 2 })
	// The subscriber logs why it replaced the subscription before the new
	// one reports its Resync.
	if out := logs.String(); !strings.Contains(out, errSilent.Error()) {
		t.Fatalf("the stall was not found by the heartbeat; the store logged:\n%s", out)
	}
}

var _ = stores.Notification{}
