package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/convergo/convergo/transport/proto"
)

// subjectServer answers hellos (HTTP and live) naming the subject its
// token is: the token "alice" is alice's. A hello sent with the token in
// hold is answered only once the test releases it.
type subjectServer struct {
	srv  *httptest.Server
	hold string
	// held receives the token of each hello that is held; release lets
	// them all be answered.
	held    chan string
	release chan struct{}

	mu         sync.Mutex
	liveHellos []string // the tokens of the live hellos, in order
}

func newSubjectServer(t *testing.T, hold string) *subjectServer {
	t.Helper()
	s := &subjectServer{hold: hold, held: make(chan string, 4), release: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc(proto.PathHello, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !s.wait(r.Context(), tok) {
			return
		}
		b, err := proto.Encode(s.answer(tok))
		if err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", proto.ContentType)
		w.Write(b)
	})
	mux.HandleFunc(proto.PathLive, func(w http.ResponseWriter, r *http.Request) {
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := r.Context()
		_, b, err := conn.Read(ctx)
		if err != nil {
			return
		}
		m, err := proto.DecodeClientMessage(b, proto.Session{})
		h, ok := m.(proto.Hello)
		if err != nil || !ok {
			return
		}
		s.mu.Lock()
		s.liveHellos = append(s.liveHellos, h.Token)
		s.mu.Unlock()
		if !s.wait(ctx, h.Token) {
			return
		}
		if b, err = proto.EncodeMessage(proto.Welcome{Hello: s.answer(h.Token)}); err != nil || conn.Write(ctx, websocket.MessageBinary, b) != nil {
			return
		}
		for { // the session stays open, quiet, until the client ends it
			if _, _, err := conn.Read(ctx); err != nil {
				return
			}
		}
	})
	s.srv = httptest.NewServer(mux)
	t.Cleanup(s.srv.Close)
	return s
}

// wait holds a hello sent with the token in hold until the test releases
// it; false when the request ended first.
func (s *subjectServer) wait(ctx context.Context, tok string) bool {
	if tok != s.hold {
		return true
	}
	s.held <- tok
	select {
	case <-s.release:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *subjectServer) answer(subject string) proto.HelloResponse {
	return proto.HelloResponse{Protocol: proto.Version, ServerTime: time.Now().UnixMilli(), ServerReplica: "srv",
		MaxPush: proto.DefaultMaxPushChanges, MaxPull: proto.DefaultMaxPullRecords, MaxBodyBytes: proto.DefaultMaxBodyBytes,
		MaxDrift: 60_000, MaxPageBytes: proto.DefaultMaxPageBytes, MaxMessageBytes: proto.DefaultMaxMessageBytes,
		Subject: subject, ReplicaPrefix: proto.ReplicaPrefix(subject)}
}

func (s *subjectServer) liveTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.liveHellos...)
}

// subjectClient is a client whose TokenFunc returns the token in tok.
func subjectClient(t *testing.T, url string, tok *atomic.Value) *Client {
	t.Helper()
	c, err := New(Config{URL: url, Device: "tablet",
		Backoff:   Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond, MaxAttempts: 4},
		TokenFunc: func(context.Context) (string, error) { return tok.Load().(string), nil }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A hello sent with the old subject's token and answered after a hello of
// the new subject's does not bind the client back to the old subject: its
// writes would be stamped with ids the new token does not own
// (forged_replica).
func TestHelloAnsweredAfterSubjectChangeIsDropped(t *testing.T) {
	s := newSubjectServer(t, "alice")
	var tok atomic.Value
	tok.Store("alice")
	c := subjectClient(t, s.srv.URL, &tok)

	old := make(chan error, 1)
	go func() {
		_, err := c.Hello(t.Context())
		old <- err
	}()
	<-s.held // alice's hello is at the server
	tok.Store("bob")
	info, err := c.Hello(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	bob := proto.ReplicaFor("bob", "tablet")
	if info.Subject != "bob" || c.Replica() != bob {
		t.Fatalf("after bob's hello: subject %q, replica %q; want bob, %q", info.Subject, c.Replica(), bob)
	}
	close(s.release)
	if err := <-old; err != nil {
		t.Fatalf("alice's hello: %v", err)
	}
	if got := c.Replica(); got != bob {
		t.Errorf("after alice's late answer the client is %q, want bob's %q", got, bob)
	}
	if info, _ := c.Info(); info.Subject != "bob" {
		t.Errorf("after alice's late answer Info names %q, want bob", info.Subject)
	}
}

// A live session dialled with the old subject's token whose welcome comes
// after a hello of the new subject's does not bind the client back to the
// old subject, and does not stay open as the old subject's: Live dials
// again with the new token.
func TestLiveWelcomeAnsweredAfterSubjectChangeIsDropped(t *testing.T) {
	s := newSubjectServer(t, "alice")
	var tok atomic.Value
	tok.Store("alice")
	c := subjectClient(t, s.srv.URL, &tok)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Live(ctx, nil, func(string, Page) {}, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	<-s.held // alice's live hello is at the server
	tok.Store("bob")
	if _, err := c.Hello(t.Context()); err != nil {
		t.Fatal(err)
	}
	bob := proto.ReplicaFor("bob", "tablet")
	close(s.release)
	// Either the client goes back to alice (the defect) or Live dials
	// again as bob.
	eventually(t, "a live hello as bob, or the client bound back to alice", func() bool {
		toks := s.liveTokens()
		return c.Replica() != bob || len(toks) > 1
	})
	if got := c.Replica(); got != bob {
		t.Fatalf("after alice's late welcome the client is %q, want bob's %q", got, bob)
	}
	if toks := s.liveTokens(); len(toks) != 2 || toks[1] != "bob" {
		t.Fatalf("live hellos %q, want alice's then bob's", toks)
	}
	eventually(t, "a live session as bob", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.live != nil && c.live.subject == "bob"
	})
	if got := c.Replica(); got != bob {
		t.Errorf("with bob's session open the client is %q, want bob's %q", got, bob)
	}
}
