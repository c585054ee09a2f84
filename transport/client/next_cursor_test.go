package client

import (
	"errors"
	"net/http"
	"net/http/httptest"
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
