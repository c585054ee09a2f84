package client

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff defaults.
const (
	DefaultBackoffInitial = 200 * time.Millisecond
	DefaultBackoffMax     = 30 * time.Second
	DefaultMaxAttempts    = 8
)

// Backoff sets how requests are retried: exponential backoff with full
// jitter (a random delay between zero and Initial·2^attempt, capped at Max),
// so that many clients that lost the server at once do not come back in
// lockstep. A server's Retry-After is a floor under the delay.
type Backoff struct {
	// Initial is the cap of the first delay. Zero means
	// DefaultBackoffInitial.
	Initial time.Duration
	// Max caps every delay. Zero means DefaultBackoffMax.
	Max time.Duration
	// MaxAttempts is how many times an HTTP request is sent before its
	// error is returned. Zero means DefaultMaxAttempts; 1 disables retries.
	// Live reconnects without limit until its context ends.
	MaxAttempts int
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoffInitial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
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
// retry), at least floor.
func (b Backoff) delay(attempt int, floor time.Duration) time.Duration {
	ceil := b.Initial
	for i := 0; i < attempt && ceil < b.Max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, b.Max)
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
