package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/redis"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
)

// secret signs the tests' tokens.
var secret = []byte("e2e-test-secret-0123456789abcdef")

// testServer is a transport.Server on an httptest server.
type testServer struct {
	URL    string
	Engine *engine.Engine
	Store  stores.Store
	JWT    *transport.JWT
	HTTP   *httptest.Server
}

// storeFactory opens a fresh, empty store for one test.
type storeFactory struct {
	name string
	open func(t *testing.T) stores.Store
}

// storeFactories are the stores end-to-end tests run on: the embedded one
// and Redis (skipped without CONVERGO_REDIS_ADDR).
func storeFactories() []storeFactory {
	return []storeFactory{
		{"embedded", openEmbedded},
		{"redis", openRedis},
	}
}

// openEmbedded opens the embedded store on a new file.
func openEmbedded(t *testing.T) stores.Store {
	t.Helper()
	s, err := bolt.Open(context.Background(), filepath.Join(t.TempDir(), "convergo.db"), bolt.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openRedis opens a Redis store under a key prefix of its own.
func openRedis(t *testing.T) stores.Store {
	t.Helper()
	addr := storetest.Endpoint(t, "CONVERGO_REDIS_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := redis.Open(ctx, redis.Options{Addrs: []string{addr}, KeyPrefix: "e2e-" + randomSuffix(t) + ":"})
	if err != nil {
		t.Fatalf("open redis store at %s: %v", addr, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func randomSuffix(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// testLogger logs to the test's output when -v and CONVERGO_E2E_LOG=1.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("CONVERGO_E2E_LOG") != "1" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// startServer serves the protocol over store on loopback.
func startServer(t *testing.T, store stores.Store, mod func(*transport.Config)) *testServer {
	t.Helper()
	return startServerTB(t, store, mod)
}

func startServerTB(t testing.TB, store stores.Store, mod func(*transport.Config)) *testServer {
	t.Helper()
	eng, err := engine.Open(engine.Config{Store: store, PollInterval: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	jwt, err := transport.NewJWT(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := transport.Config{Engine: eng, Authorizer: jwt, Logger: testLogger(t)}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := transport.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.CloseClientConnections()
		hs.Close()
		eng.Close()
	})
	return &testServer{URL: hs.URL, Engine: eng, Store: store, JWT: jwt, HTTP: hs}
}

// token issues a token for subject with access to patterns.
func (s *testServer) token(t testing.TB, subject string, read, write []string) string {
	t.Helper()
	tok, err := s.JWT.Issue(subject, read, write, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// snapshot reads every record of collection from the store.
func snapshot(t testing.TB, ctx context.Context, s stores.Store, collection string) map[string]crdt.Record {
	t.Helper()
	out := map[string]crdt.Record{}
	var cursor uint64
	for {
		p, err := s.Pull(ctx, collection, cursor, stores.PageLimit{Records: stores.MaxPage, Bytes: stores.DefaultPageBytes})
		if err != nil {
			t.Fatalf("pull %s from the store: %v", collection, err)
		}
		for _, e := range p.Entries {
			out[e.Record.ID] = e.Record
		}
		cursor = p.Next
		if !p.More {
			return out
		}
	}
}

// cursorSeq reads a cursor the server handed out, as the server does
// (clients never look inside one): the sequence number it has read up to.
func cursorSeq(t testing.TB, cursor []byte) uint64 {
	t.Helper()
	// The server's cursors end with a 16-byte tag (transport/cursor.go).
	const tag = 16
	if len(cursor) == 0 {
		return 0 // the beginning
	}
	if len(cursor) <= tag {
		t.Fatalf("cursor %x: too short for its tag", cursor)
	}
	c, err := engine.ParseCursor(cursor[:len(cursor)-tag])
	if err != nil {
		t.Fatalf("cursor %x: %v", cursor, err)
	}
	return c.Seq()
}

// diffRecords describes how got differs from want, "" when equal.
func diffRecords(got, want map[string]crdt.Record) string {
	var d string
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			d += fmt.Sprintf("  missing %s: want %s\n", id, formatRecord(w))
		case !g.Normalize().Equal(w.Normalize()):
			d += fmt.Sprintf("  %s:\n    got  %s\n    want %s\n", id, formatRecord(g), formatRecord(w))
		}
	}
	for id, g := range got {
		if _, ok := want[id]; !ok {
			d += fmt.Sprintf("  extra %s: %s\n", id, formatRecord(g))
		}
	}
	return d
}

func formatRecord(r crdt.Record) string {
	s := "{"
	if !r.Deleted.IsZero() {
		s += "deleted " + r.Deleted.String() + " "
	}
	for _, name := range r.FieldNames() {
		f := r.Fields[name]
		if f.Value == nil {
			s += fmt.Sprintf("%s=unset@%s ", name, f.Stamp)
		} else {
			s += fmt.Sprintf("%s=%x@%s ", name, f.Value, f.Stamp)
		}
	}
	return s + "}"
}

// newClient returns a client of srv with token, for a device of the
// token's subject, after its first hello, which binds its replica id.
func newClient(t testing.TB, url, token, device string, hc *http.Client) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{
		URL:        url,
		Token:      token,
		Device:     device,
		HTTPClient: hc,
		Logger:     testLogger(t),
		Backoff:    client.Backoff{Initial: 5 * time.Millisecond, Max: 200 * time.Millisecond, MaxAttempts: 4},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello(context.Background()); err != nil {
		t.Fatalf("hello: %v", err)
	}
	return c
}

// offlineTransport fails every request while off is set: the client's
// network is down.
type offlineTransport struct {
	off  atomic.Bool
	next http.RoundTripper
}

func newOfflineTransport() *offlineTransport {
	return &offlineTransport{next: http.DefaultTransport.(*http.Transport).Clone()}
}

func (o *offlineTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if o.off.Load() {
		return nil, errOffline
	}
	return o.next.RoundTrip(r)
}

var errOffline = errors.New("e2e: client is offline")
