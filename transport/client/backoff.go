package client

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/convergo/convergo/transport/proto"
)

// DefaultMaxAttempts is how many times an HTTP request is sent before its
// error is returned, unless Backoff.MaxAttempts says otherwise.
const DefaultMaxAttempts = 8

// Backoff sets how requests are retried and live sessions redialled: the
// protocol's exponential backoff with full jitter (a random delay between
// zero and proto.BackoffCeiling of the attempt), so that many clients that
// lost the server at once do not come back in lockstep. A server's
// Retry-After is a floor under the delay.
type Backoff struct {
	// Initial is the cap of the first delay. Zero means
	// proto.BackoffInitial.
	Initial time.Duration
	// Max caps every delay. Zero means proto.BackoffMax.
	Max time.Duration
	// MaxAttempts is how many times an HTTP request is sent before its
	// error is returned. Zero means DefaultMaxAttempts; 1 disables retries.
	// Live reconnects without limit until its context ends.
	MaxAttempts int
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = proto.BackoffInitial
	}
	if b.Max <= 0 {
		b.Max = proto.BackoffMax
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.MaxAttempts <= 0 {
		b.MaxAttempts = DefaultMaxAttempts
	}
	return b
}

// delay returns the wait before retry number attempt (0 for the first
// retry): uniform in [0, proto.BackoffCeiling(attempt)], at least floor.
func (b Backoff) delay(attempt int, floor time.Duration) time.Duration {
	ceil := proto.BackoffCeiling(attempt, b.Initial, b.Max)
	d := time.Duration(rand.Int64N(int64(ceil) + 1))
	return max(d, floor)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
