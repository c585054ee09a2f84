package engine_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/redis/redistest"
	"github.com/convergo/convergo/stores/storetest"
)

// skewedClock is the real clock moved by an offset the test sets: a
// server instance whose clock is off.
type skewedClock struct{ off atomic.Int64 }

func (c *skewedClock) now() time.Time           { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *skewedClock) set(off time.Duration)    { c.off.Store(int64(off)) }
func (c *skewedClock) config() func() time.Time { return c.now }

// sharedRedis opens a store on the shared Redis under a key prefix of the
// test's own.
func sharedRedis(t *testing.T) *redis.Store {
	t.Helper()
	addr := storetest.Endpoint(t, "CONVERGO_REDIS_ADDR")
	st, err := redis.Open(context.Background(), redis.Options{Addrs: []string{addr}, KeyPrefix: "clockcheck:" + t.Name() + ":"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// An instance checks its clock against the store's at Open and on each
// CheckClock: off by more than MaxClockSkew (half the max drift) either
// way, it says so (ClockHealth, an ERROR log with both times) until a
// later check finds it back within bounds.
func TestClockCheckAgainstRedis(t *testing.T) {
	st := sharedRedis(t)
	var clock skewedClock
	clock.set(365 * 24 * time.Hour)
	var logs storetest.LogBuffer
	e, err := engine.Open(engine.Config{Store: st, Now: clock.config(), PollInterval: -1, ClockCheckEvery: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got, want := e.MaxClockSkew(), crdt.DefaultMaxDrift/2; got != want {
		t.Fatalf("MaxClockSkew %v, want %v (half the max drift)", got, want)
	}
	// Checked at Open: a year ahead.
	var skew *engine.ClockSkewError
	if err := e.ClockHealth(); !errors.Is(err, engine.ErrClockSkew) || !errors.As(err, &skew) {
		t.Fatalf("a year ahead, after Open: ClockHealth %v, want ErrClockSkew", err)
	}
	if d := skew.Reading.Skew - 365*24*time.Hour; d < -time.Minute || d > time.Minute {
		t.Fatalf("skew %v, want about a year", skew.Reading.Skew)
	}
	out := logs.String()
	if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "server_time=") || !strings.Contains(out, "store_time=") {
		t.Fatalf("no ERROR log with both times:\n%s", out)
	}
	for _, tc := range []struct {
		name string
		off  time.Duration
		bad  bool
	}{
		{"in time", 0, false},
		{"a year behind", -365 * 24 * time.Hour, true},
		{"just within", e.MaxClockSkew() - 5*time.Second, false},
		{"just behind the bound", -e.MaxClockSkew() - 5*time.Second, true},
		{"just ahead of the bound", e.MaxClockSkew() + 5*time.Second, true},
		{"back in time", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock.set(tc.off)
			r, err := e.CheckClock(context.Background())
			if tc.bad != errors.Is(err, engine.ErrClockSkew) {
				t.Fatalf("CheckClock %v (reading %+v), want off %v", err, r, tc.bad)
			}
			if !tc.bad && err != nil {
				t.Fatal(err)
			}
			if h := e.ClockHealth(); tc.bad != (h != nil) {
				t.Fatalf("ClockHealth %v, want off %v", h, tc.bad)
			}
			if r.Off() != tc.bad {
				t.Fatalf("reading %+v: Off %v, want %v", r, r.Off(), tc.bad)
			}
			if d := r.Skew - tc.off; d < -time.Second || d > time.Second {
				t.Fatalf("skew %v, want about %v", r.Skew, tc.off)
			}
		})
	}
	if !strings.Contains(logs.String(), "back within") {
		t.Fatalf("nothing logged when the clock came back:\n%s", logs.String())
	}
}

// The check runs every ClockCheckEvery: an instance whose clock is set
// right serves again without a restart.
func TestClockCheckPeriodic(t *testing.T) {
	st := sharedRedis(t)
	var clock skewedClock
	clock.set(-365 * 24 * time.Hour)
	e, err := engine.Open(engine.Config{Store: st, Now: clock.config(), PollInterval: -1, ClockCheckEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.ClockHealth(); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("a year behind: ClockHealth %v, want ErrClockSkew", err)
	}
	clock.set(0)
	deadline := time.Now().Add(10 * time.Second)
	for e.ClockHealth() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("still off 10s after the clock came back: %v", e.ClockHealth())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A check that cannot read the store's clock is no skew: it changes
// nothing, whichever way the instance stood.
func TestClockCheckStoreUnreachable(t *testing.T) {
	rs := redistest.Start(t, "--save", "", "--appendonly", "no")
	// Timeouts a loaded machine meets: once the server is killed its port
	// refuses at once, so they do not slow the checks below.
	st, err := redis.Open(context.Background(), redis.Options{Addrs: []string{rs.Addr()}, KeyPrefix: "clock:",
		DialTimeout: 5 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var clock skewedClock
	e, err := engine.Open(engine.Config{Store: st, Now: clock.config(), PollInterval: -1, ClockCheckEvery: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.ClockHealth(); err != nil {
		t.Fatalf("in time: %v", err)
	}
	rs.Kill()
	clock.set(365 * 24 * time.Hour)
	_, err = e.CheckClock(context.Background())
	if err == nil || errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("store down: CheckClock %v, want a store error, not a skew", err)
	}
	if err := e.ClockHealth(); err != nil {
		t.Fatalf("store down: ClockHealth %v, want nil (unknown is not off)", err)
	}
	// Off, then the store goes away again: still off.
	rs.Start()
	if _, err := e.CheckClock(context.Background()); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("store back, a year ahead: %v, want ErrClockSkew", err)
	}
	rs.Kill()
	clock.set(0)
	if _, err := e.CheckClock(context.Background()); err == nil || errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("store down again: CheckClock %v, want a store error", err)
	}
	if err := e.ClockHealth(); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("store down again: ClockHealth %v, want still ErrClockSkew", err)
	}
}

// A store of one process (memory, bbolt) has no clock of its own: the
// engine checks nothing and says why.
func TestClockCheckWithoutStoreClock(t *testing.T) {
	var clock skewedClock
	clock.set(365 * 24 * time.Hour)
	var st stores.Store = memory.New()
	if _, ok := st.(engine.StoreClock); ok {
		t.Fatal("the memory store has a clock of its own?")
	}
	e, err := engine.Open(engine.Config{Store: st, Now: clock.config(), PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.CheckClock(context.Background()); !errors.Is(err, engine.ErrNoStoreClock) {
		t.Fatalf("CheckClock %v, want ErrNoStoreClock", err)
	}
	if err := e.ClockHealth(); err != nil {
		t.Fatalf("ClockHealth %v, want nil", err)
	}
}

// The round trip is allowed for: the store's clock was read at some
// moment of it, so only a skew beyond the bound plus half of it counts.
func TestClockCheckAllowsForTheRoundTrip(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	local := base
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return local }
	for _, tc := range []struct {
		name       string
		storeAt    time.Duration // the store's reading, from the midpoint
		roundTrip  time.Duration
		resolution time.Duration
		off        bool
	}{
		// The engine's clock reads base at the start of the call and
		// base+roundTrip at its end; storeAt is the store's reading from
		// the midpoint, so the skew is -storeAt (less half the resolution).
		{"in time", 0, 0, 0, false},
		{"over the bound, no round trip", -(150*time.Second + time.Millisecond), 0, 0, true},
		{"ahead over the bound, no round trip", 150*time.Second + time.Millisecond, 0, 0, true},
		{"over the bound by less than half the round trip", -150*time.Second - 900*time.Millisecond, 2 * time.Second, 0, false},
		{"over the bound by more than half the round trip", -150*time.Second - 900*time.Millisecond, time.Second, 0, true},
		{"over the bound by less than half the resolution", -150*time.Second - 1900*time.Millisecond, 0, 2 * time.Second, false},
		{"over the bound by more than half the resolution", -150*time.Second - 2100*time.Millisecond, 0, 2 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &fakeClockStore{Store: memory.New(), resolution: tc.resolution, read: func() time.Time {
				mu.Lock()
				defer mu.Unlock()
				at := local.Add(tc.roundTrip / 2).Add(tc.storeAt)
				local = local.Add(tc.roundTrip) // the call takes the round trip
				return at
			}}
			mu.Lock()
			local = base
			mu.Unlock()
			e, err := engine.Open(engine.Config{Store: st, Now: now, PollInterval: -1, ClockCheckEvery: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			mu.Lock()
			local = base
			mu.Unlock()
			r, err := e.CheckClock(context.Background())
			if tc.off != errors.Is(err, engine.ErrClockSkew) || (!tc.off && err != nil) {
				t.Fatalf("CheckClock %v (%+v), want off %v", err, r, tc.off)
			}
		})
	}
}

// fakeClockStore is a store whose clock reads read.
type fakeClockStore struct {
	stores.Store
	read       func() time.Time
	resolution time.Duration
}

func (s *fakeClockStore) StoreTime(context.Context) (time.Time, time.Duration, error) {
	return s.read(), s.resolution, nil
}

// An instance whose clock is off collects no tombstones: its leases and
// horizons would be off by as much.
func TestCollectRefusedWhileClockOff(t *testing.T) {
	var clock skewedClock
	clock.set(365 * 24 * time.Hour)
	st := &fakeClockStore{Store: memory.New(), read: time.Now}
	e, err := engine.Open(engine.Config{Store: st, Now: clock.config(), PollInterval: -1, ClockCheckEvery: time.Hour,
		Rules: []engine.Rule{{Pattern: "notes", MaxOffline: time.Hour}}, CollectEvery: -1, CollectGrace: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Collect(context.Background()); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("Collect a year ahead: %v, want ErrClockSkew", err)
	}
	clock.set(0)
	if _, err := e.CheckClock(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Collect(context.Background()); err != nil {
		t.Fatalf("Collect in time: %v", err)
	}
}
