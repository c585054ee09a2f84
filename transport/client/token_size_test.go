package client

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/convergo/convergo/transport/proto"
)

// A token over proto.MaxTokenBytes is one no server reads (over HTTP it
// is answered 431, outside the protocol's errors, which a client would
// retry as a network failure for ever): the client sends none, and fails
// the request unauthenticated, saying why, at once. One of exactly that
// size goes.
func TestTokenOverTheLimitIsNotSent(t *testing.T) {
	for _, tc := range []struct {
		size int
		sent bool
	}{
		{proto.MaxTokenBytes, true},
		{proto.MaxTokenBytes + 1, false},
	} {
		f := newFakeServer(t)
		tok := strings.Repeat("a", tc.size)
		c, err := New(Config{URL: f.srv.URL, Replica: "r", TokenFunc: func(context.Context) (string, error) { return tok, nil }})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Pull(t.Context(), "todos", nil, 0)
		if tc.sent {
			if err != nil {
				t.Fatalf("a token of %d bytes: %v", tc.size, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, ErrUnauthenticated) || !strings.Contains(e.Message, "bytes") {
			t.Fatalf("a token of %d bytes: %v, want unauthenticated saying its size", tc.size, err)
		}
		if n := f.requests.Load(); n != 0 {
			t.Fatalf("a token of %d bytes: %d requests reached the server", tc.size, n)
		}
		// A live session is not dialled with it either: Live ends with
		// the same error, as after the server's unauthenticated.
		r := newWatched(t, f, "w", func(cfg *Config) {
			cfg.TokenFunc = func(context.Context) (string, error) { return tok, nil }
		})
		if err := r.Live(t.Context()); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("live with a token of %d bytes: %v, want unauthenticated", tc.size, err)
		}
		if n := f.liveDials.Load(); n != 0 {
			t.Fatalf("live with a token of %d bytes: %d dials", tc.size, n)
		}
	}
}
