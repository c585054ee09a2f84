package client

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A push result without its status (key 1) says nothing of the change:
// read as status 0 it would be applied, and a Replica would drop the
// change from its outbox as acknowledged although the server may never
// have taken it. It is an answer the client cannot read (ErrProtocol,
// retried as a network failure), as the browser client's parsePushAnswer
// says; the change stays in the outbox.
func TestPushResultWithoutStatusIsUnreadable(t *testing.T) {
	for name, result := range map[string]map[int]any{"empty": {}, "code only": {2: "applied?"}} {
		t.Run(name, func(t *testing.T) {
			c := answering(t, proto.PathPush, map[int]any{1: []any{result}})
			r, err := NewReplica(c, ReplicaConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Set("c", "r1", "x", 1); err != nil {
				t.Fatal(err)
			}
			if err := r.Flush(t.Context()); !errors.Is(err, ErrProtocol) {
				t.Errorf("flush: got %v, want ErrProtocol", err)
			}
			if p := r.Pending(); len(p) != 1 {
				t.Fatalf("%d changes pending after a result without status, want the change kept", len(p))
			}
		})
	}
}

// A restore's results are read as a push's: one of a status this client
// does not know is an answer it cannot read (ErrProtocol), not a record
// taken back, as the browser client reads both.
func TestRestoreResultOfUnknownStatusIsUnreadable(t *testing.T) {
	c := answering(t, proto.PathRestore, map[int]any{1: []any{map[int]any{1: 9}}})
	s, err := c.Now()
	if err != nil {
		t.Fatal(err)
	}
	rec := crdt.SetField("r1", "x", []byte{0x01}, s)
	res, err := c.Restore(t.Context(), "c", []proto.SealedRecord{{Record: rec, Seal: make([]byte, 16)}})
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("restore: got %v and %+v, want ErrProtocol", err, res)
	}
}

// answering is a client of replica "a" that tries each request once,
// of a server that answers path with ans and every other request with a
// hello answer.
func answering(t *testing.T, path string, ans any) *Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a any = proto.HelloResponse{Protocol: proto.Version, ServerTime: 1_800_000_000_000}
		if r.URL.Path == path {
			a = ans
		}
		b, err := crdt.Marshal(a)
		if err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Type", proto.ContentType)
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	c, err := New(Config{URL: srv.URL, Replica: "a", Backoff: Backoff{MaxAttempts: 1}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
