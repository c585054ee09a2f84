package transport

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// gatedStore counts the Pulls of one collection and, while gated, holds
// each until open says or a while passed.
type gatedStore struct {
	stores.Store
	coll  string
	pulls atomic.Int64
	open  atomic.Pointer[func() bool]
}

func (s *gatedStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if coll == s.coll {
		s.pulls.Add(1)
		if open := s.open.Load(); open != nil {
			for deadline := time.Now().Add(10 * time.Second); !(*open)() && time.Now().Before(deadline); {
				time.Sleep(time.Millisecond)
			}
		}
	}
	return s.Store.Pull(ctx, coll, after, limit)
}

// Live subscribers of one collection under as many scopes as there are
// subscribers (a broadcast group each) share the store's read of the log
// after a write, and each is told exactly what its scope holds: its own
// record, and a leave for each of the others'. The store holds its read
// until every group has asked (or shared one), so that the count does not
// hang on how the groups' wake-ups spread.
func TestLiveScopesShareReads(t *testing.T) {
	const subscribers = 50
	ts := newTestServer(t, func(c *Config) { c.Demo = true; c.Limits.MaxConnsPerAddr = 2 * subscribers; c.Limits.Rate = -1 })
	gs := &gatedStore{Store: ts.store, coll: DemoCollection}
	eng := ts.serveOver(t, gs)

	clients := make([]*liveClient, subscribers)
	for i := range clients {
		clients[i], _ = ts.open(t, "")
		clients[i].send(proto.Sub{Collection: DemoCollection, Scope: mustScope(t, fmt.Sprintf(`owner == "c%d"`, i)).Encode()})
		if m, ok := clients[i].recv().(proto.Changes); !ok || len(m.Records) != 0 {
			t.Fatalf("first page: %#v", m)
		}
	}
	before, shared := gs.pulls.Load(), eng.SharedPulls()
	open := func() bool {
		// Every group read the store, or all but two shared a read: the
		// first and, for the groups that began after it, the next.
		return gs.pulls.Load()-before >= subscribers || eng.SharedPulls()-shared >= subscribers-2
	}
	gs.open.Store(&open)
	changes := make([]crdt.Change, subscribers)
	for i := range changes {
		changes[i] = set(t, DemoCollection, fmt.Sprintf("r%d", i), map[string]any{"owner": fmt.Sprintf("c%d", i)})
	}
	ts.push(t, "", changes...)

	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong []string
	for i, c := range clients {
		wg.Go(func() {
			own := fmt.Sprintf("r%d", i)
			var others [][]byte
			for j := range subscribers {
				if j != i {
					others = append(others, proto.LeaveDigest(DemoCollection, fmt.Sprintf("r%d", j)))
				}
			}
			var got []string
			var leaves [][]byte
			for !slices.Contains(got, own) || len(leaves) < len(others) {
				m, err := c.recvErr(20 * time.Second)
				ch, ok := m.(proto.Changes)
				if err != nil || !ok {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%d: %v (%v) after %v and %d leaves", i, m, err, got, len(leaves)))
					mu.Unlock()
					return
				}
				for _, r := range ch.Records {
					got = append(got, r.ID)
				}
				leaves = append(leaves, ch.Leaves...)
			}
			slices.SortFunc(leaves, func(a, b []byte) int { return strings.Compare(string(a), string(b)) })
			slices.SortFunc(others, func(a, b []byte) int { return strings.Compare(string(a), string(b)) })
			if len(got) != 1 || !slices.EqualFunc(leaves, others, func(a, b []byte) bool { return string(a) == string(b) }) {
				mu.Lock()
				wrong = append(wrong, fmt.Sprintf("%d: got records %v and %d leaves, want [%s] and a leave of each of the %d others", i, got, len(leaves), own, len(others)))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	gs.open.Store(nil)
	if len(wrong) > 0 {
		t.Fatalf("subscribers told wrong:\n%s", strings.Join(wrong, "\n"))
	}
	pulls := gs.pulls.Load() - before
	t.Logf("%d subscribers under %d scopes, one push: %d store reads of the log", subscribers, subscribers, pulls)
	if pulls > 2 {
		t.Errorf("%d store reads of the log for one push to %d groups woken together, want at most 2", pulls, subscribers)
	}
}
