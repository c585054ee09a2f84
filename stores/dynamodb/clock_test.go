package dynamodb

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/engine"
)

// StoreTime reads DynamoDB's clock from the Date header of an answer
// (DynamoDB Local sends one, as DynamoDB does), to the second.
func TestStoreTime(t *testing.T) {
	db, _, _ := testClients(t)
	s := openTest(t, db, nil, plainTable(t, db))
	before := time.Now()
	at, res, err := s.StoreTime(context.Background())
	after := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	if res != time.Second {
		t.Fatalf("resolution %v, want 1s", res)
	}
	if at.Before(before.Add(-res)) || at.After(after) {
		t.Fatalf("store time %v, outside the call [%v, %v] less its resolution", at, before, after)
	}
}

// An engine a year ahead of DynamoDB's clock finds itself off at Open,
// and back within bounds on the check after its clock is set right.
func TestEngineClockCheck(t *testing.T) {
	db, _, _ := testClients(t)
	s := openTest(t, db, nil, plainTable(t, db))
	var off atomic.Int64
	off.Store(int64(365 * 24 * time.Hour))
	e, err := engine.Open(engine.Config{Store: s, PollInterval: -1, ClockCheckEvery: time.Hour,
		Now: func() time.Time { return time.Now().Add(time.Duration(off.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if err := e.ClockHealth(); !errors.Is(err, engine.ErrClockSkew) {
		t.Fatalf("a year ahead: ClockHealth %v, want ErrClockSkew", err)
	}
	off.Store(0)
	if r, err := e.CheckClock(context.Background()); err != nil || r.Skew < -2*time.Second || r.Skew > 2*time.Second {
		t.Fatalf("in time: %+v, %v", r, err)
	}
	if err := e.ClockHealth(); err != nil {
		t.Fatalf("in time: ClockHealth %v", err)
	}
}
