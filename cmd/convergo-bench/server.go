package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awsddb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/coder/websocket"
	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/storeurl"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
)

// benchLimits are the limits of every server the bench starts: the
// in-process one (startServer) and the server command (startReal, whose
// flags benchServeFlags formats from them). Only the per-address and
// per-subject limits are raised, every load generator here being one
// address (and maybe one subject, or anonymous: its subscriptions count by
// that one address), and the limit on all connections (10,000 subscribers
// plus the bench's own requests are over the default; the in-process
// server, which does not serve through Server.Listener, has none). The
// rest keep their defaults, so the figures (memory per connection above
// all) are the product's.
var benchLimits = transport.Limits{
	Rate:                       -1,
	MaxConnsPerAddr:            1 << 20,
	MaxSessionsPerSubject:      1 << 20,
	MaxSubscriptionsPerSubject: 1 << 30,
	MaxConns:                   1 << 20,
}

// benchServeFlags are benchLimits as flags of convergo serve.
func benchServeFlags() []string {
	l := benchLimits
	return []string{
		"-rate", strconv.FormatFloat(l.Rate, 'g', -1, 64),
		"-max-conns", strconv.Itoa(l.MaxConnsPerAddr),
		"-max-sessions", strconv.Itoa(l.MaxSessionsPerSubject),
		"-max-subscriptions-per-subject", strconv.Itoa(l.MaxSubscriptionsPerSubject),
		"-max-conns-total", strconv.Itoa(l.MaxConns),
	}
}

// benchServer is a sync server (transport.Server over an engine) on a
// loopback port, with limits raised for load generation.
type benchServer struct {
	url     string
	ts      *transport.Server
	store   stores.Store
	engine  *engine.Engine
	srv     *http.Server
	cleanup []func()
}

func randomSuffix() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// openStore opens a fresh, isolated store of kind: "memory", "redis" (a
// random key prefix on CONVERGO_REDIS_ADDR, deleted afterwards) or
// "dynamodb" (a new table on CONVERGO_DYNAMODB_ENDPOINT, deleted
// afterwards). It returns an error naming the missing variable when the
// service is not configured.
func openStore(ctx context.Context, kind string) (stores.Store, func(), error) {
	return openStoreWith(ctx, kind, "")
}

// openStoreWith is openStore with a given Redis key prefix; a store opened
// with one leaves deleting its keys to the caller.
func openStoreWith(ctx context.Context, kind, prefix string) (stores.Store, func(), error) {
	switch kind {
	case "memory":
		s := memory.New()
		return s, func() { s.Close() }, nil
	case "bolt":
		dir, err := os.MkdirTemp("", "convergo-bench-bolt-")
		if err != nil {
			return nil, nil, err
		}
		s, err := bolt.Open(ctx, filepath.Join(dir, "bench.db"), bolt.Options{})
		if err != nil {
			os.RemoveAll(dir)
			return nil, nil, err
		}
		return s, func() { s.Close(); os.RemoveAll(dir) }, nil
	case "redis":
		addr := os.Getenv("CONVERGO_REDIS_ADDR")
		if addr == "" {
			return nil, nil, errors.New("CONVERGO_REDIS_ADDR is not set")
		}
		owned := prefix == ""
		if owned {
			prefix = "bench-" + randomSuffix() + ":"
		}
		spec, err := storeurl.Parse("redis://" + addr + "?prefix=" + url.QueryEscape(prefix))
		if err != nil {
			return nil, nil, err
		}
		spec.Redis.PoolSize = 64
		s, err := spec.Open(ctx, storeurl.Options{})
		if err != nil {
			return nil, nil, err
		}
		return s, func() {
			s.Close()
			if owned {
				dropRedisPrefix(addr, prefix)
			}
		}, nil
	case "dynamodb":
		ep := os.Getenv("CONVERGO_DYNAMODB_ENDPOINT")
		if ep == "" {
			return nil, nil, errors.New("CONVERGO_DYNAMODB_ENDPOINT is not set")
		}
		table := "bench-" + randomSuffix()
		s, err := storeurl.Open(ctx, "dynamodb://"+table+"?capture=0&create=1&endpoint="+url.QueryEscape(ep), storeurl.Options{})
		if err != nil {
			return nil, nil, err
		}
		return s, func() {
			s.Close()
			dropTable(ep, table)
		}, nil
	}
	return nil, nil, fmt.Errorf("unknown store %q", kind)
}

func dropRedisPrefix(addr, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 1000 {
			c.Unlink(ctx, keys...)
			keys = keys[:0]
		}
	}
	if len(keys) > 0 {
		c.Unlink(ctx, keys...)
	}
}

func ddbClient(ctx context.Context, endpoint string) (*awsddb.Client, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, err
	}
	return awsddb.NewFromConfig(cfg, func(o *awsddb.Options) { o.BaseEndpoint = aws.String(endpoint) }), nil
}

func dropTable(endpoint, table string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if c, err := ddbClient(ctx, endpoint); err == nil {
		c.DeleteTable(ctx, &awsddb.DeleteTableInput{TableName: aws.String(table)})
	}
}

// startServer serves a transport.Server for store on 127.0.0.1.
func startServer(store stores.Store, replica string) (*benchServer, error) {
	e, err := engine.Open(engine.Config{Store: store, Replica: replica})
	if err != nil {
		return nil, err
	}
	ts, err := transport.New(transport.Config{
		Engine: e,
		Demo:   true,
		Limits: benchLimits,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		e.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.Close()
		return nil, err
	}
	srv := &http.Server{Handler: ts, ReadHeaderTimeout: transport.ReadHeaderTimeout, MaxHeaderBytes: transport.MaxHeaderBytes}
	go srv.Serve(ln)
	return &benchServer{url: "http://" + ln.Addr().String(), ts: ts, store: store, engine: e, srv: srv,
		cleanup: []func(){func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ts.Shutdown(ctx)
			srv.Shutdown(ctx)
		}}}, nil
}

func (s *benchServer) Close() {
	for _, f := range s.cleanup {
		f()
	}
	s.engine.Close()
}

// httpPush pushes changes and returns how many the server acknowledged
// (applied, duplicate or superseded).
func httpPush(ctx context.Context, c *http.Client, base, replica string, changes []crdt.Change) (int, error) {
	body, err := pushBody(replica, changes)
	if err != nil {
		return 0, err
	}
	return httpPushBody(ctx, c, base, body)
}

// pushBody encodes a push request of replica's changes.
func pushBody(replica string, changes []crdt.Change) ([]byte, error) {
	return proto.Encode(proto.PushRequest{Replica: replica, Changes: changes})
}

// httpPushBody sends a push request encoded by pushBody and returns how many
// of its changes the server acknowledged.
func httpPushBody(ctx context.Context, c *http.Client, base string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+proto.PathPush, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", proto.ContentType)
	req.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("push: %s: %s (request %s)", resp.Status, strings.TrimSpace(resp.Header.Get(proto.HeaderError)), resp.Header.Get(proto.HeaderRequestID))
	}
	var pr proto.PushResponse
	if err := proto.Decode(data, &pr); err != nil {
		return 0, fmt.Errorf("push answer: %w", err)
	}
	return acked(pr.Results)
}

func acked(results []proto.PushResult) (int, error) {
	n := 0
	for _, r := range results {
		if !r.Status.Acknowledged() {
			return n, fmt.Errorf("change %s: %s %s", r.Status, r.Code, r.Message)
		}
		n++
	}
	return n, nil
}

// wsConn is a live session: hello sent, welcome received.
type wsConn struct {
	c *websocket.Conn
}

func dialLive(ctx context.Context, base, replica string) (*wsConn, error) {
	u := "ws" + strings.TrimPrefix(base, "http") + proto.PathLive
	c, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(64 << 20)
	w := &wsConn{c: c}
	if err := w.send(ctx, proto.Hello{Protocol: proto.Version, Replica: replica}); err != nil {
		c.CloseNow()
		return nil, err
	}
	m, err := w.read(ctx)
	if err != nil {
		c.CloseNow()
		return nil, err
	}
	if _, ok := m.(proto.Welcome); !ok {
		c.CloseNow()
		return nil, fmt.Errorf("live: got %T, want welcome", m)
	}
	return w, nil
}

func (w *wsConn) send(ctx context.Context, m proto.Message) error {
	b, err := proto.EncodeMessage(m)
	if err != nil {
		return err
	}
	return w.c.Write(ctx, websocket.MessageBinary, b)
}

// read reads a server message; an error message is returned as an error.
func (w *wsConn) read(ctx context.Context) (proto.Message, error) {
	_, b, err := w.c.Read(ctx)
	if err != nil {
		return nil, err
	}
	m, err := proto.DecodeServerMessage(b)
	if err != nil {
		return nil, fmt.Errorf("live message: %w", err)
	}
	if e, ok := m.(proto.ErrorMessage); ok {
		return m, fmt.Errorf("live error: %s %s", e.Code, e.Message)
	}
	return m, nil
}

func (w *wsConn) Close() { w.c.Close(websocket.StatusNormalClosure, "") }

// dialBare opens a WebSocket to a bare server and keeps reading in the
// background; the returned func closes it.
func dialBare(ctx context.Context, base string) (func(), error) {
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/", nil)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			if _, _, err := c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	return func() { c.CloseNow() }, nil
}

// storeURL returns a fresh, isolated store of kind as the server command's
// -store URL, and a cleanup that deletes what the server left behind.
func storeURL(kind string) (string, func(), error) {
	switch kind {
	case "memory":
		return "memory:", func() {}, nil
	case "bolt":
		dir, err := os.MkdirTemp("", "convergo-bench-bolt-")
		if err != nil {
			return "", nil, err
		}
		return "bolt:" + filepath.Join(dir, "bench.db"), func() { os.RemoveAll(dir) }, nil
	case "redis":
		addr := os.Getenv("CONVERGO_REDIS_ADDR")
		if addr == "" {
			return "", nil, errors.New("CONVERGO_REDIS_ADDR is not set")
		}
		prefix := "bench-" + randomSuffix() + ":"
		url := "redis://" + addr + "?prefix=" + prefix
		// BENCH_REDIS_QUERY adds parameters to the store's URL
		// (written_cache=32MiB, say: stores/storeurl).
		if q := os.Getenv("BENCH_REDIS_QUERY"); q != "" {
			url += "&" + q
		}
		return url, func() { dropRedisPrefix(addr, prefix) }, nil
	case "dynamodb":
		ep := os.Getenv("CONVERGO_DYNAMODB_ENDPOINT")
		if ep == "" {
			return "", nil, errors.New("CONVERGO_DYNAMODB_ENDPOINT is not set")
		}
		table := "bench-" + randomSuffix()
		return "dynamodb://" + table + "?endpoint=" + ep + "&create=1&capture=0", func() { dropTable(ep, table) }, nil
	}
	return "", nil, fmt.Errorf("unknown store %q", kind)
}

// startReal starts the server command (cmd/convergo) on a free loopback
// port with the store at url under benchLimits, and waits until it answers
// /healthz.
func startReal(bin, url string) (*child, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := append([]string{"serve", "-addr", addr, "-store", url, "-demo", "-log-level", "error"}, benchServeFlags()...)
	cmd := pinned(bin, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &child{cmd: cmd, stdin: stdin, url: "http://" + addr, real: true}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(c.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.stop()
			return nil, fmt.Errorf("%s serve -store %s: not healthy after 2 minutes", bin, url)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
