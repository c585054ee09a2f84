package client_test

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestLiveBeyondMaxSubscriptions keeps more collections than the server
// lets one session subscribe (Limits.MaxSubscriptions): the subs beyond
// it are refused too_large, told to OnError, and those collections are
// still synced, pulled over HTTP at each retry of their sub, rather than
// left unread for as long as Live runs.
func TestLiveBeyondMaxSubscriptions(t *testing.T) {
	eng, err := engine.Open(engine.Config{Store: memory.New()})
	_, url, auth := serveConfig(t, eng, err, transport.Config{Limits: transport.Limits{MaxSubscriptions: 2}}, func(h http.Handler) http.Handler { return h })
	colls := []string{"a", "b", "c", "d"}
	wtok, _ := auth.Issue("writer", []string{"*"}, []string{"*"}, time.Hour)
	w := helloReplica(t, client.Config{URL: url, Token: wtok, Device: "w"}, client.ReplicaConfig{})
	write := func(id string) {
		t.Helper()
		for _, coll := range colls {
			if err := w.Set(coll, id, "v", coll); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	write("r1")

	rtok, _ := auth.Issue("reader", []string{"*"}, nil, time.Hour)
	c, err := client.New(client.Config{URL: url, Token: rtok, Device: "r",
		Backoff: client.Backoff{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var told []error
	r, err := client.NewReplica(c, client.ReplicaConfig{Collections: colls, OnError: func(err error) {
		mu.Lock()
		told = append(told, err)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	runLive(t, r)
	holds := func(id string) func() bool {
		return func() bool {
			for _, coll := range colls {
				if _, ok := r.Get(coll, id); !ok {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, "r1 of every collection", holds("r1"))
	write("r2")
	waitFor(t, "r2 of every collection", holds("r2"))

	mu.Lock()
	defer mu.Unlock()
	if len(told) != len(colls)-2 {
		t.Errorf("OnError told %d errors, want %d (one per collection beyond the bound): %v", len(told), len(colls)-2, told)
	}
	for _, err := range told {
		var e *client.Error
		if !errors.As(err, &e) || e.Code != proto.CodeTooLarge {
			t.Errorf("told %v, want a %s", err, proto.CodeTooLarge)
		}
	}
}
