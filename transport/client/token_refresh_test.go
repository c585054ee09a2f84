package client

import (
	"context"
	"sync"
	"testing"
)

// cachingTokens is a TokenFunc that caches its token as apps do, and
// trusts its own reading of the token's expiry (here: never), so that it
// fetches a new one only when the client says the server refused the
// cached one as expired (RefusedToken).
type cachingTokens struct {
	mu      sync.Mutex
	cached  string
	next    string
	asked   []string // what each call was told was refused ("" for nothing)
	fetches int
}

func (c *cachingTokens) token(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	refused, ok := RefusedToken(ctx)
	c.asked = append(c.asked, refused)
	if ok && refused == c.cached {
		c.cached = c.next
		c.fetches++
	}
	return c.cached, nil
}

func (c *cachingTokens) fetched() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fetches
}

// A TokenFunc that caches its token learns, when the client asks again
// after token_expired, which token the server refused, and fetches a new
// one; the request goes with it. Other calls are told nothing.
func TestTokenFuncToldOfTheExpiredToken(t *testing.T) {
	f := newFakeServer(t)
	seed(t, f, map[string]string{"t1": "a"})
	stale := "stale"
	f.expired.Store(&stale)
	tokens := &cachingTokens{cached: "stale", next: "fresh"}
	c, err := New(Config{URL: f.srv.URL, Replica: "r", TokenFunc: tokens.token})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pull(t.Context(), "todos", nil, 0); err != nil {
		t.Fatalf("pull with an expired cached token: %v", err)
	}
	if tokens.fetched() != 1 {
		t.Fatalf("the TokenFunc fetched %d tokens, want 1", tokens.fetched())
	}
	if _, err := c.Pull(t.Context(), "todos", nil, 0); err != nil {
		t.Fatal(err)
	}
	tokens.mu.Lock()
	defer tokens.mu.Unlock()
	if last := tokens.asked[len(tokens.asked)-1]; last != "" {
		t.Fatalf("a call after the refresh was told %q was refused", last)
	}
}

// The same for a live session ended, or refused at its hello, as
// token_expired: Live dials again, and the TokenFunc is told which token
// expired.
func TestLiveTokenFuncToldOfTheExpiredToken(t *testing.T) {
	f := newFakeServer(t)
	seed(t, f, map[string]string{"t1": "a"})
	stale := "stale"
	f.expired.Store(&stale)
	tokens := &cachingTokens{cached: "stale", next: "fresh"}
	r := newWatched(t, f, "r", func(cfg *Config) { cfg.TokenFunc = tokens.token })
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.Live(ctx) }()
	eventually(t, "a live session under a fresh token", func() bool { return r.Client().link() != nil })
	if tokens.fetched() != 1 {
		t.Fatalf("the TokenFunc fetched %d tokens, want 1", tokens.fetched())
	}
	cancel()
	<-errc
}
