package crdt

import (
	"errors"
	"testing"
	"time"

	"pgregory.net/rapid"
)

func mustClock(t interface{ Fatalf(string, ...any) }, replica string, drift time.Duration) *Clock {
	c, err := NewClock(ClockConfig{Replica: replica, MaxDrift: drift})
	if err != nil {
		t.Fatalf("NewClock(%q): %v", replica, err)
	}
	return c
}

func TestClockNow(t *testing.T) {
	tests := []struct {
		name  string
		start Timestamp
		wall  int64
		want  Timestamp
	}{
		{"fresh clock takes wall time", Timestamp{}, 1000, Timestamp{1000, 0}},
		{"same millisecond bumps counter", Timestamp{1000, 3}, 1000, Timestamp{1000, 4}},
		{"wall ahead resets counter", Timestamp{1000, 3}, 1001, Timestamp{1001, 0}},
		{"wall behind keeps wall, bumps counter", Timestamp{5000, 7}, 1000, Timestamp{5000, 8}},
		{"negative wall clamps to zero", Timestamp{}, -5, Timestamp{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustClock(t, "r1", 0)
			c.Restore(tt.start)
			got, err := c.Now(tt.wall)
			if err != nil {
				t.Fatalf("Now: %v", err)
			}
			if got.Time() != tt.want || got.Replica != "r1" {
				t.Fatalf("got %v, want %v@r1", got, tt.want)
			}
		})
	}
}

func TestClockSettle(t *testing.T) {
	const drift = 60_000 // the clock's max drift, in ms
	tests := []struct {
		name  string
		start Timestamp
		wall  int64
		want  Timestamp // the stamp Now issues after Settle
	}{
		{"in time: unchanged", Timestamp{1000, 3}, 1000, Timestamp{1000, 4}},
		{"ahead by the drift: unchanged", Timestamp{1000 + drift, 3}, 1000, Timestamp{1000 + drift, 4}},
		{"ahead by more: from the wall", Timestamp{1001 + drift, 3}, 1000, Timestamp{1000, 1}},
		{"an hour ahead: from the wall", Timestamp{1000 + 3_600_000, 9}, 1000, Timestamp{1000, 1}},
		{"behind: unchanged", Timestamp{500, 2}, 1000, Timestamp{1000, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustClock(t, "r1", time.Duration(drift)*time.Millisecond)
			c.Restore(tt.start)
			c.Settle(tt.wall)
			got, err := c.Now(tt.wall)
			if err != nil {
				t.Fatalf("Now: %v", err)
			}
			if got.Time() != tt.want {
				t.Fatalf("got %v, want %v", got.Time(), tt.want)
			}
		})
	}
}

func TestClockObserve(t *testing.T) {
	tests := []struct {
		name    string
		local   Timestamp
		remote  Timestamp
		wall    int64
		want    Timestamp
		wantErr error
	}{
		{"all equal walls: max counter + 1", Timestamp{1000, 3}, Timestamp{1000, 9}, 1000, Timestamp{1000, 10}, nil},
		{"local wall largest", Timestamp{2000, 3}, Timestamp{1000, 9}, 1500, Timestamp{2000, 4}, nil},
		{"remote wall largest", Timestamp{1000, 3}, Timestamp{2000, 9}, 1500, Timestamp{2000, 10}, nil},
		{"physical time largest", Timestamp{1000, 3}, Timestamp{1200, 9}, 1500, Timestamp{1500, 0}, nil},
		{"remote within drift", Timestamp{}, Timestamp{1000 + 300_000, 0}, 1000, Timestamp{301_000, 1}, nil},
		{"remote beyond drift", Timestamp{1000, 0}, Timestamp{1000 + 300_001, 0}, 1000, Timestamp{1000, 0}, ErrClockDrift},
		{"counter past the issued bound carries", Timestamp{1000, MaxIssuedLogical}, Timestamp{1000, 1}, 1000, Timestamp{1001, 0}, nil},
		{"remote counter at max carries", Timestamp{900, 0}, Timestamp{1000, MaxLogical}, 1000, Timestamp{1001, 0}, nil},
		{"carry at the end of time refused", Timestamp{MaxWall, MaxIssuedLogical}, Timestamp{1, 0}, 1000, Timestamp{MaxWall, MaxIssuedLogical}, ErrCounterOverflow},
		{"remote wall out of range", Timestamp{}, Timestamp{-1, 0}, 1000, Timestamp{}, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustClock(t, "r1", 0)
			c.Restore(tt.local)
			err := c.Observe(tt.remote, tt.wall)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Observe error: got %v, want %v", err, tt.wantErr)
			}
			if got := c.Last(); got != tt.want {
				t.Fatalf("clock after Observe: got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestClockNowOverflow(t *testing.T) {
	c := mustClock(t, "r1", 0)
	c.Restore(Timestamp{MaxWall, MaxIssuedLogical})
	if _, err := c.Now(1000); !errors.Is(err, ErrCounterOverflow) {
		t.Fatalf("Now at the end of time: got %v, want ErrCounterOverflow", err)
	}
	if got := c.Last(); got != (Timestamp{MaxWall, MaxIssuedLogical}) {
		t.Fatalf("clock changed by failed Now: got %v", got)
	}
	c = mustClock(t, "r1", 0)
	c.Restore(Timestamp{1000, MaxIssuedLogical})
	s, err := c.Now(1000)
	if err != nil || s.Time() != (Timestamp{1001, 0}) {
		t.Fatalf("Now at the issued bound: got %v, %v; want 1001.0", s, err)
	}
}

func TestNewClockValidates(t *testing.T) {
	for _, cfg := range []ClockConfig{{Replica: ""}, {Replica: "a b"}, {Replica: "r", MaxDrift: -1}} {
		if _, err := NewClock(cfg); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewClock(%+v): got %v, want ErrInvalid", cfg, err)
		}
	}
}

// TestClockProperties checks the properties of the paper, driving three
// clocks whose wall clocks are skewed within a bound and jump backwards:
// stamps a replica issues strictly increase; every event's stamp exceeds
// the stamps it has observed; l - pt stays within the skew bound; the
// counter stays bounded; and remote stamps beyond the drift are refused.
func TestClockProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const skew = 2_000 // ms, the bound on |wall_i - true time|
		const n = 3
		clocks := make([]*Clock, n)
		offsets := make([]int64, n)
		var lastIssued [n]Stamp
		for i := range clocks {
			clocks[i] = mustClock(t, string(rune('a'+i)), time.Duration(2*skew)*time.Millisecond)
			offsets[i] = rapid.Int64Range(-skew, skew).Draw(t, "offset")
		}
		trueTime := int64(1_000_000)
		var sent []Stamp
		maxLogical := uint32(0)
		steps := rapid.IntRange(1, 200).Draw(t, "steps")
		for range steps {
			trueTime += rapid.Int64Range(0, 5).Draw(t, "advance")
			i := rapid.IntRange(0, n-1).Draw(t, "replica")
			// A wall clock within the skew bound that may read backwards.
			offsets[i] = rapid.Int64Range(-skew, skew).Draw(t, "offset")
			wall := trueTime + offsets[i]
			if len(sent) > 0 && rapid.Bool().Draw(t, "receive") {
				m := sent[rapid.IntRange(0, len(sent)-1).Draw(t, "msg")]
				if err := clocks[i].Observe(m.Time(), wall); err != nil {
					t.Fatalf("Observe of honest stamp %v at wall %d: %v", m, wall, err)
				}
				if clocks[i].Last().Compare(m.Time()) <= 0 {
					t.Fatalf("after Observe(%v) clock is %v, want greater", m, clocks[i].Last())
				}
			}
			s, err := clocks[i].Now(wall)
			if err != nil {
				t.Fatalf("Now: %v", err)
			}
			if s.Compare(lastIssued[i]) <= 0 {
				t.Fatalf("replica %d issued %v after %v: not monotonic", i, s, lastIssued[i])
			}
			lastIssued[i] = s
			// l - pt is bounded by the skew: l is some clock's wall reading.
			if s.Wall-trueTime > skew {
				t.Fatalf("stamp %v is %dms ahead of true time, more than skew %d", s, s.Wall-trueTime, skew)
			}
			maxLogical = max(maxLogical, s.Logical)
			sent = append(sent, s)
		}
		// Each event raises the counter by at most one over the largest
		// counter at that wall time, so it can never exceed the number of
		// events.
		if int(maxLogical) > steps*2 {
			t.Fatalf("logical counter %d exceeds the number of events %d", maxLogical, steps*2)
		}
	})
}

func TestClockRefusesDriftProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		drift := rapid.Int64Range(1, 600_000).Draw(t, "drift")
		c := mustClock(t, "r", time.Duration(drift)*time.Millisecond)
		wall := rapid.Int64Range(drift, 1<<45).Draw(t, "wall")
		ahead := rapid.Int64Range(-drift, 2*drift).Draw(t, "ahead")
		before := c.Last()
		err := c.Observe(Timestamp{Wall: wall + ahead}, wall)
		if ahead > drift {
			if !errors.Is(err, ErrClockDrift) {
				t.Fatalf("remote %dms ahead with drift %d: got %v, want ErrClockDrift", ahead, drift, err)
			}
			if c.Last() != before {
				t.Fatalf("refused Observe changed the clock")
			}
		} else if err != nil {
			t.Fatalf("remote %dms ahead with drift %d: %v", ahead, drift, err)
		}
	})
}

// A clock never fails for its counter: past MaxIssuedLogical it carries
// into the wall part, in Now and in Observe, so no stamp it is shown (a
// forged counter near 2^32, a stored record's) can stop it issuing stamps.
func TestClockCarriesIntoWall(t *testing.T) {
	c, err := NewClock(ClockConfig{Replica: "a"})
	if err != nil {
		t.Fatal(err)
	}
	const wall = 1_000_000
	if err := c.Observe(Timestamp{Wall: wall + 1000, Logical: MaxLogical}, wall); err != nil {
		t.Fatalf("observe a counter at MaxLogical: %v", err)
	}
	if got, want := c.Last(), (Timestamp{Wall: wall + 1001, Logical: 0}); got != want {
		t.Fatalf("after observing MaxLogical: %v, want %v", got, want)
	}
	c.Restore(Timestamp{Wall: wall + 2000, Logical: MaxIssuedLogical})
	s, err := c.Now(wall)
	if err != nil {
		t.Fatalf("now at MaxIssuedLogical: %v", err)
	}
	if got, want := s.Time(), (Timestamp{Wall: wall + 2001, Logical: 0}); got != want {
		t.Fatalf("now after MaxIssuedLogical: %v, want %v", got, want)
	}
	// Whatever it observed, it never issues a counter above MaxIssuedLogical.
	for _, l := range []uint32{MaxIssuedLogical - 1, MaxIssuedLogical, MaxIssuedLogical + 1, MaxLogical - 1} {
		if err := c.Observe(Timestamp{Wall: c.Last().Wall, Logical: l}, wall); err != nil {
			t.Fatal(err)
		}
		if c.Last().Logical > MaxIssuedLogical {
			t.Fatalf("observed counter %d: clock at %v", l, c.Last())
		}
	}
}

// TestTimestampNext: the time after t at a wall time is that wall time
// when it is ahead, else after t (the counter, carried into the wall part
// past MaxIssuedLogical); so a stamp taken from a record's MaxStamp sorts
// after everything the record holds whatever the wall clock says.
func TestTimestampNext(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    Timestamp
		wall int64
		want Timestamp
	}{
		{"wall ahead", Timestamp{Wall: 100, Logical: 7}, 101, Timestamp{Wall: 101}},
		{"wall equal", Timestamp{Wall: 100, Logical: 7}, 100, Timestamp{Wall: 100, Logical: 8}},
		{"wall behind", Timestamp{Wall: 100, Logical: 7}, 50, Timestamp{Wall: 100, Logical: 8}},
		{"zero", Timestamp{}, 5, Timestamp{Wall: 5}},
		{"carry", Timestamp{Wall: 100, Logical: MaxIssuedLogical}, 50, Timestamp{Wall: 101}},
		{"carry a larger counter", Timestamp{Wall: 100, Logical: MaxLogical}, 50, Timestamp{Wall: 101}},
		{"negative wall", Timestamp{}, -5, Timestamp{Logical: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.t.Next(tc.wall)
			if err != nil || got != tc.want {
				t.Fatalf("%+v.Next(%d) = %+v, %v; want %+v", tc.t, tc.wall, got, err, tc.want)
			}
			if got.Compare(tc.t) <= 0 {
				t.Fatalf("%+v.Next(%d) = %+v, not after it", tc.t, tc.wall, got)
			}
		})
	}
	if _, err := (Timestamp{Wall: MaxWall, Logical: MaxIssuedLogical}).Next(0); !errors.Is(err, ErrCounterOverflow) {
		t.Fatalf("at the end of time: %v, want ErrCounterOverflow", err)
	}
}
