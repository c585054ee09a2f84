package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
)

// runConns measures the server half of scenario 5: the resident memory one
// idle WebSocket session costs. A fresh server process (in-memory store)
// gets n connections, each through hello/welcome and subscribed to one
// collection, then idles; the cost is the growth of the process's RSS
// divided by n. The same is measured for a bare WebSocket server that only
// accepts and reads, the floor of this stack.
func runConns(args []string) error {
	fs := flag.NewFlagSet("conns", flag.ExitOnError)
	n := fs.Int("n", 10_000, "connections")
	runs := fs.Int("runs", 2, "measured runs")
	bin := fs.String("server", "", "the server command (cmd/convergo) to measure; empty runs this program's serve")
	fs.Parse(args)
	raiseFileLimit()
	ctx := context.Background()
	title := "Server memory per idle WebSocket (" + groupThousands(strconv.Itoa(*n)) + " connections)"
	for run := range *runs {
		for _, kind := range []string{"memory", "bare"} {
			per, mem, err := connsRun(ctx, *bin, kind, *n)
			if err != nil {
				return fmt.Errorf("%s: %w", kind, err)
			}
			s := sample{Scenario: title, Metric: "RSS per connection", Unit: "KiB", Better: "lower",
				Impl: "Convergo server (subscribed session)", Ours: true, Run: run, Value: per / 1024}
			if kind == "bare" {
				s.Impl, s.Ours, s.Limit, s.Note = "bare coder/websocket accept+read", false, true, "same process shape, no protocol"
			}
			emit(s)
			if kind != "bare" {
				t := s
				t.Impl, t.Ours, t.Limit, t.Value, t.Note = targetImpl, false, true, 10, ""
				emit(t)
			}
			if mem != nil { // the bench's own server: the split
				for _, m := range []struct {
					metric, unit string
					v            float64
				}{
					{"live heap per connection", "KiB", mem.heap / 1024},
					{"goroutine stacks per connection", "KiB", mem.stacks / 1024},
					{"goroutines per connection", "goroutines", mem.goroutines},
				} {
					t := s
					t.Metric, t.Unit, t.Value = m.metric, m.unit, m.v
					emit(t)
				}
			}
		}
	}
	return nil
}

// connsSplit is the growth of a server's memStats per connection.
type connsSplit struct{ heap, stacks, goroutines float64 }

// connsRun returns the RSS growth per connection and, for the bench's own
// server, how the growth splits (nil for the server command).
func connsRun(ctx context.Context, bin, kind string, n int) (float64, *connsSplit, error) {
	var srv *child
	var err error
	if bin != "" && kind == "memory" {
		srv, err = startReal(bin, "memory:")
	} else {
		srv, err = startChild("-store", kind)
	}
	if err != nil {
		return 0, nil, err
	}
	defer srv.stop()
	// One connection first, so the code paths and pools are warm.
	warm, err := dialSession(ctx, kind, srv.url, "warm")
	if err != nil {
		return 0, nil, err
	}
	time.Sleep(500 * time.Millisecond)
	before, err := rss(srv.cmd.Process.Pid)
	if err != nil {
		return 0, nil, err
	}
	// The split comes after each RSS reading: its collection would
	// otherwise move the RSS figure away from what it has always been.
	own := bin == "" || kind == "bare" // a server that answers /bench/mem
	var mem0 memStats
	if own {
		if mem0, err = childMem(srv); err != nil {
			return 0, nil, err
		}
	}
	conns := make([]func(), 0, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := dialSession(ctx, kind, srv.url, "idle-"+strconv.Itoa(i))
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	defer func() {
		for _, c := range conns {
			c()
		}
		warm()
	}()
	if err := <-errs; err != nil {
		return 0, nil, fmt.Errorf("%d of %d connections failed, first: %w", n-len(conns), n, err)
	}
	time.Sleep(2 * time.Second) // idle: let the goroutines park and buffers settle
	after, err := rss(srv.cmd.Process.Pid)
	if err != nil {
		return 0, nil, err
	}
	per := float64(after-before) / float64(n)
	if !own {
		return per, nil, nil
	}
	mem1, err := childMem(srv)
	if err != nil {
		return 0, nil, err
	}
	d := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	return per, &connsSplit{heap: d(mem0.HeapObjects, mem1.HeapObjects), stacks: d(mem0.Stacks, mem1.Stacks),
		goroutines: d(mem0.Goroutines, mem1.Goroutines)}, nil
}

// dialSession opens an idle session: for the sync server a live session
// subscribed to the demo collection, for the bare server a connection.
func dialSession(ctx context.Context, kind, url, replica string) (func(), error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if kind == "bare" {
		c, err := dialBare(ctx, url)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	c, err := dialLive(ctx, url, replica)
	if err != nil {
		return nil, err
	}
	if err := c.send(ctx, proto.Sub{Collection: transport.DemoCollection}); err != nil {
		c.c.CloseNow()
		return nil, err
	}
	// Keep reading in the background so pings are answered.
	go func() {
		for {
			if _, _, err := c.c.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	return func() { c.c.CloseNow() }, nil
}
