package transport

import (
	"context"
	"sync"

	"github.com/convergo/convergo/engine"
)

// pageGroup lets live subscribers of one collection share pulls. When a
// change lands, every subscriber at the same cursor wakes at once and wants
// the same page; one of them reads and encodes it, the others wait for that
// read and send the same bytes, so a change costs one store read and one
// encoding instead of one per subscriber.
//
// Sharing must not break the no-gap rule: a subscriber woken by head H must
// get a page read after H committed, and a read already in flight may have
// started before. Sequence numbers become visible in order (package stores),
// so a page whose last entry is at H or later, or that is not the last page,
// was read late enough; a subscriber that joined a read that fails this test
// reads again on its own. Reads are shared only while in flight: nothing is
// cached, so nothing goes stale.
type pageGroup struct {
	mu      sync.Mutex
	flights map[pageKey]*pageFlight
}

type pageKey struct {
	collection string
	cursor     engine.Cursor
}

type pageFlight struct {
	joiners int // for tests
	done    chan struct{}
	page    wirePage
	data    []byte // the encoded changes message
	err     error
}

func newPageGroup() *pageGroup { return &pageGroup{flights: map[pageKey]*pageFlight{}} }

// covers reports whether page, read from a cursor, includes head (or is
// followed by more pages, which the subscriber reads next).
func covers(page wirePage, head uint64) bool { return page.More || page.Next.Seq() >= head }

// do returns the page of key that covers head: from a read in flight when
// it covers head, else from a read of its own. read runs to completion even
// if ctx ends, since others may be waiting for it; ctx bounds only the wait.
func (g *pageGroup) do(ctx context.Context, key pageKey, head uint64, read func() (wirePage, []byte, error)) (wirePage, []byte, error) {
	g.mu.Lock()
	if f, ok := g.flights[key]; ok {
		f.joiners++
		g.mu.Unlock()
		select {
		case <-f.done:
		case <-ctx.Done():
			return wirePage{}, nil, ctx.Err()
		}
		if f.err == nil && covers(f.page, head) {
			return f.page, f.data, nil
		}
		g.mu.Lock() // read too early, or failed: read again
	}
	f := &pageFlight{done: make(chan struct{})}
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
