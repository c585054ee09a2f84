package dynamodb

import (
	"context"
	"sync"

	"github.com/convergo/convergo/stores"
)

var _ stores.Capturer = (*Store)(nil)

// captureState holds the registered capture sink.
type captureState struct {
	mu  sync.Mutex
	reg *sinkReg
	// gen counts registrations: the consumer reads the stream again from
	// its oldest record when it changes, so a new sink is offered what was
	// written while none was registered.
	gen uint64
}

// sinkReg is one registration of a sink. Its context ends when it is
// stopped or replaced, or the store closes; calls counts sink calls in
// progress, which stop waits for.
type sinkReg struct {
	sink   stores.CaptureSink
	ctx    context.Context
	cancel context.CancelFunc
	calls  sync.WaitGroup
}

// Capture implements stores.Capturer: the stream consumer hands the changes
// it derives from foreign writes (see the package doc) to sink. A store
// without a Streams client captures nothing, and Capture returns a stop
// that does nothing. Registering a sink makes the consumer read the stream
// again from its oldest record (TRIM_HORIZON, up to 24 hours back), as it
// does when the store starts: replays are no-ops, and foreign writes made
// while no sink was registered are not missed.
func (st *Store) Capture(sink stores.CaptureSink) (stop func()) {
	if sink.Apply == nil || st.streams == nil || st.closed.Load() {
		return func() {}
	}
	ctx, cancel := context.WithCancel(st.runCtx)
	reg := &sinkReg{sink: sink, ctx: ctx, cancel: cancel}
	c := &st.capture
	c.mu.Lock()
	old := c.reg
	c.reg = reg
	c.gen++
	c.mu.Unlock()
	if old != nil {
		old.cancel()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			if c.reg == reg {
				c.reg = nil
			}
			c.mu.Unlock()
			reg.cancel()
			reg.calls.Wait()
		})
	}
}

// acquireSink returns the registered sink, counted as in use until its
// release, or nil; and the registration generation.
func (st *Store) acquireSink() (*sinkReg, uint64) {
	c := &st.capture
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reg != nil {
		c.reg.calls.Add(1)
	}
	return c.reg, c.gen
}

func (st *Store) captureGen() uint64 {
	st.capture.mu.Lock()
	defer st.capture.mu.Unlock()
	return st.capture.gen
}
