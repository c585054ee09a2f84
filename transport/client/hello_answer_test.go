package client

import (
	"context"
	"errors"
	"testing"

	"github.com/convergo/convergo/transport/proto"
)

// A hello answer of another protocol version is the server's word that
// the client must be upgraded (docs/protocol.md, sections 1 and 6), as the
// browser client's applyHello says: Hello returns ErrUnsupportedVersion,
// unretried, and takes nothing of the answer.
func TestHelloOfAnotherVersionIsUnsupported(t *testing.T) {
	for _, v := range []uint64{0, 1, 3} {
		f := newFakeServer(t)
		edit := func(a proto.HelloResponse) proto.HelloResponse { a.Protocol = v; a.MaxPush = 7; return a }
		f.rewriteHello.Store(&edit)
		c := f.client(t, "a", nil)
		_, err := c.Hello(t.Context())
		if !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("protocol %d: got %v, want ErrUnsupportedVersion", v, err)
		}
		if info, ok := c.Info(); ok || info.MaxPush == 7 {
			t.Fatalf("protocol %d: the answer was taken: %+v", v, info)
		}
	}
}

// A hello answer whose server time is not a wall time (absent, 0, below
// 0, or past 2^53−1) is unreadable: taken, it would correct the client's
// wall time to about the epoch and restart its clock there, so that every
// later write stamps near 1970 and loses to every write it meets, silently
// (superseded). The browser client's parseHello refuses such an answer.
func TestHelloWithoutServerTimeIsUnreadable(t *testing.T) {
	for _, st := range []int64{0, -1, 1 << 53} {
		f := newFakeServer(t)
		edit := func(a proto.HelloResponse) proto.HelloResponse { a.ServerTime = st; return a }
		f.rewriteHello.Store(&edit)
		c := f.client(t, "a", nil)
		before, err := c.Now()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hello(t.Context()); !errors.Is(err, ErrProtocol) {
			t.Fatalf("server time %d: got %v, want ErrProtocol", st, err)
		}
		after, err := c.Now()
		if err != nil {
			t.Fatal(err)
		}
		if after.Wall < before.Wall {
			t.Fatalf("server time %d: a stamp after the hello has wall %d, before it %d: the clock went back", st, after.Wall, before.Wall)
		}
	}
}

// Live takes a welcome as a hello answer: one of another version ends
// Live with ErrUnsupportedVersion before any page is delivered, and one
// without a server time is unreadable, the session dropped and dialled
// again with backoff, nothing delivered.
func TestLiveWelcomeOfAnotherVersionOrWithoutTime(t *testing.T) {
	t.Run("version", func(t *testing.T) {
		f := newFakeServer(t)
		edit := func(a proto.HelloResponse) proto.HelloResponse { a.Protocol = 3; return a }
		f.rewriteHello.Store(&edit)
		c := f.client(t, "a", nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		delivered := 0
		err := c.Live(ctx, map[string][]byte{"todos": nil}, func(string, Page) { delivered++; cancel() }, nil)
		if !errors.Is(err, ErrUnsupportedVersion) || delivered != 0 {
			t.Fatalf("got %v after %d pages, want ErrUnsupportedVersion and none", err, delivered)
		}
	})
	t.Run("time", func(t *testing.T) {
		f := newFakeServer(t)
		edit := func(a proto.HelloResponse) proto.HelloResponse { a.ServerTime = 0; return a }
		f.rewriteHello.Store(&edit)
		c := f.client(t, "a", nil)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan error, 1)
		var delivered int
		go func() {
			done <- c.Live(ctx, map[string][]byte{"todos": nil}, func(string, Page) { delivered++ }, nil)
		}()
		eventually(t, "a second dial", func() bool { return f.liveDials.Load() >= 2 })
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) || delivered != 0 {
			t.Fatalf("got %v after %d pages, want context.Canceled and none", err, delivered)
		}
		if _, ok := c.Info(); ok {
			t.Fatal("the welcome was taken as a hello answer")
		}
	})
}
