package client_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt/migrate"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// dialCountingServer runs a transport.Server over a memory store with
// rules, counting the dials of its live endpoint.
func dialCountingServer(t *testing.T, rules ...engine.Rule) (string, *transport.JWT, *atomic.Int64) {
	t.Helper()
	eng, err := engine.Open(engine.Config{Store: memory.New(), Rules: rules})
	dials := new(atomic.Int64)
	_, url, auth := serveThrough(t, eng, err, func(srv http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == proto.PathLive {
				dials.Add(1)
			}
			srv.ServeHTTP(w, r)
		})
	})
	return url, auth, dials
}

// liveRecords is what streamLive collects: the ids of the records Live
// delivers, by collection, and its error once it returned (ended closed).
type liveRecords struct {
	mu    sync.Mutex
	ids   map[string]map[string]bool
	told  []error // what onError was given
	err   error
	ended chan struct{}
}

// streamLive runs c.Live over subs until the test ends.

func streamLive(t *testing.T, c *client.Client, subs ...string) *liveRecords {
	t.Helper()
	l := &liveRecords{ids: map[string]map[string]bool{}, ended: make(chan struct{})}
	m := map[string][]byte{}
	for _, s := range subs {
		m[s] = nil
	}
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		defer close(l.ended)
		err := c.Live(ctx, m, func(coll string, p client.Page) {
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, r := range p.Records {
				if l.ids[coll] == nil {
					l.ids[coll] = map[string]bool{}
				}
				l.ids[coll][r.ID] = true
			}
		}, func(err error) {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.told = append(l.told, err)
		})
		l.mu.Lock()
		l.err = err
		l.mu.Unlock()
	}()
	t.Cleanup(func() { cancel(); <-l.ended })
	return l
}

// errors returns what onError was given so far.
func (l *liveRecords) errors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.told)
}

func (l *liveRecords) has(coll, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ids[coll][id]
}

// writeOne pushes one record to coll as a writer of its own.
func writeOne(t *testing.T, url, token, coll, id string) {
	t.Helper()
	c, err := client.New(client.Config{URL: url, Token: token, Device: "writer"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
	r, err := client.NewReplica(c, client.ReplicaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Set(coll, id, "title", id); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// awaitLive waits until l holds coll's record id, or fails.
func awaitLive(t *testing.T, l *liveRecords, coll, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !l.has(coll, id) {
		select {
		case <-l.ended:
			t.Fatalf("Live returned %v before %s/%s arrived", l.err, coll, id)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s never arrived", coll, id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLiveSchemaAheadNoRedialLoop: a sub answered schema_ahead (the
// server runs older rules than the client) is that collection's: the
// session stays open for the others, and Live does not dial the server
// again and again.
func TestLiveSchemaAheadNoRedialLoop(t *testing.T) {
	rules, err := engine.ParseRules([]byte(`{"notes": {"migrations": {"version": 2, "steps": [{"to": 2, "ops": []}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	url, auth, dials := dialCountingServer(t, rules...)
	token, err := auth.Issue("hana", []string{"notes", "todo"}, []string{"notes", "todo"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ahead, err := migrate.Parse([]byte(`{"version": 3, "steps": [{"to": 2, "ops": []}, {"to": 3, "ops": []}]}`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: url, Token: token, Device: "ahead",
		Migrations: map[string]*migrate.Definition{"notes": ahead}})
	if err != nil {
		t.Fatal(err)
	}
	l := streamLive(t, c, "notes", "todo")
	// Over a window of several backoff steps, the session is the only dial.
	time.Sleep(1500 * time.Millisecond)
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d live dials in 1.5 s, want 1: the session is kept through one collection's schema_ahead", n)
	}
	writeOne(t, url, token, "todo", "t1")
	awaitLive(t, l, "todo", "t1")
	// Told once, though tried again after each backoff.
	told := l.errors()
	if len(told) != 1 || !errors.Is(told[0], client.ErrSchemaAhead) || !strings.Contains(told[0].Error(), "notes") {
		t.Fatalf("onError was given %v, want one schema_ahead of notes", told)
	}
}

// TestLiveForbiddenSubIsolated: a sub refused forbidden leaves the
// session streaming the other collections; the refusal is told once, and
// a new token of the same subject reads the collection again.
func TestLiveForbiddenSubIsolated(t *testing.T) {
	url, auth, dials := dialCountingServer(t)
	token, err := auth.Issue("ivo", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wider, err := auth.Issue("ivo", []string{"notes", "secret"}, []string{"notes", "secret"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var current atomic.Value
	current.Store(token)
	c, err := client.New(client.Config{URL: url, Device: "laptop",
		TokenFunc: func(context.Context) (string, error) { return current.Load().(string), nil }})
	if err != nil {
		t.Fatal(err)
	}
	l := streamLive(t, c, "notes", "secret")
	writeOne(t, url, token, "notes", "n1")
	awaitLive(t, l, "notes", "n1")
	time.Sleep(500 * time.Millisecond)
	writeOne(t, url, token, "notes", "n2")
	awaitLive(t, l, "notes", "n2")
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d live dials, want 1", n)
	}
	told := l.errors()
	if len(told) != 1 || !errors.Is(told[0], client.ErrForbidden) || !strings.Contains(told[0].Error(), "secret") {
		t.Fatalf("onError was given %v, want one forbidden of secret", told)
	}
	// A new token of the same subject, read by the next request: the
	// collection refused is read with it.
	writeOne(t, url, wider, "secret", "s1")
	current.Store(wider)
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
	awaitLive(t, l, "secret", "s1")
	writeOne(t, url, token, "notes", "n3")
	awaitLive(t, l, "notes", "n3")
	if told := l.errors(); len(told) != 1 {
		t.Fatalf("onError was given %v after the new token, want the one refusal", told)
	}
}
