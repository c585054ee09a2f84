package crdt

import (
	"cmp"
	"fmt"
	"math"
	"strings"
	"time"
)

// MaxWall is the largest wall time (milliseconds since the Unix epoch) a stamp
// may carry: 2^53-1, the largest integer a JavaScript number holds exactly.
const MaxWall = 1<<53 - 1

// MaxLogical is the largest logical counter a stamp may carry.
const MaxLogical = math.MaxUint32

// MaxIssuedLogical is the largest logical counter a Clock issues: past it
// the clock carries into the wall part (one millisecond later, counter 0)
// instead of failing. An honest replica's clock therefore never stamps above
// it, and a server refuses pushed stamps that do (engine admission); stored
// records may still hold larger counters, up to MaxLogical, and decode.
// 65,535 events in one millisecond, or while the clock runs ahead of wall
// time, is far beyond what one replica makes.
const MaxIssuedLogical = 1<<16 - 1

// DefaultMaxDrift is how far ahead of local wall time a remote stamp may be
// before Observe refuses it.
const DefaultMaxDrift = 5 * time.Minute

// Timestamp is the clock part of a hybrid logical clock reading: wall time in
// milliseconds since the Unix epoch and a logical counter that orders events
// within one millisecond (or while the wall clock lags behind stamps already
// seen).
type Timestamp struct {
	Wall    int64
	Logical uint32
}

// Compare orders timestamps by wall time, then logical counter.
func (t Timestamp) Compare(u Timestamp) int {
	if c := cmp.Compare(t.Wall, u.Wall); c != 0 {
		return c
	}
	return cmp.Compare(t.Logical, u.Logical)
}

// Stamp is a timestamp made unique by the id of the replica that issued it.
// Stamps are totally ordered: by wall time, then logical counter, then
// replica id (byte-wise). The zero Stamp sorts before every real stamp and
// means "never".
//
// On the wire a stamp is the CBOR array [wall, logical, replica].
type Stamp struct {
	_       struct{} `cbor:",toarray"`
	Wall    int64
	Logical uint32
	Replica string
}

// Time returns the timestamp part of s.
func (s Stamp) Time() Timestamp { return Timestamp{Wall: s.Wall, Logical: s.Logical} }

// IsZero reports whether s is the zero stamp.
func (s Stamp) IsZero() bool { return s.Wall == 0 && s.Logical == 0 && s.Replica == "" }

// Compare returns -1, 0 or +1 as s sorts before, equal to or after t.
func (s Stamp) Compare(t Stamp) int {
	if c := s.Time().Compare(t.Time()); c != 0 {
		return c
	}
	return strings.Compare(s.Replica, t.Replica)
}

// String formats s for logs and errors.
func (s Stamp) String() string {
	return fmt.Sprintf("%d.%d@%s", s.Wall, s.Logical, s.Replica)
}

// Validate checks that s is within range and names a valid replica. The zero
// stamp is valid.
func (s Stamp) Validate() error {
	if s.IsZero() {
		return nil
	}
	if s.Wall < 0 || s.Wall > MaxWall {
		return fmt.Errorf("%w: stamp wall time %d out of range", ErrInvalid, s.Wall)
	}
	return ValidateReplica(s.Replica)
}

// ClockConfig configures a Clock.
type ClockConfig struct {
	// Replica is this replica's id, the final tie-break of every stamp it
	// issues. Required; see ValidateReplica.
	Replica string
	// MaxDrift bounds how far ahead of local wall time a remote stamp may
	// be. Zero means DefaultMaxDrift; negative is invalid.
	MaxDrift time.Duration
}

// Clock is a hybrid logical clock (Kulkarni et al., "Logical Physical Clocks
// and Consistent Snapshots in Globally Distributed Databases", 2014).
//
// It never reads the time itself: Now and Observe take the local wall time in
// milliseconds as an argument, so callers inject the clock and tests drive it.
// A Clock is not safe for concurrent use; its owner serialises calls.
type Clock struct {
	replica  string
	maxDrift int64 // milliseconds
	last     Timestamp
}

// NewClock returns a clock for cfg.Replica that has seen no event yet.
func NewClock(cfg ClockConfig) (*Clock, error) {
	if err := ValidateReplica(cfg.Replica); err != nil {
		return nil, fmt.Errorf("new clock: %w", err)
	}
	if cfg.MaxDrift < 0 {
		return nil, fmt.Errorf("new clock: %w: negative MaxDrift %s", ErrInvalid, cfg.MaxDrift)
	}
	if cfg.MaxDrift == 0 {
		cfg.MaxDrift = DefaultMaxDrift
	}
	return &Clock{replica: cfg.Replica, maxDrift: cfg.MaxDrift.Milliseconds()}, nil
}

// Replica returns the clock's replica id.
func (c *Clock) Replica() string { return c.replica }

// MaxDrift returns the drift bound Observe enforces.
func (c *Clock) MaxDrift() time.Duration { return time.Duration(c.maxDrift) * time.Millisecond }

// Last returns the latest timestamp the clock issued or observed.
func (c *Clock) Last() Timestamp { return c.last }

// Restore sets the clock's state to a timestamp saved earlier with Last, so a
// restarted replica never issues a stamp below one it issued before. It only
// moves the clock forward.
func (c *Clock) Restore(t Timestamp) {
	if t.Compare(c.last) > 0 {
		c.last = t
	}
}

// Settle starts the clock again from wall time wall when its last reading
// is more than MaxDrift ahead of it. Such a clock (stamps issued while the
// wall clock ran fast, or before a server's time corrected it) issues only
// stamps a server refuses as too far ahead, and would for as long as it
// is ahead. Every stamp a server took is within MaxDrift of its time, so
// a writer that observes its record's stamps after settling still stamps
// after each one the server holds. Clients settle when a hello has just
// corrected their wall time to the server's, never between hellos (a wall
// clock set back must not pull stamps back); a server never does (its
// clock adopts only stamps within MaxDrift of it).
func (c *Clock) Settle(wall int64) {
	wall = clampWall(wall)
	if c.last.Wall-wall > c.maxDrift {
		c.last = Timestamp{Wall: wall}
	}
}

// Now issues the stamp of a local event at wall time wall (the paper's send
// rule): the wall part is max(last wall, wall) and the counter increments
// while the wall part stands still, carrying into the wall part past
// MaxIssuedLogical. Stamps are strictly increasing even when wall time goes
// backwards. Now fails with ErrCounterOverflow, leaving the clock
// unchanged, only when the wall part would pass MaxWall.
func (c *Clock) Now(wall int64) (Stamp, error) {
	next, err := c.last.Next(wall)
	if err != nil {
		return Stamp{}, fmt.Errorf("clock now: %w", err)
	}
	c.last = next
	return Stamp{Wall: next.Wall, Logical: next.Logical, Replica: c.replica}, nil
}

// Next returns the timestamp that follows t at wall time wall: wall with
// counter 0 if it is ahead of t's wall time, else t's wall time with the
// next counter, carried into the wall part (one millisecond later, counter
// 0) past MaxIssuedLogical. It fails with ErrCounterOverflow only when the
// wall part would pass MaxWall.
//
// It is the clock's send rule (Clock.Now) with t its last reading, and the
// stamp time of a write made by a writer that read the record first and
// must sort after everything it holds: Next of the record's MaxStamp at
// the writer's wall time. The engine's own writes get theirs through their
// clock (engine.OwnStamp); a store capturing what another program wrote
// stamps it this way, so that a client stamp running ahead of the
// capturing server's clock (up to MaxDrift) cannot outweigh a later
// foreign write.
func (t Timestamp) Next(wall int64) (Timestamp, error) {
	wall = clampWall(wall)
	if wall > t.Wall {
		return Timestamp{Wall: wall}, nil
	}
	if t.Logical < MaxIssuedLogical {
		return Timestamp{Wall: t.Wall, Logical: t.Logical + 1}, nil
	}
	if t.Wall >= MaxWall {
		return Timestamp{}, fmt.Errorf("at %d: %w", t.Wall, ErrCounterOverflow)
	}
	return Timestamp{Wall: t.Wall + 1}, nil
}

// Observe merges a remote timestamp into the clock at local wall time wall
// (the paper's receive rule), so every later Now sorts after it. A remote
// wall time more than MaxDrift ahead of wall is refused with ErrClockDrift
// and the clock is left unchanged. A counter that would pass
// MaxIssuedLogical carries into the wall part, as in Now, so a remote stamp
// with a large counter moves the clock at most one millisecond past it.
func (c *Clock) Observe(remote Timestamp, wall int64) error {
	wall = clampWall(wall)
	if remote.Wall < 0 || remote.Wall > MaxWall {
		return fmt.Errorf("clock observe: %w: wall time %d out of range", ErrInvalid, remote.Wall)
	}
	if remote.Wall-wall > c.maxDrift {
		return fmt.Errorf("clock observe: %w: remote %d is %dms ahead of local %d (max %dms)",
			ErrClockDrift, remote.Wall, remote.Wall-wall, wall, c.maxDrift)
	}
	// The later of the two readings, and the counter that follows it.
	top := c.last
	if remote.Compare(top) > 0 {
		top = remote
	}
	next, err := top.Next(wall)
	if err != nil {
		return fmt.Errorf("clock observe %d.%d: %w", remote.Wall, remote.Logical, err)
	}
	c.last = next
	return nil
}

func clampWall(w int64) int64 { return min(max(w, 0), MaxWall) }
