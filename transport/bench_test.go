package transport

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// The server's own cost per request, without the network: handlers called
// directly on a memory store.
func benchServer(b *testing.B) *Server {
	store := memory.New()
	eng, err := engine.Open(engine.Config{Store: store, PollInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(Config{Engine: eng, Demo: true, Limits: Limits{Rate: -1}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { eng.Close(); store.Close() })
	return srv
}

func serveBench(b *testing.B, srv *Server, path string, body []byte) []byte {
	r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	r.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		b.Fatalf("%s: %d %s", path, w.Code, w.Header().Get(proto.HeaderError))
	}
	return w.Body.Bytes()
}

func benchChanges(n, round int) []crdt.Change {
	v, _ := crdt.EncodeValue("a todo title of some length")
	cs := make([]crdt.Change, n)
	for i := range cs {
		s := crdt.Stamp{Wall: time.Now().UnixMilli(), Logical: uint32(round), Replica: "bench"}
		cs[i] = crdt.Change{Collection: DemoCollection, Record: crdt.Record{ID: fmt.Sprintf("todo-%06d", i), Fields: map[string]crdt.Field{
			"title": {Stamp: s, Value: v}, "done": {Stamp: s, Value: []byte{0xf4}},
		}}}
	}
	return cs
}

// BenchmarkPush pushes 100 changes per request; ns/op is per request.
func BenchmarkPush(b *testing.B) {
	srv := benchServer(b)
	bodies := make([][]byte, 64)
	for i := range bodies {
		bodies[i], _ = proto.Encode(proto.PushRequest{Replica: "bench", Changes: benchChanges(100, i+1)})
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		serveBench(b, srv, proto.PathPush, bodies[i%len(bodies)])
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*100), "ns/change")
}

// BenchmarkPull pulls a page of 1000 records.
func BenchmarkPull(b *testing.B) {
	srv := benchServer(b)
	body, _ := proto.Encode(proto.PushRequest{Replica: "bench", Changes: benchChanges(1000, 1)})
	serveBench(b, srv, proto.PathPush, body)
	pull, _ := proto.Encode(proto.PullRequest{Collection: DemoCollection})
	b.ReportAllocs()
	for b.Loop() {
		serveBench(b, srv, proto.PathPull, pull)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/record")
}

// BenchmarkPullCaughtUp is a reader's poll at the head of 1,000 records:
// an empty page, as most polls of a reader that keeps up are.
func BenchmarkPullCaughtUp(b *testing.B) {
	srv := benchServer(b)
	body, _ := proto.Encode(proto.PushRequest{Replica: "bench", Changes: benchChanges(1000, 1)})
	serveBench(b, srv, proto.PathPush, body)
	var next []byte
	for more := true; more; {
		req, _ := proto.Encode(proto.PullRequest{Collection: DemoCollection, Cursor: next})
		var p proto.PullResponse
		if err := proto.Decode(serveBench(b, srv, proto.PathPull, req), &p); err != nil {
			b.Fatal(err)
		}
		next, more = p.Next, p.More
	}
	pull, _ := proto.Encode(proto.PullRequest{Collection: DemoCollection, Cursor: next})
	b.ReportAllocs()
	for b.Loop() {
		serveBench(b, srv, proto.PathPull, pull)
	}
}
