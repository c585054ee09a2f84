package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
)

// Benchmarks of the protocol's round trips over loopback HTTP, on the
// in-memory store so that they measure the client, the transport and the
// engine rather than a disk.

func benchServer(b *testing.B) (*testServer, string) {
	b.Helper()
	store := memory.New()
	b.Cleanup(func() { store.Close() })
	srv := startServerTB(b, store, func(c *transport.Config) { c.Limits.Rate = -1 })
	return srv, srv.token(b, "bench", []string{"*"}, []string{"*"})
}

func BenchmarkPush(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprint(n, "changes"), func(b *testing.B) {
			srv, tok := benchServer(b)
			c := newClient(b, srv.URL, tok, "bench", nil)
			v, _ := crdt.EncodeValue("a value of some length, like a todo title")
			b.ReportAllocs()
			seq := 0
			for b.Loop() {
				changes := make([]crdt.Change, n)
				for i := range changes {
					s, err := c.Now()
					if err != nil {
						b.Fatal(err)
					}
					seq++
					changes[i] = crdt.Change{Collection: "bench", Record: crdt.SetField(fmt.Sprint("r", seq%5000), "title", v, s)}
				}
				if _, err := c.Push(b.Context(), changes); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "changes/s")
		})
	}
}

func BenchmarkPull(b *testing.B) {
	srv, tok := benchServer(b)
	c := newClient(b, srv.URL, tok, "bench", nil)
	v, _ := crdt.EncodeValue(map[string]any{"title": "a todo", "done": false, "at": time.Unix(0, 0).Unix()})
	var changes []crdt.Change
	for i := range 1000 {
		s, _ := c.Now()
		changes = append(changes, crdt.Change{Collection: "bench", Record: crdt.SetField(fmt.Sprint("r", i), "doc", v, s)})
	}
	if _, err := c.Push(b.Context(), changes); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		p, err := c.Pull(b.Context(), "bench", nil, 1000)
		if err != nil || len(p.Records) != 1000 {
			b.Fatalf("pull: %d records, %v", len(p.Records), err)
		}
	}
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "records/s")
}
