package client

import (
	"context"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A pull page without its next cursor (key 2 absent; an empty one is the
// cursor of an empty log) is an answer the client cannot read
// (ErrProtocol), as the browser client's parsePullAnswer says: read as
// the empty cursor, it would send the reader back to the beginning after
// every page (each later pull a full download, a reading from the
// beginning the Replica reconciles).
func TestPullPageWithoutNextIsUnreadable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ans any = proto.HelloResponse{Protocol: proto.Version, ServerTime: 1_800_000_000_000}
		if r.URL.Path == proto.PathPull {
			ans = map[int]any{1: []any{}, 3: false} // no key 2
		}
		b, err := crdt.Marshal(ans)
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", proto.ContentType)
		w.Write(b)
	}))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL, Replica: "a", Backoff: Backoff{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Pull(t.Context(), "todos", []byte{1, 2, 3}, 0)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("pull: got %v and a page with next %x, want ErrProtocol", err, p.Next)
	}
}

// So is a live changes message without its next cursor (key 3): read as
// the beginning, the collection would be subscribed from there at the
// next dial. The session is dropped and dialled again from the cursor of
// the last page delivered; the message delivers nothing.
func TestLiveChangesWithoutNextIsUnreadable(t *testing.T) {
	f := newFakeServer(t)
	seed(t, f, map[string]string{"t1": "a"})
	c := f.client(t, "r", nil)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var mu sync.Mutex
	var nexts [][]byte
	done := make(chan error, 1)
	go func() {
		done <- c.Live(ctx, map[string][]byte{"todos": nil}, func(_ string, p Page) {
			mu.Lock()
			defer mu.Unlock()
			nexts = append(nexts, p.Next)
		}, nil)
	}()
	delivered := func() [][]byte {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(nexts)
	}
	eventually(t, "the first page", func() bool { return len(delivered()) > 0 })
	raw, err := crdt.Marshal(map[int]any{0: proto.TypeChanges, 1: "todos", 2: []any{}, 4: false}) // no key 3
	if err != nil {
		t.Fatal(err)
	}
	f.control("raw:" + hex.EncodeToString(raw))
	eventually(t, "a second dial", func() bool { return f.liveDials.Load() >= 2 })
	cancel()
	<-done
	for i, n := range delivered() {
		if len(n) == 0 {
			t.Fatalf("page %d of %d delivered with the empty cursor: the reader was sent back to the beginning", i, len(delivered()))
		}
	}
}

// A reset page without its reason (key 4 without key 1) is unreadable
// too (ErrProtocol), as the browser client's parsePullAnswer says: read
// as the reason "", a reason the client does not know, it would be acted
// on as history_lost, the cursor forgotten and everything given back,
// on a page that says nothing.
func TestPullResetWithoutReasonIsUnreadable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ans any = proto.HelloResponse{Protocol: proto.Version, ServerTime: 1_800_000_000_000}
		if r.URL.Path == proto.PathPull {
			ans = map[int]any{1: []any{}, 2: []byte{}, 4: map[int]any{2: "wiped"}} // no reason
		}
		b, err := crdt.Marshal(ans)
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", proto.ContentType)
		w.Write(b)
	}))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL, Replica: "a", Backoff: Backoff{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Pull(t.Context(), "todos", []byte{1, 2, 3}, 0)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("pull: got %v and a page reset %q, want ErrProtocol", err, p.Reset)
	}
}
