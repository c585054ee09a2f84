package transport

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
)

// probeCountingStore counts the reads of /readyz's probe and can be made
// to fail them, as a store whose backend went down.
type probeCountingStore struct {
	stores.Store
	probes atomic.Int64
	down   atomic.Bool
}

func (s *probeCountingStore) Head(ctx context.Context, coll string) (uint64, error) {
	if coll == probeCollection {
		s.probes.Add(1)
		if s.down.Load() {
			return 0, stores.ErrUnavailable
		}
	}
	return s.Store.Head(ctx, coll)
}

// /readyz asks for no credentials and is served to anyone who reaches the
// port: each call read the store, so one client calling it in a loop made
// as many reads of the store every tenant shares (on DynamoDB, paid
// ones). Calls within readyProbeFresh of a probe share it: however many
// come, the store is read at most once per period, and a change of the
// store's health is seen within that period.
func TestReadyzReadsTheStoreOncePerPeriod(t *testing.T) {
	ts := newTestServer(t, nil)
	st := &probeCountingStore{Store: ts.store}
	ts.serveOver(t, st)

	start := time.Now()
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				if code, _ := ts.get(t, "/readyz"); code != http.StatusOK {
					bad.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	if bad.Load() > 0 {
		t.Fatalf("%d of 100 calls not ready", bad.Load())
	}
	periods := int64(took/readyProbeFresh) + 1
	if got := st.probes.Load(); got > periods {
		t.Fatalf("100 calls of /readyz in %v read the store %d times, want at most %d (one per %v)", took, got, periods, readyProbeFresh)
	}

	// The store goes down: /readyz says so within a period or two.
	st.down.Store(true)
	deadline := time.Now().Add(2*readyProbeFresh + time.Second)
	for {
		code, _ := ts.get(t, "/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d %v after the store went down", code, 2*readyProbeFresh+time.Second)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parkingStore is a store whose capture parks n writes (stores.CaptureParker).
type parkingStore struct {
	stores.Store
	n atomic.Int64
}

func (s *parkingStore) ParkedCount() int { return int(s.n.Load()) }

func (s *parkingStore) ParkedCaptures() []stores.ParkedCapture {
	out := make([]stores.ParkedCapture, s.n.Load())
	for i := range out {
		out[i] = stores.ParkedCapture{Collection: "locked", Key: "locked#a", Reason: "fenced"}
	}
	return out
}

// Captured writes the store parks (their collection's changes fail) are
// shown: a gauge, and a line of /readyz, which stays ready (one
// collection's failure must not take the server from every tenant) and
// names no collection or key (anyone may call it).
func TestReadyzShowsParkedCaptures(t *testing.T) {
	ts := newTestServer(t, nil)
	st := &parkingStore{Store: ts.store}
	ts.serveOver(t, st)
	if code, body := ts.get(t, "/readyz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("readyz with nothing parked: %d %q", code, body)
	}
	if v := ts.metric(t, "convergo_capture_parked"); v != 0 {
		t.Fatalf("convergo_capture_parked %v, want 0", v)
	}
	st.n.Store(2)
	code, body := ts.get(t, "/readyz")
	if code != http.StatusOK || !strings.Contains(body, "capture: 2 writes of other programs parked") || strings.Contains(body, "locked") {
		t.Fatalf("readyz with 2 writes parked: %d %q, want 200 with their count alone", code, body)
	}
	if v := ts.metric(t, "convergo_capture_parked"); v != 2 {
		t.Fatalf("convergo_capture_parked %v, want 2", v)
	}
}

// Drain makes /readyz answer 503 "shutting down" while the server goes on
// serving: pushes, pulls and live sessions, old and new, so that a load
// balancer takes the instance out before its listeners close.
func TestReadyzWhileDraining(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	before, _ := ts.open(t, tok)
	ts.srv.Drain()
	if code, body := ts.get(t, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Fatalf("/readyz while draining: got %d %q, want 503 shutting down", code, body)
	}
	if code, body := ts.get(t, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while draining: got %d %q, want 200", code, body)
	}
	before.subOK("a sub on a session opened before the drain", "notes")
	after, _ := ts.open(t, tok)
	after.subOK("a sub on a session opened during the drain", "notes")
	if rs := ts.push(t, tok, change(t, "notes", "n1", "n", 1)); len(rs) != 1 || rs[0].Status != proto.StatusApplied {
		t.Fatalf("push while draining: got %+v, want one applied", rs)
	}
	if page := ts.pull(t, tok, "notes", 0); len(page.Records) != 1 {
		t.Fatalf("pull while draining: got %d records, want 1", len(page.Records))
	}
}
