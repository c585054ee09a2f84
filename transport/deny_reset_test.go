package transport

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport/proto"
)

// denyReread holds the reads of the deny list from its beginning while
// armed: the reading again that follows a reset of the list's history.
type denyReread struct {
	stores.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (d *denyReread) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	if coll == proto.DenyCollection && after == 0 && d.armed.Load() {
		d.entered <- struct{}{}
		<-d.release
	}
	return d.Store.Pull(ctx, coll, after, limit)
}

// When the store's history of the deny list changes (a reset: a failover
// that lost writes, a restore), the server reads the list again from its
// beginning. Until that read is whole the list it held stands: a subject
// it denied is refused meanwhile, not let in by an emptied list (the
// list fails closed).
func TestDenyListResetFailsClosed(t *testing.T) {
	d := &denyReread{Store: memory.New(), entered: make(chan struct{}), release: make(chan struct{})}
	eng, err := engine.Open(engine.Config{Store: d, Replica: "srv-test", PollInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(c *Config) { c.Engine = eng })
	ts.eng = eng
	t.Cleanup(func() { _ = eng.Close() })
	tok := ts.token(t, "alice", []string{"notes"}, []string{"notes"})
	if err := Deny(context.Background(), eng, DenyEntry{ID: DenySubject + "alice"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "alice denied", func() bool { return ts.pullCode(t, tok, "notes") == proto.CodeRevoked })

	d.armed.Store(true)
	if err := d.Store.BumpEpoch(context.Background(), proto.DenyCollection, stores.HistoryLost); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.entered: // the list is being read again
	case <-time.After(5 * time.Second):
		t.Fatal("the deny list was not read again after its reset")
	}
	got := ts.pullCode(t, tok, "notes")
	d.armed.Store(false)
	close(d.release)
	if got != proto.CodeRevoked {
		t.Fatalf("a pull by alice while the deny list is read again: %q, want revoked", got)
	}
	// Read again whole, the list still holds alice (her entry is in the
	// store's history).
	if got := ts.pullCode(t, tok, "notes"); got != proto.CodeRevoked {
		t.Fatalf("after the reading again: %q, want revoked", got)
	}
}
