package client_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// liveDials counts the WebSocket dials of the live path it carries.
type liveDials struct{ n atomic.Int64 }

func (d *liveDials) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path == proto.PathLive {
		d.n.Add(1)
	}
	return http.DefaultTransport.RoundTrip(req)
}

// subjectReader is a client reading notes live under a token that the
// test switches, with the ids each page brought.
type subjectReader struct {
	c     *client.Client
	tok   atomic.Value
	dials liveDials
	mu    sync.Mutex
	got   []string
	told  []error // what Live gave onError
	done  chan error
}

func newSubjectReader(t *testing.T, url, token string) *subjectReader {
	t.Helper()
	s := &subjectReader{done: make(chan error, 1)}
	s.tok.Store(token)
	c, err := client.New(client.Config{URL: url, Device: "tablet", HTTPClient: &http.Client{Transport: &s.dials},
		TokenFunc: func(context.Context) (string, error) { return s.tok.Load().(string), nil }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
	s.c = c
	go func() {
		s.done <- c.Live(t.Context(), map[string][]byte{"notes": nil}, func(_ string, p client.Page) {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, r := range p.Records {
				s.got = append(s.got, r.ID)
			}
		}, func(err error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.told = append(s.told, err)
		})
	}()
	return s
}

func (s *subjectReader) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.got, id)
}

// switchTo makes the token func return token and greets the server with it.
func (s *subjectReader) switchTo(t *testing.T, token string) {
	t.Helper()
	s.tok.Store(token)
	if _, err := s.c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// A hello that names another subject than the open live session's ends the
// session: Live dials again with the new token, and the subscriptions go
// on from their cursors under the new subject's rights.
func TestLiveEndsSessionOnSubjectChange(t *testing.T) {
	_, url, auth := realServer(t)
	admin, _ := auth.Issue("admin", []string{"notes"}, []string{"notes"}, time.Hour)
	alice, _ := auth.Issue("alice", []string{"notes"}, nil, time.Hour)
	bob, _ := auth.Issue("bob", []string{"notes"}, nil, time.Hour)
	w := replicaOf(t, url, admin, "desk", nil, client.ReplicaConfig{})
	s := newSubjectReader(t, url, alice)

	put(t, w, "title", map[string]string{"a1": "one"})
	waitFor(t, "a1 delivered live", func() bool { return s.has("a1") })
	if n := s.dials.n.Load(); n != 1 {
		t.Fatalf("%d live dials before the switch, want 1", n)
	}
	s.switchTo(t, bob)
	put(t, w, "title", map[string]string{"b1": "two"})
	waitFor(t, "b1 delivered live", func() bool { return s.has("b1") })
	// The session that brought b1 was dialled after the switch: the one
	// opened as alice was ended by the hello that named bob.
	if n := s.dials.n.Load(); n != 2 {
		t.Errorf("%d live dials by b1's delivery, want 2 (the session of alice ended, one of bob)", n)
	}
	select {
	case err := <-s.done:
		t.Fatalf("Live ended: %v", err)
	default:
	}
}

// The new subject's rights apply at once: a subject that may not read the
// collection gets forbidden (told to onError, the session going on for
// any other collection), and nothing written after the switch reaches the
// client over the old subject's session.
func TestLiveSubjectChangeAppliesNewRights(t *testing.T) {
	_, url, auth := realServer(t)
	admin, _ := auth.Issue("admin", []string{"notes"}, []string{"notes"}, time.Hour)
	alice, _ := auth.Issue("alice", []string{"notes"}, nil, time.Hour)
	mallory, _ := auth.Issue("mallory", []string{"other"}, nil, time.Hour)
	w := replicaOf(t, url, admin, "desk", nil, client.ReplicaConfig{})
	s := newSubjectReader(t, url, alice)

	put(t, w, "title", map[string]string{"a1": "one"})
	waitFor(t, "a1 delivered live", func() bool { return s.has("a1") })
	s.switchTo(t, mallory)
	put(t, w, "title", map[string]string{"a2": "two"})
	waitFor(t, "forbidden told to onError", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		var e *client.Error
		return len(s.told) == 1 && errors.As(s.told[0], &e) && e.Code == proto.CodeForbidden && e.Collection == "notes"
	})
	select {
	case err := <-s.done:
		t.Fatalf("Live ended with %v; a sub refused is its collection's", err)
	default:
	}
	if s.has("a2") {
		t.Error("a2, written after the switch, was delivered to the client of a subject that may not read it")
	}
}

// A refreshed token of the same subject keeps the session: no redial.
func TestLiveKeepsSessionOnSameSubject(t *testing.T) {
	_, url, auth := realServer(t)
	admin, _ := auth.Issue("admin", []string{"notes"}, []string{"notes"}, time.Hour)
	alice, _ := auth.Issue("alice", []string{"notes"}, nil, time.Hour)
	fresh, _ := auth.Issue("alice", []string{"notes"}, nil, 2*time.Hour)
	if fresh == alice {
		t.Fatal("the refreshed token is the same token")
	}
	w := replicaOf(t, url, admin, "desk", nil, client.ReplicaConfig{})
	s := newSubjectReader(t, url, alice)

	put(t, w, "title", map[string]string{"a1": "one"})
	waitFor(t, "a1 delivered live", func() bool { return s.has("a1") })
	s.switchTo(t, fresh)
	put(t, w, "title", map[string]string{"a2": "two"})
	waitFor(t, "a2 delivered live", func() bool { return s.has("a2") })
	if n := s.dials.n.Load(); n != 1 {
		t.Errorf("%d live dials, want 1: a refreshed token of the same subject must keep the session", n)
	}
}
