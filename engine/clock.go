package engine

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultClockCheckEvery is how often the engine checks its clock against
// the store's (CheckClock) when Config.ClockCheckEvery is zero.
const DefaultClockCheckEvery = 30 * time.Second

// clockCheckTimeout bounds one reading of the store's clock by the
// engine's own checks (Open's, the periodic ones).
const clockCheckTimeout = 5 * time.Second

// StoreClock is a store with a clock of its own that every server
// instance on it reads: the engine checks its clock (Config.Now) against
// it (CheckClock). The Redis store reads TIME (of the node the command
// reaches, on a cluster), the DynamoDB store the Date header of an
// answer. A store of one process (memory, bbolt) runs on that process's
// clock, and has nothing to check against: it does not implement it.
type StoreClock interface {
	// StoreTime reads the store's clock once: at some moment during the
	// call it read at least t and less than t+resolution, the resolution
	// of what the store sends (a microsecond for Redis's TIME, a second
	// for an HTTP Date header).
	StoreTime(ctx context.Context) (t time.Time, resolution time.Duration, err error)
}

// ErrClockSkew is wrapped by the error of a clock check (CheckClock,
// ClockHealth) that found the engine's clock off the store's by more than
// MaxClockSkew; the error is a *ClockSkewError.
var ErrClockSkew = errors.New("the server's clock is off the store's")

// ErrNoStoreClock is CheckClock's error on a store without a clock of its
// own (StoreClock): there is nothing to check against.
var ErrNoStoreClock = errors.New("the store has no clock of its own: the server's clock is not checked")

// ClockReading is one check of the engine's clock against the store's.
type ClockReading struct {
	// Server is the engine's clock midway through the reading, Store the
	// store's reading (the middle of its resolution).
	Server, Store time.Time
	// Skew is Server - Store: positive when the engine's clock is ahead.
	Skew time.Duration
	// RoundTrip is how long the reading took, by the engine's clock.
	RoundTrip time.Duration
	// Allowance is how far Skew may go either way: MaxClockSkew, plus
	// half the round trip and half the store's resolution, within which
	// the store may have read its clock at any moment.
	Allowance time.Duration
}

// Off reports whether the reading found the clocks further apart than
// its allowance.
func (r ClockReading) Off() bool { return r.Skew > r.Allowance || -r.Skew > r.Allowance }

// ClockSkewError is a clock check's finding that the engine's clock is
// off the store's. It wraps ErrClockSkew.
type ClockSkewError struct{ Reading ClockReading }

func (e *ClockSkewError) Error() string {
	r := e.Reading
	way, by := "ahead of", r.Skew
	if by < 0 {
		way, by = "behind", -by
	}
	return fmt.Sprintf("%v: %v %s the store's (server %s, store %s; at most %v allowed)",
		ErrClockSkew, by.Round(time.Millisecond), way, r.Server.UTC().Format(time.RFC3339Nano), r.Store.UTC().Format(time.RFC3339Nano),
		r.Allowance.Round(time.Millisecond))
}

func (e *ClockSkewError) Unwrap() error { return ErrClockSkew }

// MaxClockSkew is how far the engine's clock may be off the store's, either
// way: half the max drift. Clients correct their clocks by the server
// time of the instance they said hello to (docs/protocol.md, section 6),
// and may push to another: two instances each within half the max drift
// of the store's clock accept each other's clients' stamps, and an
// instance further off would have its clients' stamps refused
// clock_drift by the others (ahead), or refuse theirs (behind).
func (e *Engine) MaxClockSkew() time.Duration { return e.maxDrift / 2 }

// ClockCheckEvery returns how often the engine checks its clock against
// the store's; 0 when it does not on its own (Config.ClockCheckEvery
// negative, or a store without a clock: StoreClock).
func (e *Engine) ClockCheckEvery() time.Duration {
	if _, ok := e.store.(StoreClock); !ok || e.clockEvery < 0 {
		return 0
	}
	return e.clockEvery
}

// clockState is what the last clock check found.
type clockState struct {
	read bool // a reading was made
	last ClockReading
}

// CheckClock reads the store's clock (StoreClock) and compares it with
// the engine's, allowing for the round trip: the engine's reading is the
// midpoint of its readings before and after the store's, and the store
// may have read its clock at any moment between them. A reading off by
// more than MaxClockSkew is logged at ERROR, with both times, makes
// ClockHealth fail, and is returned as a *ClockSkewError, until a later
// check finds the clocks back within bounds. A check that cannot read the
// store's clock (the store unreachable) returns the store's error and
// changes nothing: not knowing is not being off. On a store without a
// clock it returns ErrNoStoreClock.
//
// The engine checks at Open and every Config.ClockCheckEvery; the
// transport layer refuses hellos and pushes while ClockHealth fails, the
// tombstone collection job does not run, NoteLease writes no lease, the
// engine's own writes (Put, Update, Unset, Delete) are refused and
// captured changes held back (takesCaptured), all with ClockHealth's
// error.
func (e *Engine) CheckClock(ctx context.Context) (ClockReading, error) {
	sc, ok := e.store.(StoreClock)
	if !ok {
		return ClockReading{}, ErrNoStoreClock
	}
	before := e.now()
	at, res, err := sc.StoreTime(ctx)
	after := e.now()
	if err != nil {
		return ClockReading{}, fmt.Errorf("read the store's clock: %w", err)
	}
	rt := max(after.Sub(before), 0)
	r := ClockReading{Server: before.Add(rt / 2), Store: at.Add(res / 2), RoundTrip: rt,
		Allowance: e.MaxClockSkew() + rt/2 + res/2}
	r.Skew = r.Server.Sub(r.Store)
	e.clockMu.Lock()
	wasOff := e.clock.read && e.clock.last.Off()
	e.clock = clockState{read: true, last: r}
	e.clockMu.Unlock()
	if r.Off() {
		err := &ClockSkewError{Reading: r}
		e.log.Error("this server's clock is off the store's: refusing hellos and pushes, and not collecting tombstones, until it is back within bounds; set the server's clock right (NTP)",
			"server_time", r.Server.UTC(), "store_time", r.Store.UTC(), "skew", r.Skew, "max_skew", e.MaxClockSkew(), "round_trip", r.RoundTrip)
		return r, err
	}
	if wasOff {
		e.log.Warn("this server's clock is back within bounds of the store's: serving again",
			"server_time", r.Server.UTC(), "store_time", r.Store.UTC(), "skew", r.Skew, "max_skew", e.MaxClockSkew())
	}
	return r, nil
}

// ClockHealth returns a *ClockSkewError (wrapping ErrClockSkew) while the
// last clock check that read the store's clock found the engine's off, nil
// otherwise: in bounds, never checked, or a store without a clock.
func (e *Engine) ClockHealth() error {
	e.clockMu.Lock()
	defer e.clockMu.Unlock()
	if e.clock.read && e.clock.last.Off() {
		return &ClockSkewError{Reading: e.clock.last}
	}
	return nil
}

// LastClockReading returns the last reading of a clock check, and whether
// one was made.
func (e *Engine) LastClockReading() (ClockReading, bool) {
	e.clockMu.Lock()
	defer e.clockMu.Unlock()
	return e.clock.last, e.clock.read
}

// checkClockNow is one check of the engine's own (at Open, periodic):
// a store it could not read is logged, not taken for a skew.
func (e *Engine) checkClockNow(ctx context.Context) {
	readCtx, cancel := context.WithTimeout(ctx, clockCheckTimeout)
	defer cancel()
	_, err := e.CheckClock(readCtx)
	if err != nil && !errors.Is(err, ErrClockSkew) && ctx.Err() == nil {
		e.log.Warn("clock check: could not read the store's clock; the server's clock is not checked until it can", "err", err)
	}
}

// every runs fn every period until ctx ends: the engine's background
// jobs (the clock check, tombstone collection), counted in e.wg.
func (e *Engine) every(ctx context.Context, period time.Duration, fn func(context.Context)) {
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			fn(ctx)
		}
	}()
}
