package client

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"pgregory.net/rapid"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// Fault modes of a push in the outbox model.
const (
	modeOK   = iota
	modeDown // 503 before applying anything
	modeLost // applied, then the connection drops before the answer
)

// faultyServer wraps f's handler: pushes fail as its mode says.
func faultyServer(t *testing.T, f *fakeServer) *atomic.Int32 {
	var mode atomic.Int32
	inner := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != proto.PathPush {
			inner.ServeHTTP(w, r)
			return
		}
		switch mode.Load() {
		case modeDown:
			writeError(w, http.StatusServiceUnavailable, proto.CodeUnavailable, "down")
		case modeLost:
			inner.ServeHTTP(httptest.NewRecorder(), r)
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
		default:
			inner.ServeHTTP(w, r)
		}
	})
	return &mode
}

// refuser wraps f's push handler so that the server refuses the changes
// refuse picks, with too_large (as a server refuses a change that would
// grow its record past the limit by merging: a refusal no client can
// foresee), and applies the rest through the engine. during, when set, runs
// after the changes were applied and before the answer is sent: a write
// racing the push.
type refuser struct {
	mu     sync.Mutex
	refuse func(crdt.Change) bool
	during func()
}

func (rf *refuser) set(refuse func(crdt.Change) bool, during func()) {
	rf.mu.Lock()
	defer rf.mu.Unlock()
	rf.refuse, rf.during = refuse, during
}

func refusingServer(t *testing.T, f *fakeServer) *refuser {
	rf := &refuser{}
	inner := f.srv.Config.Handler
	f.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != proto.PathPush {
			inner.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		var req proto.PushRequest
		if err == nil {
			// Refusals go by change, not replica: any prefix reads a push
			// that names its replica by its device part.
			req, err = proto.DecodePush(body, proto.ReplicaPrefix(""))
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, proto.CodeMalformed, err.Error())
			return
		}
		rf.mu.Lock()
		refuse, during := rf.refuse, rf.during
		rf.mu.Unlock()
		results := make([]proto.PushResult, len(req.Changes))
		var keep []crdt.Change
		var index []int
		for i, ch := range req.Changes {
			if refuse != nil && refuse(ch) {
				results[i] = proto.PushResult{Status: proto.StatusRefused, Code: proto.CodeTooLarge, Message: "the record would grow past the limit"}
				continue
			}
			keep = append(keep, ch)
			index = append(index, i)
		}
		res, err := f.eng.Apply(r.Context(), keep)
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, proto.CodeUnavailable, err.Error())
			return
		}
		for j, x := range res {
			if x.Err != nil {
				results[index[j]] = refusal(x.Err)
			} else {
				results[index[j]] = proto.PushResult{Status: x.Status, Lost: x.Lost}
			}
		}
		if during != nil {
			during()
		}
		b, err := proto.Encode(proto.PushResponse{Results: results})
		if err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", proto.ContentType)
		w.Write(b)
	})
	return rf
}

// baseOf is the replica's version of the server's record (white box).
func baseOf(r *Replica, coll, id string) crdt.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.base[coll][id].Clone()
}

// holds reports whether a holds every write of b (or something newer).
func holds(a, b crdt.Record) bool {
	_, changed := crdt.Merge(a, b)
	return !changed
}

// TestOutboxModel drives a Replica through random local writes (some of
// which the server will refuse), writes of another replica, pushes that
// fail before or after the server applied them, pulls, live deliveries,
// and retries and discards of rejected changes, against a model:
//
//   - the outbox is exactly the writes not yet acknowledged nor refused, in
//     order, and the rejected store exactly the refused ones not yet retried
//     or discarded, in order of refusal;
//   - the local view of every record is the replica's version of the
//     server's record (base) merged with the pending changes for it, and
//     base holds nothing the server does not: a refused change is rolled
//     back, and leaves no trace in the view;
//   - the view holds every write not refused, or something newer; the
//     server holds every acknowledged one.
//
// After a final clean sync, local view, server and the merge of every
// write not refused are equal.
func TestOutboxModel(t *testing.T) {
	f := newFakeServer(t)
	rf := refusingServer(t, f)
	mode := faultyServer(t, f)
	var refuse sync.Map // crdt.Stamp → true: the changes the server refuses
	rf.set(func(ch crdt.Change) bool {
		_, ok := refuse.Load(ch.Record.MaxStamp())
		return ok
	}, nil)
	var run atomic.Int64
	rapid.Check(t, func(rt *rapid.T) {
		coll := fmt.Sprint("m", run.Add(1))
		c, err := New(Config{URL: f.srv.URL, Replica: "r" + coll, Backoff: Backoff{MaxAttempts: 1}})
		if err != nil {
			rt.Fatal(err)
		}
		other, err := New(Config{URL: f.srv.URL, Replica: "o" + coll, Backoff: Backoff{MaxAttempts: 1}})
		if err != nil {
			rt.Fatal(err)
		}
		var callbacks []Rejection
		var r *Replica
		r, err = NewReplica(c, ReplicaConfig{Collections: []string{coll}, OnRejected: func(j Rejection) {
			// Called after the rollback: the refused write is gone.
			view, _ := r.Get(j.Collection, j.RecordID)
			for _, s := range stampsOf(j.Change.Record) {
				if slices.Contains(stampsOf(view), s) {
					rt.Fatalf("OnRejected for %s before its rollback: view %+v", j.RecordID, view)
				}
			}
			callbacks = append(callbacks, j)
		}})
		if err != nil {
			rt.Fatal(err)
		}

		var (
			written     []crdt.Change // every local write, retries included
			pending     []crdt.Change // the model outbox
			rejected    []crdt.Change // the model rejected store
			refusedEver []crdt.Change // every change refused
			remote      []crdt.Change // the other replica's writes
		)
		ctx := t.Context()
		ids := []string{"a", "b", "c"}
		fields := []string{"x", "y"}
		isRefused := func(ch crdt.Change) bool {
			_, ok := refuse.Load(ch.Record.MaxStamp())
			return ok
		}
		wasRefused := func(ch crdt.Change) bool {
			return slices.ContainsFunc(refusedEver, func(x crdt.Change) bool { return x.Record.Equal(ch.Record) })
		}

		checkInvariants := func() {
			got := r.Pending()
			if len(got) != len(pending) {
				rt.Fatalf("outbox holds %d changes, model %d", len(got), len(pending))
			}
			for i := range got {
				if !got[i].Record.Equal(pending[i].Record) {
					rt.Fatalf("outbox[%d] = %+v, model %+v", i, got[i].Record, pending[i].Record)
				}
			}
			rej := r.Rejected()
			if len(rej) != len(rejected) {
				rt.Fatalf("rejected store holds %d changes, model %d", len(rej), len(rejected))
			}
			for i := range rej {
				if !rej[i].Change.Record.Equal(rejected[i].Record) || rej[i].Code != proto.CodeTooLarge ||
					rej[i].Collection != coll || rej[i].RecordID != rejected[i].Record.ID {
					rt.Fatalf("rejected[%d] = %+v, model %+v", i, rej[i], rejected[i])
				}
				if i > 0 && rej[i].ID <= rej[i-1].ID {
					rt.Fatalf("rejected ids out of order: %d after %d", rej[i].ID, rej[i-1].ID)
				}
			}
			for _, id := range ids {
				base := baseOf(r, coll, id)
				want := base.Clone()
				for _, ch := range pending {
					if ch.Record.ID == id {
						want.Merge(ch.Record)
					}
				}
				view, ok := r.Get(coll, id)
				if !view.Equal(want) {
					rt.Fatalf("%s: view %+v, want base ⊔ pending = %+v", id, view, want)
				}
				if ok != (want.ID != "") {
					rt.Fatalf("%s: Get reports state %v for %+v", id, ok, want)
				}
				srv := crdt.Record{ID: id}
				if e, err := f.eng.GetRecord(ctx, coll, id); err == nil {
					srv = e.Record
				}
				if !holds(srv, base) {
					rt.Fatalf("%s: base %+v holds what the server %+v does not", id, base, srv)
				}
				for _, ch := range refusedEver {
					if ch.Record.ID != id {
						continue
					}
					for _, s := range stampsOf(ch.Record) {
						if slices.Contains(stampsOf(view), s) {
							rt.Fatalf("%s: refused write %v still in the view %+v", id, s, view)
						}
					}
				}
			}
			for _, ch := range written {
				if wasRefused(ch) {
					continue
				}
				view, _ := r.Get(coll, ch.Record.ID)
				if !holds(view, ch.Record) {
					rt.Fatalf("local write %+v not held by the view %+v", ch.Record, view)
				}
				if slices.ContainsFunc(pending, func(p crdt.Change) bool { return p.Record.Equal(ch.Record) }) {
					continue
				}
				e, err := f.eng.GetRecord(ctx, coll, ch.Record.ID)
				if err != nil || !holds(e.Record, ch.Record) {
					rt.Fatalf("acknowledged change %+v not held by the server (%v)", ch.Record, err)
				}
			}
		}

		// pushed applies the answers of a clean push of the model outbox.
		pushed := func() {
			for _, ch := range pending {
				if isRefused(ch) {
					rejected = append(rejected, ch)
					refusedEver = append(refusedEver, ch)
				}
			}
			pending = nil
		}

		rt.Repeat(map[string]func(*rapid.T){
			"write": func(rt *rapid.T) {
				id := rapid.SampledFrom(ids).Draw(rt, "id")
				field := rapid.SampledFrom(fields).Draw(rt, "field")
				var err error
				switch rapid.IntRange(0, 2).Draw(rt, "op") {
				case 0:
					err = r.Set(coll, id, field, rapid.IntRange(0, 9).Draw(rt, "v"))
				case 1:
					err = r.Unset(coll, id, field)
				case 2:
					err = r.Delete(coll, id)
				}
				if err != nil {
					rt.Fatal(err)
				}
				p := r.Pending()
				ch := p[len(p)-1]
				if rapid.IntRange(0, 3).Draw(rt, "refuse") == 0 {
					refuse.Store(ch.Record.MaxStamp(), true)
				}
				written = append(written, ch)
				pending = append(pending, ch)
			},
			"remote write": func(rt *rapid.T) {
				id := rapid.SampledFrom(ids).Draw(rt, "id")
				s, err := other.Now()
				if err != nil {
					rt.Fatal(err)
				}
				rec := crdt.SetField(id, rapid.SampledFrom(fields).Draw(rt, "field"), mustValueRT(rt, rapid.IntRange(10, 19).Draw(rt, "v")), s)
				if rapid.Bool().Draw(rt, "delete") {
					rec = crdt.DeleteRecord(id, s)
				}
				ch := crdt.Change{Collection: coll, Record: rec}
				res, err := other.Push(ctx, []crdt.Change{ch})
				if err != nil || res[0].Status == StatusRefused {
					rt.Fatalf("remote write: %+v, %v", res, err)
				}
				remote = append(remote, ch)
			},
			"flush": func(rt *rapid.T) {
				m := rapid.IntRange(modeOK, modeLost).Draw(rt, "mode")
				mode.Store(int32(m))
				err := r.Flush(ctx)
				mode.Store(modeOK)
				switch {
				case m == modeOK && err != nil:
					rt.Fatalf("flush: %v", err)
				case m != modeOK && len(pending) > 0 && err == nil:
					rt.Fatal("a failed push reported success")
				case m == modeOK:
					pushed()
				}
			},
			"pull": func(rt *rapid.T) {
				if err := r.Pull(ctx); err != nil {
					rt.Fatalf("pull: %v", err)
				}
			},
			"live": func(rt *rapid.T) {
				// A live page delivering the server's record, possibly
				// out of date by the time it is applied.
				id := rapid.SampledFrom(ids).Draw(rt, "id")
				e, err := f.eng.GetRecord(ctx, coll, id)
				if err != nil {
					return
				}
				r.Apply(coll, Page{Records: []crdt.Record{e.Record}, Next: r.Cursor(coll)})
			},
			"retry": func(rt *rapid.T) {
				if len(rejected) == 0 {
					return
				}
				i := rapid.IntRange(0, len(rejected)-1).Draw(rt, "i")
				j := r.Rejected()[i]
				if err := r.Retry(j.ID); err != nil {
					rt.Fatalf("retry %d: %v", j.ID, err)
				}
				p := r.Pending()
				ch := p[len(p)-1]
				old := rejected[i].Record
				if ch.Collection != coll || ch.Record.ID != old.ID || !slices.Equal(ch.Record.FieldNames(), old.FieldNames()) ||
					ch.Record.Deleted.IsZero() != old.Deleted.IsZero() {
					rt.Fatalf("retry of %+v queued %+v", old, ch.Record)
				}
				for name, fl := range ch.Record.Fields {
					if string(fl.Value) != string(old.Fields[name].Value) || fl.Stamp.Compare(old.MaxStamp()) <= 0 {
						rt.Fatalf("retry of %+v queued %+v: not the same write, freshly stamped", old, ch.Record)
					}
				}
				if ch.Record.MaxStamp().Compare(old.MaxStamp()) <= 0 {
					rt.Fatalf("retry of %+v not restamped: %+v", old, ch.Record)
				}
				if rapid.IntRange(0, 3).Draw(rt, "refuse") == 0 {
					refuse.Store(ch.Record.MaxStamp(), true)
				}
				rejected = slices.Delete(rejected, i, i+1)
				written = append(written, ch)
				pending = append(pending, ch)
			},
			"discard": func(rt *rapid.T) {
				if len(rejected) == 0 {
					return
				}
				i := rapid.IntRange(0, len(rejected)-1).Draw(rt, "i")
				id := r.Rejected()[i].ID
				if err := r.Discard(id); err != nil {
					rt.Fatalf("discard %d: %v", id, err)
				}
				if err := r.Discard(id); !errors.Is(err, ErrNoRejection) {
					rt.Fatalf("second discard of %d: got %v, want ErrNoRejection", id, err)
				}
				rejected = slices.Delete(rejected, i, i+1)
			},
			"": func(rt *rapid.T) { checkInvariants() },
		})

		if err := r.Sync(ctx); err != nil {
			rt.Fatal(err)
		}
		pushed()
		checkInvariants()
		if len(callbacks) != len(refusedEver) {
			rt.Fatalf("OnRejected called %d times for %d refusals", len(callbacks), len(refusedEver))
		}
		model := map[string]crdt.Record{}
		for _, ch := range append(slices.Clone(written), remote...) {
			if wasRefused(ch) {
				continue
			}
			rec := model[ch.Record.ID]
			rec.Merge(ch.Record)
			model[ch.Record.ID] = rec
		}
		local := r.Records(coll)
		for _, id := range slices.Sorted(maps.Keys(model)) {
			e, err := f.eng.GetRecord(ctx, coll, id)
			if err != nil {
				rt.Fatalf("%s: %v", id, err)
			}
			if !e.Record.Equal(model[id].Normalize()) || !local[id].Normalize().Equal(e.Record) {
				rt.Fatalf("%s: server %+v, local %+v, model %+v", id, e.Record, local[id], model[id])
			}
		}
		if len(local) != len(model) {
			rt.Fatalf("local has %d records, model %d", len(local), len(model))
		}
	})
}

func mustValueRT(rt *rapid.T, v any) []byte {
	b, err := crdt.EncodeValue(v)
	if err != nil {
		rt.Fatal(err)
	}
	return b
}
