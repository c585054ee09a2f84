package client

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// refuseWholeWith makes f refuse every push (HTTP or live) holding record
// "bad" whole with code, or every push when all is set.
func refuseWholeWith(f *fakeServer, code string, all bool) {
	fn := func(changes []crdt.Change) string {
		if all || slices.ContainsFunc(changes, func(ch crdt.Change) bool { return ch.Record.ID == "bad" }) {
			return code
		}
		return ""
	}
	f.refuseWhole.Store(&fn)
}

// threeChangesRefused returns a fake server and a replica of collection
// "c" on it (live when live is set) that has set records a, b and c after
// refuse made the server refuse pushes.
func threeChangesRefused(t *testing.T, live bool, refuse func(*fakeServer)) (*fakeServer, *Replica) {
	t.Helper()
	f := newFakeServer(t)
	r := newReplica(t, f, "a", nil, "c")
	if live {
		runLive(t, r)
		liveOpen(t, r)
	}
	refuse(f)
	for _, id := range []string{"a", "b", "c"} {
		if err := r.Set("c", id, "f", 1); err != nil {
			t.Fatal(err)
		}
	}
	return f, r
}

// A push refused whole as malformed is the fault of a change the server
// cannot read: the batch is split down to it, it alone is rejected (rolled
// back, among the rejected changes, reported), and the rest is applied.
func TestFlushIsolatesAChangeRefusedWholeAsMalformed(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprint("live=", live), func(t *testing.T) {
			f := newFakeServer(t)
			ctx := t.Context()
			c := f.client(t, "a", nil)
			var rejected []Rejection
			r, err := NewReplica(c, ReplicaConfig{Collections: []string{"c"}, OnRejected: func(j Rejection) { rejected = append(rejected, j) }})
			if err != nil {
				t.Fatal(err)
			}
			if live {
				runLive(t, r)
				liveOpen(t, r)
			}
			refuseWholeWith(f, proto.CodeMalformed, false)
			ids := []string{"a", "b", "c", "bad", "d", "e", "f"}
			for i, id := range ids {
				if err := r.Set("c", id, "f", i); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Flush(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
			if p := r.Pending(); len(p) != 0 {
				t.Fatalf("outbox after the flush: %+v", p)
			}
			if len(rejected) != 1 || rejected[0].RecordID != "bad" || rejected[0].Code != proto.CodeMalformed || rejected[0].RequestID == "" {
				t.Fatalf("rejected: got %+v, want bad alone, malformed, with a request id", rejected)
			}
			if rej := r.Rejected(); len(rej) != 1 || !errors.Is(rej[0].Err(), ErrMalformed) {
				t.Fatalf("Rejected(): %+v", rej)
			}
			if _, ok := r.Get("c", "bad"); ok {
				t.Fatal("the refused change is still seen locally")
			}
			for _, id := range ids {
				rec, err := f.eng.Get(ctx, "c", id)
				if (id == "bad") != (err != nil || rec["f"] == nil) {
					t.Fatalf("server record %s: %+v, %v", id, rec, err)
				}
			}
			// Later writes flow.
			if err := r.Set("c", "later", "f", 1); err != nil {
				t.Fatal(err)
			}
			if err := r.Flush(ctx); err != nil || len(r.Pending()) != 0 {
				t.Fatalf("a later flush: %v, outbox %+v", err, r.Pending())
			}
		})
	}
}

// A push refused whole as forbidden (an origin not allowed) or
// unauthenticated is not the changes' fault: Flush fails with the code,
// every change stays in the outbox and nothing is rejected, until the
// server takes them.
func TestFlushKeepsChangesRefusedWholeForAccess(t *testing.T) {
	for _, code := range []string{proto.CodeForbidden, proto.CodeUnauthenticated} {
		for _, live := range []bool{false, true} {
			t.Run(fmt.Sprint(code, " live=", live), func(t *testing.T) {
				ctx := t.Context()
				f, r := threeChangesRefused(t, live, func(f *fakeServer) { refuseWholeWith(f, code, true) })
				for range 2 {
					var e *Error
					if err := r.Flush(ctx); !errors.As(err, &e) || e.Code != code {
						t.Fatalf("flush: got %v, want %s", err, code)
					}
				}
				if p := r.Pending(); len(p) != 3 {
					t.Fatalf("outbox: %d changes, want 3", len(p))
				}
				if rej := r.Rejected(); len(rej) != 0 {
					t.Fatalf("rejected: %+v", rej)
				}
				if _, ok := r.Get("c", "a"); !ok {
					t.Fatal("a kept change is no longer seen locally")
				}
				f.refuseWhole.Store(nil)
				if err := r.Flush(ctx); err != nil || len(r.Pending()) != 0 {
					t.Fatalf("flush once the server takes them: %v, outbox %+v", err, r.Pending())
				}
			})
		}
	}
}

// A server that refuses every push as malformed, one of no changes too:
// the fault is not a change's, so none is rejected; Flush fails with the
// code and the changes stay until the server reads them.
func TestFlushKeepsChangesWhenEveryPushIsMalformed(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprint("live=", live), func(t *testing.T) {
			ctx := t.Context()
			f, r := threeChangesRefused(t, live, func(f *fakeServer) { refuseWholeWith(f, proto.CodeMalformed, true) })
			var e *Error
			if err := r.Flush(ctx); !errors.As(err, &e) || e.Code != proto.CodeMalformed {
				t.Fatalf("flush: got %v, want malformed", err)
			}
			if p, rej := r.Pending(), r.Rejected(); len(p) != 3 || len(rej) != 0 {
				t.Fatalf("outbox %d changes, rejected %+v; want 3 kept, none rejected", len(p), rej)
			}
			f.refuseWhole.Store(nil)
			if err := r.Flush(ctx); err != nil || len(r.Pending()) != 0 {
				t.Fatalf("flush once the server reads them: %v, outbox %+v", err, r.Pending())
			}
		})
	}
}

// TestFlushRetriesALoneChangeOnceTheServerReads: a server that refuses
// every push as malformed, and is mended just as the client pushes no
// changes to tell whether it reads any: the lone change the split came
// down to goes once more, and nothing is rejected.
func TestFlushRetriesALoneChangeOnceTheServerReads(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprint("live=", live), func(t *testing.T) {
			ctx := t.Context()
			var mended atomic.Bool
			_, r := threeChangesRefused(t, live, func(f *fakeServer) {
				fn := func(changes []crdt.Change) string {
					if len(changes) == 0 {
						mended.Store(true) // the push of none: the server reads from here on
					}
					if mended.Load() {
						return ""
					}
					return proto.CodeMalformed
				}
				f.refuseWhole.Store(&fn)
			})
			if err := r.Flush(ctx); err != nil {
				t.Fatalf("flush: %v", err)
			}
			if p, rej := r.Pending(), r.Rejected(); len(p) != 0 || len(rej) != 0 {
				t.Fatalf("outbox %d changes, rejected %+v; want every change taken, none rejected", len(p), rej)
			}
		})
	}
}
