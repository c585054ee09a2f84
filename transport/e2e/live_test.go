package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestLiveTokenRefresh runs a live client whose tokens live about two
// seconds: the server closes its socket with token_expired each time one
// expires, and the client must redial with a fresh token and resume from
// its cursor without missing a change.
func TestLiveTokenRefresh(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for tokens to expire")
	}
	store := openEmbedded(t)
	srv := startServer(t, store, nil)
	ctx := t.Context()
	const coll = "e2e.live"

	var issued atomic.Int64
	c, err := client.New(client.Config{
		URL: srv.URL, Replica: "reader-" + randomSuffix(t), Logger: testLogger(t),
		Backoff: client.Backoff{Initial: 5 * time.Millisecond, Max: 100 * time.Millisecond},
		TokenFunc: func(context.Context) (string, error) {
			issued.Add(1)
			return srv.JWT.Issue("reader", []string{coll}, nil, 2*time.Second)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{coll}})
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	liveErr := make(chan error, 1)
	go func() { liveErr <- reader.Live(lctx) }()

	wc := newClient(t, srv.URL, srv.token(t, "writer", nil, []string{coll}), "writer-"+randomSuffix(t), nil)
	writer, err := client.NewReplica(wc, client.ReplicaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if err := writer.Set(coll, fmt.Sprint("r", i%10), "n", i); err != nil {
			t.Fatal(err)
		}
		if err := writer.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	head, err := store.Head(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for cursorSeq(t, reader.Cursor(coll)) < head {
		if time.Now().After(deadline) {
			t.Fatalf("live reader stuck at %d, head %d", cursorSeq(t, reader.Cursor(coll)), head)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-liveErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("live ended with %v, want only the cancellation", err)
	}
	if d := diffRecords(reader.Records(coll), snapshot(t, ctx, store, coll)); d != "" {
		t.Fatalf("live reader differs from the store:\n%s", d)
	}
	if n := issued.Load(); n < 3 {
		t.Fatalf("%d tokens issued in 5s of tokens that live 1 to 2s: the client did not redial on token_expired", n)
	}
	t.Logf("%d tokens issued; reader at head %d", issued.Load(), head)
}

// countingTransport counts requests by path.
type countingTransport struct {
	pulls atomic.Int64
	next  http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == proto.PathPull {
		c.pulls.Add(1)
	}
	return c.next.RoundTrip(r)
}

// TestLiveResync makes a live client too slow for the server's send queue:
// the server gives up streaming and sends resync, and the client must pull
// over HTTP from its cursor, subscribe again and end with every change.
func TestLiveResync(t *testing.T) {
	store := openEmbedded(t)
	var decided *logSpy
	srv := startServer(t, store, func(c *transport.Config) {
		c.Limits.SendQueue = 1
		c.Limits.SlowConsumer = time.Millisecond
		c.Limits.MaxPullRecords = 1 // one record per frame: many frames
		// Not dropped as a client that stopped reading while the test
		// stalls it (up to 30 s, below): the resync, queued behind the
		// pages, must reach it.
		c.WriteTimeout = 2 * time.Minute
		decided = newLogSpy(c.Logger.Handler(), "slow live consumer: resync")
		c.Logger = slog.New(decided)
	})
	ctx := t.Context()
	const coll = "e2e.big"

	// The reader's socket takes 64 KiB (its kernel does not grow it, as it
	// would to many MiB on loopback), so what the server sends while the
	// application stalls fills the server's queue whatever the machine.
	small := http.DefaultTransport.(*http.Transport).Clone()
	small.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := conn.(*net.TCPConn); ok {
			err = errors.Join(err, tc.SetReadBuffer(64<<10))
		}
		return conn, err
	}
	ct := &countingTransport{next: small}
	rc := newClient(t, srv.URL, srv.token(t, "reader", []string{coll}, nil), "reader-"+randomSuffix(t), &http.Client{Transport: ct})
	reader, err := client.NewReplica(rc, client.ReplicaConfig{Collections: []string{coll}})
	if err != nil {
		t.Fatal(err)
	}
	lctx, stop := context.WithCancel(ctx)
	liveErr := make(chan error, 1)
	// The application stalls on its first page until every record is
	// written, so the server has 12 MiB to send to a reader that does not
	// read: more than the kernel's socket buffers take, so its queue fills
	// and the slow-consumer rule must fire whatever the machine's speed.
	// Then it stays slow.
	written := make(chan struct{})
	go func() {
		liveErr <- rc.Live(lctx, map[string][]byte{coll: nil}, func(coll string, p client.Page) {
			select {
			case <-written:
			case <-lctx.Done():
			}
			time.Sleep(3 * time.Millisecond) // a slow application
			reader.Apply(coll, p)
		}, nil)
	}()

	wc := newClient(t, srv.URL, srv.token(t, "writer", nil, []string{coll}), "writer-"+randomSuffix(t), nil)
	writer, err := client.NewReplica(wc, client.ReplicaConfig{})
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 100<<10)
	for i := range 120 {
		if err := writer.Set(coll, fmt.Sprint("r", i), "body", fmt.Sprint(i, big)); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 {
			if err := writer.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	head, err := store.Head(ctx, coll)
	if err != nil {
		t.Fatal(err)
	}
	// The server tries to deliver, parks, gives up: resync. On a loaded
	// machine it may take a while to fill the socket's buffers; the
	// application stays stalled until the server has given up (or 30 s,
	// and the test fails below for want of a resync). The resync itself
	// is queued behind the pages the client has not read: it comes once
	// the application reads again.
	select {
	case <-decided.seen:
	case <-time.After(30 * time.Second):
	}
	close(written)
	deadline := time.Now().Add(30 * time.Second)
	for cursorSeq(t, reader.Cursor(coll)) < head {
		if time.Now().After(deadline) {
			t.Fatalf("live reader stuck at %d, head %d", cursorSeq(t, reader.Cursor(coll)), head)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if err := <-liveErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("live ended with %v, want only the cancellation", err)
	}
	if d := diffRecords(reader.Records(coll), snapshot(t, ctx, store, coll)); d != "" {
		t.Fatalf("live reader differs from the store:\n%s", d)
	}
	if ct.pulls.Load() == 0 {
		t.Fatal("the server never sent resync (no pull over HTTP): the test did not test resync")
	}
	t.Logf("%d pulls over HTTP after resyncs; reader at head %d", ct.pulls.Load(), head)
}

// logSpy passes records to Handler and closes seen at the first whose
// message is msg, its views (WithAttrs, WithGroup) too.
type logSpy struct {
	slog.Handler
	msg  string
	once *sync.Once
	seen chan struct{}
}

func newLogSpy(next slog.Handler, msg string) *logSpy {
	return &logSpy{Handler: next, msg: msg, once: new(sync.Once), seen: make(chan struct{})}
}

func (l *logSpy) Enabled(context.Context, slog.Level) bool { return true }

func (l *logSpy) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == l.msg {
		l.once.Do(func() { close(l.seen) })
	}
	if !l.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return l.Handler.Handle(ctx, r)
}

func (l *logSpy) WithAttrs(as []slog.Attr) slog.Handler {
	v := *l
	v.Handler = l.Handler.WithAttrs(as)
	return &v
}

func (l *logSpy) WithGroup(name string) slog.Handler {
	v := *l
	v.Handler = l.Handler.WithGroup(name)
	return &v
}
