package redis

import (
	"errors"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// epochKeys holds the raw values of the store-wide epoch key and of a
// collection's meta hash (fields n and lost): nil where missing.
type epochKeys struct {
	store   *string
	n, lost *string
}

func readEpochKeys(t testing.TB, s *Store, coll string) epochKeys {
	t.Helper()
	ctx := testContext(t)
	var k epochKeys
	v, err := s.client.Get(ctx, s.storeEpochKey()).Result()
	switch {
	case err == nil:
		k.store = &v
	case !errors.Is(err, goredis.Nil):
		t.Fatal(err)
	}
	vals, err := s.client.HMGet(ctx, s.metaKey(coll), "n", "lost").Result()
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range []**string{&k.n, &k.lost} {
		if str, ok := vals[i].(string); ok {
			*p = &str
		}
	}
	return k
}

// putBack writes k back, as a restored copy of the database would hold
// them.
func (k epochKeys) putBack(t testing.TB, s *Store, coll string) {
	t.Helper()
	ctx := testContext(t)
	if k.store == nil {
		if err := s.client.Del(ctx, s.storeEpochKey()).Err(); err != nil {
			t.Fatal(err)
		}
	} else if err := s.client.Set(ctx, s.storeEpochKey(), *k.store, 0).Err(); err != nil {
		t.Fatal(err)
	}
	for field, v := range map[string]*string{"n": k.n, "lost": k.lost} {
		var err error
		if v == nil {
			err = s.client.HDel(ctx, s.metaKey(coll), field).Err()
		} else {
			err = s.client.HSet(ctx, s.metaKey(coll), field, *v).Err()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestBumps runs the kit's bump checks against a single Redis and a
// Redis Cluster; a restore puts back the epoch keys as they were saved.
func TestBumps(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg target) {
		storetest.RunBumps(t, func(t testing.TB, now func() time.Time) stores.Store {
			return openStore(t, tg, Options{Now: now})
		}, func(t testing.TB, st stores.Store, coll string) func() {
			s := st.(*Store)
			saved := readEpochKeys(t, s, coll)
			return func() { saved.putBack(t, s, coll) }
		})
	})
}

// TestRunCheckAfterRestore: a Redis put back from before a restart of
// its server (an older snapshot) holds the epoch and the run record of
// then; the check of the server's run at the next restart bumps again,
// and must start an epoch past the one the lost restart started. Two
// instances checking at once bump once. The restarts are simulated on a
// private server without persistence: its recorded run is set to one
// that is no longer, which is what a restart leaves.
func TestRunCheckAfterRestore(t *testing.T) {
	srv := startServerFsync(t, "no")
	ctx := testContext(t)
	clock := storetest.NewClock()
	open := func() *Store {
		s, err := Open(ctx, Options{Addrs: []string{srv.Addr()}, KeyPrefix: "rc:", Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	restart := func() stores.Meta {
		t.Helper()
		if err := a.client.Set(ctx, a.serverKey(), "gone/gone", 0).Err(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, s := range []*Store{a, b} {
			wg.Go(func() {
				if err := s.checkRun(ctx); err != nil {
					t.Errorf("check the run: %v", err)
				}
			})
		}
		wg.Wait()
		m, err := a.Meta(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	before, err := a.Meta(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	saved := readEpochKeys(t, a, "c")
	lost := restart()
	if want := stores.NextEpoch(stores.StoreEpochOf(before), clock.Now()); stores.StoreEpochOf(lost) != want {
		t.Fatalf("after a restart checked by two instances: store-wide counter %d, want %d (one bump, from %d)", stores.StoreEpochOf(lost), want, stores.StoreEpochOf(before))
	}
	saved.putBack(t, a, "c")
	clock.Advance(10 * time.Second)
	now := restart()
	if now.Epoch <= lost.Epoch || now.Lost <= lost.Epoch {
		t.Fatalf("restart after a restore: Meta %+v, after the lost history's %+v; want an epoch and Lost past the lost history's epoch", now, lost)
	}
}

// TestRunCheckThroughABumpBurst: a run check that finds a restart while
// other bumps of the store-wide epoch keep landing (the engine's proofs on
// other instances, BumpEpochs) must still record the run, as the bumps do:
// a failed compare and set means another bump landed. A check that gives
// up leaves Meta failing until a later check succeeds.
func TestRunCheckThroughABumpBurst(t *testing.T) {
	srv := startServerFsync(t, "no")
	ctx := testContext(t)
	s, err := Open(ctx, Options{Addrs: []string{srv.Addr()}, KeyPrefix: "rb:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for round := range 5 {
		if err := s.client.Set(ctx, s.serverKey(), "gone/gone", 0).Err(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 40 {
			wg.Go(func() {
				if err := s.BumpEpochs(ctx); err != nil {
					t.Errorf("BumpEpochs: %v", err)
				}
			})
		}
		wg.Go(func() {
			if err := s.checkRun(ctx); err != nil {
				t.Errorf("round %d: the run check during a burst of bumps: %v", round, err)
			}
		})
		wg.Wait()
	}
}

// TestRunChanged holds runChanged's decisions: a failover always starts an
// epoch, a restart unless every master fsyncs always now and did when the
// record was made; a record from before the policy was recorded reads as
// the masters' policy now says.
func TestRunChanged(t *testing.T) {
	always := run{runID: "r2", replID: "p2", alwaysFsync: true}
	tests := []struct {
		name     string
		recorded []string
		runs     []run
		want     bool
	}{
		{"the same runs", []string{"r1/p1", "fsync=always"}, []run{{runID: "r1", replID: "p1", alwaysFsync: true}}, false},
		{"the same runs, the policy changed since", []string{"r1/p1", "fsync=no"}, []run{{runID: "r1", replID: "p1", alwaysFsync: true}}, false},
		{"a restart, always then and now", []string{"r1/p1", "fsync=always"}, []run{always}, false},
		{"a restart, always now, not then", []string{"r1/p1", "fsync=no"}, []run{always}, true},
		{"a restart, always then, not now", []string{"r1/p1", "fsync=always"}, []run{{runID: "r2", replID: "p2"}}, true},
		{"a restart, always now, a record without the policy", []string{"r1/p1"}, []run{always}, false},
		{"a restart, not always, a record without the policy", []string{"r1/p1"}, []run{{runID: "r2", replID: "p2"}}, true},
		{"a failover", []string{"r1/p1", "fsync=always"}, []run{{runID: "r2", replID: "p2", replID2: "p1", alwaysFsync: true}}, true},
		{"a failover, a record without the policy", []string{"r1/p1"}, []run{{runID: "r2", replID: "p2", replID2: "p1", alwaysFsync: true}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, why := runChanged(tt.recorded, tt.runs); got != tt.want {
				t.Fatalf("runChanged(%q, %+v) = %v (%s), want %v", tt.recorded, tt.runs, got, why, tt.want)
			}
		})
	}
}
