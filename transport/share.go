package transport

import (
	"context"
	"sync"
)

// pageGroup lets live subscribers of one collection share pulls. When a
// change lands, every subscriber at the same cursor wakes at once and wants
// the same page; one of them reads and encodes it, the others wait for that
// read and send the same bytes, so a change costs one store read and one
// encoding instead of one per subscriber.
//
// Sharing must not break the no-gap rule: a subscriber woken by head H may
// only take a page read after H committed. So a subscriber takes a mark
// (mark) after it wakes, and joins only a read that started after the mark;
// an older read in flight may predate H, and the subscriber starts its own.
// Reads are shared only while in flight: nothing is cached, so nothing goes
// stale.
type pageGroup struct {
	mu      sync.Mutex
	gen     uint64
	flights map[pageKey]*pageFlight
}

type pageKey struct {
	collection string
	cursor     uint64
}

type pageFlight struct {
	id      uint64
	joiners int // for tests
	done    chan struct{}
	page    wirePage
	data    []byte // the encoded changes message
	err     error
}

func newPageGroup() *pageGroup { return &pageGroup{flights: map[pageKey]*pageFlight{}} }

// mark returns the generation a subscriber takes after it wakes: it may
// join only reads started later.
func (g *pageGroup) mark() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.gen
}

// do returns the page of key from a read started after mark, joining one in
// flight or running read itself. read runs to completion even if ctx ends,
// since others may be waiting for it; ctx bounds only the wait.
func (g *pageGroup) do(ctx context.Context, key pageKey, mark uint64, read func() (wirePage, []byte, error)) (wirePage, []byte, error) {
	g.mu.Lock()
	if f, ok := g.flights[key]; ok && f.id > mark {
		f.joiners++
		g.mu.Unlock()
		select {
		case <-f.done:
			return f.page, f.data, f.err
		case <-ctx.Done():
			return wirePage{}, nil, ctx.Err()
		}
	}
	g.gen++
	f := &pageFlight{id: g.gen, done: make(chan struct{})}
	g.flights[key] = f // an older flight keeps serving the joiners it has
	g.mu.Unlock()

	f.page, f.data, f.err = read()
	g.mu.Lock()
	if g.flights[key] == f {
		delete(g.flights, key)
	}
	g.mu.Unlock()
	close(f.done)
	return f.page, f.data, f.err
}
