package client

import (
	"maps"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
)

// visible returns the visible fields of rec, decoded as strings; nil when
// the record does not exist.
func visible(t *testing.T, rec crdt.Record) map[string]string {
	t.Helper()
	var out map[string]string
	for name, v := range rec.Values() {
		var s string
		if err := crdt.DecodeValue(v, &s); err != nil {
			t.Fatal(err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = s
	}
	return out
}

// serverVisible returns the visible fields of todos/id on the server.
func serverVisible(t *testing.T, f *fakeServer, id string) map[string]string {
	t.Helper()
	cur := engine.Cursor{}
	for {
		p, err := f.eng.Pull(t.Context(), "todos", cur, engine.PageLimit{Records: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range p.Entries {
			if e.Record.ID == id {
				return visible(t, e.Record)
			}
		}
		if !p.More {
			return nil
		}
		cur = p.Next
	}
}

// tick lets the wall clock pass a few milliseconds, so that stamps taken
// before and after it are apart.
func tick() { time.Sleep(20 * time.Millisecond) }

// checkSame checks that replica a shows todos/x as the server does, as
// want says, with nothing pending.
func checkSame(t *testing.T, f *fakeServer, a *watched, want map[string]string) {
	t.Helper()
	srv := serverVisible(t, f, "x")
	rec, _ := a.Get("todos", "x")
	got := visible(t, rec)
	if !maps.Equal(srv, want) {
		t.Fatalf("the server shows x %v, want %v", srv, want)
	}
	if !maps.Equal(got, want) {
		t.Fatalf("the replica shows x %v, the server %v", got, srv)
	}
	if p := a.Pending(); len(p) != 0 {
		t.Fatalf("outbox %+v, want empty", p)
	}
}

// TestReconcileDeliveredReplacesHeld: the records the pull from the
// beginning delivers after lease_expired are the server's whole state,
// and replace what the replica held: the tombstones that hid its older
// fields (an unset field, the delete stamp of a record created again) may
// be gone, and merged with the record without them those fields would
// stay for ever.
func TestReconcileDeliveredReplacesHeld(t *testing.T) {
	for name, tc := range map[string]struct {
		change func(b *Replica) error
		want   map[string]string
	}{
		"unset": {
			change: func(b *Replica) error { return b.Unset("todos", "x", "b") },
			want:   map[string]string{"a": "1"},
		},
		"deleted and created again": {
			change: func(b *Replica) error {
				if err := b.Delete("todos", "x"); err != nil {
					return err
				}
				return b.Set("todos", "x", "c", "3")
			},
			want: map[string]string{"c": "3"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeServer(t)
			ctx := t.Context()
			b := newReplica(t, f, "b", nil, "todos")
			for _, w := range [][2]string{{"a", "1"}, {"b", "2"}} {
				if err := b.Set("todos", "x", w[0], w[1]); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			a := newWatchedWith(t, f, "a", nil, ReplicaConfig{FreshFor: time.Hour})
			if err := a.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			tick()
			if err := tc.change(b); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			tick()
			if res := f.collect("todos", time.Now().UnixMilli()); res.Deletes+res.Fields == 0 {
				t.Fatalf("collected %+v, want the tombstone", res)
			}
			if err := a.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			checkSame(t, f, a, tc.want)
		})
	}
}

// TestReconcileRestampHidesAndBeatsNothing: a change refused collected is
// re-stamped after the reconciliation only as far as the record as the
// replica knows it (delivered by the server, with its other pending
// changes) neither hides nor beats it: without the collection, the newer
// delete or value would have won over the offline edit, and re-stamped it
// must not win either. A change left with nothing is settled, reported
// superseded; a delete of a record with newer fields becomes unsets of the
// fields it hid. Either way the replica hears of the expired lease: by a
// pull, or by the refusal of its first push.
func TestReconcileRestampHidesAndBeatsNothing(t *testing.T) {
	type scene struct {
		// offline writes of a before the write horizon; after are writes
		// after it, of a ("a") or of another replica ("b").
		before  func(a *Replica) error
		after   func(a, b *Replica) error
		want    map[string]string
		settled bool // a's offline write is settled, reported superseded
	}
	set := func(r *Replica, name, v string) error { return r.Set("todos", "x", name, v) }
	del := func(r *Replica) error { return r.Delete("todos", "x") }
	for name, sc := range map[string]scene{
		"deleted by another after": {
			before:  func(a *Replica) error { return set(a, "b", "mine") },
			after:   func(_, b *Replica) error { return del(b) },
			want:    nil,
			settled: true,
		},
		"deleted by itself after": {
			before:  func(a *Replica) error { return set(a, "b", "mine") },
			after:   func(a, _ *Replica) error { return del(a) },
			want:    nil,
			settled: true,
		},
		"newer value of another": {
			before:  func(a *Replica) error { return set(a, "a", "mine") },
			after:   func(_, b *Replica) error { return set(b, "a", "theirs") },
			want:    map[string]string{"a": "theirs"},
			settled: true,
		},
		"delete of newer fields": {
			before: func(a *Replica) error { return del(a) },
			after:  func(_, b *Replica) error { return set(b, "c", "theirs") },
			want:   map[string]string{"c": "theirs"},
		},
	} {
		for _, pullFirst := range []bool{true, false} {
			how := map[bool]string{true: "pull first", false: "push first"}[pullFirst]
			t.Run(name+"/"+how, func(t *testing.T) {
				f := newFakeServer(t)
				ctx := t.Context()
				b := newReplica(t, f, "b", nil, "todos")
				if err := set(b, "a", "0"); err != nil {
					t.Fatal(err)
				}
				if err := b.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				a := newWatchedWith(t, f, "a", nil, ReplicaConfig{FreshFor: time.Hour})
				if err := a.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				tick()
				if err := sc.before(a.Replica); err != nil {
					t.Fatal(err)
				}
				tick()
				horizon := time.Now().UnixMilli()
				tick()
				if err := sc.after(a.Replica, b); err != nil {
					t.Fatal(err)
				}
				if err := b.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				f.collect("todos", horizon)
				if pullFirst {
					if err := a.Pull(ctx); err != nil {
						t.Fatal(err)
					}
				} else if err := a.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				if err := a.Sync(ctx); err != nil {
					t.Fatal(err)
				}
				checkSame(t, f, a, sc.want)
				if rej := a.Rejected(); len(rej) != 0 {
					t.Fatalf("rejected %+v, want none", rej)
				}
				var settled int
				for _, n := range a.resultsAll() {
					if n.change.Record.ID == "x" && n.result.Status == StatusSuperseded && n.change.Record.MaxStamp().Wall < horizon {
						settled++
					}
				}
				if want := map[bool]int{true: 1, false: 0}[sc.settled]; settled != want {
					t.Fatalf("OnResult reported %d offline writes superseded, want %d: %+v", settled, want, a.resultsAll())
				}
			})
		}
	}
}
