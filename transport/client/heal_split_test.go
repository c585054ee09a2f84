package client_test

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// restoreOf decodes a restore request body, nil when body is not one.
func restoreOf(path string, body []byte) *proto.RestoreRequest {
	if !strings.HasSuffix(path, proto.PathRestore) {
		return nil
	}
	var req proto.RestoreRequest
	if err := proto.Decode(body, &req); err != nil {
		return nil
	}
	return &req
}

// errorsTold collects what a replica gives ReplicaConfig.OnError.
type errorsTold struct {
	mu   sync.Mutex
	errs []error
}

func (e *errorsTold) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.errs = append(e.errs, err)
}

func (e *errorsTold) all() []error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.errs)
}

// TestHealIsolatesARecordRefusedWhole: the server refuses whole, as
// too_large or as malformed, every restore that holds one record ("bad"):
// the heal halves its restore down to that record, which stays local and
// is reported (logged, and told through OnError), and the rest of the
// heal goes on: the server gets the other records back, and the heal is
// not owed again. Before, the heal failed whole, every time.
func TestHealIsolatesARecordRefusedWhole(t *testing.T) {
	for _, code := range []string{proto.CodeTooLarge, proto.CodeMalformed} {
		t.Run(code, func(t *testing.T) {
			s := newLossServer(t, false)
			var logs storetest.LogBuffer
			var told errorsTold
			reader := s.replica("reader", false, client.ReplicaConfig{OnError: told.add}, func(c *client.Config) {
				c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
			for i := range 10 {
				set(t, bob, fmt.Sprint("b", i), "n", i)
			}
			set(t, bob, "bad", "n", -1)
			syncAll(t, bob, reader)
			held := reader.Records("notes")
			if len(held) != 11 {
				t.Fatalf("the reader holds %d records, want 11", len(held))
			}
			bob.Close() // bob's device is gone: the reader alone holds his records
			var mu sync.Mutex
			var restores, refused []int
			refuse := func(path string, body []byte) *proto.Error {
				req := restoreOf(path, body)
				if req == nil {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				restores = append(restores, len(req.Records))
				if slices.ContainsFunc(req.Records, func(r proto.SealedRecord) bool { return r.Record.ID == "bad" }) {
					refused = append(refused, len(req.Records))
					return proto.Errorf(code, "a record this server cannot take")
				}
				return nil
			}
			s.refuse.Store(&refuse)
			s.restart(nil)
			if err := reader.Sync(t.Context()); err != nil {
				t.Fatalf("the sync that heals: %v", err)
			}
			want := maps.Clone(held)
			delete(want, "bad")
			if d := sameRecords(s.served(t), want); d != "" {
				t.Errorf("the server after the heal:\n%s", d)
			}
			if d := sameRecords(reader.Records("notes"), held); d != "" {
				t.Errorf("the reader dropped what the server refused:\n%s", d)
			}
			mu.Lock()
			if len(refused) == 0 || refused[len(refused)-1] != 1 {
				t.Errorf("restores refused whole held %v records, want halves down to 1", refused)
			}
			n := len(restores)
			mu.Unlock()
			if !strings.Contains(logs.String(), "record=bad") {
				t.Errorf("the reader's log does not say that bad was refused:\n%s", logs.String())
			}
			errs := told.all()
			if len(errs) != 1 || !errors.Is(errs[0], map[string]error{proto.CodeTooLarge: client.ErrTooLarge, proto.CodeMalformed: client.ErrMalformed}[code]) ||
				!strings.Contains(errs[0].Error(), "notes") {
				t.Errorf("OnError: got %v, want one error naming notes, wrapping %s", errs, code)
			}
			// Healed: the next sync restores nothing again.
			if err := reader.Sync(t.Context()); err != nil {
				t.Fatalf("a later sync: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(restores) != n {
				t.Errorf("a later sync restored again (%d restores, then %d): the heal is still owed", n, len(restores))
			}
		})
	}
}

// TestHealKeepsRecordsWhenEveryRestoreIsMalformed: a server that refuses
// every restore as malformed, one of no records too, reads no restore of
// this client: the fault is not a record's, so nothing is taken as
// refused, the heal fails with the code and stays owed, and the next heal
// once the server reads restores gives everything back.
func TestHealKeepsRecordsWhenEveryRestoreIsMalformed(t *testing.T) {
	s := newLossServer(t, false)
	var told errorsTold
	reader := s.replica("reader", false, client.ReplicaConfig{OnError: told.add}, nil)
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	for i := range 6 {
		set(t, bob, fmt.Sprint("b", i), "n", i)
	}
	syncAll(t, bob, reader)
	held := reader.Records("notes")
	bob.Close()
	var probed atomic.Bool
	refuse := func(path string, body []byte) *proto.Error {
		if req := restoreOf(path, body); req != nil {
			if len(req.Records) == 0 {
				probed.Store(true)
			}
			return proto.Errorf(proto.CodeMalformed, "no restore of this client is readable")
		}
		return nil
	}
	s.refuse.Store(&refuse)
	s.restart(nil)
	if err := reader.Sync(t.Context()); !errors.Is(err, client.ErrMalformed) {
		t.Fatalf("the sync that heals: got %v, want malformed", err)
	}
	if !probed.Load() {
		t.Error("no restore of no records was sent before a record was taken as the fault")
	}
	if errs := told.all(); len(errs) != 0 {
		t.Errorf("OnError: %v, want nothing refused", errs)
	}
	s.refuse.Store(nil)
	if err := reader.Heal(t.Context()); err != nil {
		t.Fatalf("the heal once the server reads restores: %v", err)
	}
	if d := sameRecords(s.served(t), held); d != "" {
		t.Errorf("the server after the heal owed:\n%s", d)
	}
}

// TestHealRestoresWithinMaxBody: restores are cut, as pushes are, by the
// max-body the server announces (proto.PushRoom): records that together
// exceed it go back in several restores, each body within it, and the
// heal completes. Before, restores were cut by max-push alone, and the
// server refused the one large body too_large.
func TestHealRestoresWithinMaxBody(t *testing.T) {
	const maxBody = 4 << 10
	s := newLossServer(t, false)
	s.limits.MaxBodyBytes = maxBody
	s.restart(nil) // the limit from the start
	reader := s.replica("reader", false, client.ReplicaConfig{}, nil)
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	for i := range 12 {
		set(t, bob, fmt.Sprint("b", i), "text", strings.Repeat(fmt.Sprint(i%10), 600))
	}
	syncAll(t, bob, reader)
	held := reader.Records("notes")
	if len(held) != 12 {
		t.Fatalf("the reader holds %d records, want 12", len(held))
	}
	bob.Close()
	var mu sync.Mutex
	var sizes []int
	note := func(path string, body []byte) *proto.Error {
		if strings.HasSuffix(path, proto.PathRestore) {
			mu.Lock()
			sizes = append(sizes, len(body))
			mu.Unlock()
		}
		return nil
	}
	s.refuse.Store(&note)
	s.restart(nil)
	if err := reader.Sync(t.Context()); err != nil {
		t.Fatalf("the sync that heals: %v", err)
	}
	s.refuse.Store(nil)
	mu.Lock()
	if len(sizes) < 2 || slices.Max(sizes) > maxBody {
		t.Errorf("restore bodies of %v bytes, want several, each at most %d", sizes, maxBody)
	}
	mu.Unlock()
	if d := sameRecords(s.served(t), held); d != "" {
		t.Errorf("the server after the heal:\n%s", d)
	}
}

// TestSyncHealsAgainAfterAFailedHeal: a heal that failed (the server
// refused every restore whole, unavailable) stays owed, and the next Sync
// makes it again: what the reader alone holds reaches the server once the
// server takes restores. Before, only Live and Heal made it again, and a
// Sync pulled from the beginning without giving anything back.
func TestSyncHealsAgainAfterAFailedHeal(t *testing.T) {
	s := newLossServer(t, false)
	reader := s.replica("reader", false, client.ReplicaConfig{}, nil)
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	for i := range 4 {
		set(t, bob, fmt.Sprint("b", i), "n", i)
	}
	syncAll(t, bob, reader)
	held := reader.Records("notes")
	bob.Close()
	refuse := func(path string, body []byte) *proto.Error {
		if restoreOf(path, body) != nil {
			return proto.Errorf(proto.CodeUnavailable, "no restores today")
		}
		return nil
	}
	s.refuse.Store(&refuse)
	s.restart(nil)
	if err := reader.Sync(t.Context()); !errors.Is(err, client.ErrUnavailable) {
		t.Fatalf("the sync that heals: got %v, want unavailable", err)
	}
	s.refuse.Store(nil)
	if err := reader.Sync(t.Context()); err != nil {
		t.Fatalf("the next sync: %v", err)
	}
	if d := sameRecords(s.served(t), held); d != "" {
		t.Errorf("the server after the next sync:\n%s", d)
	}
}

// TestHealForbiddenDoesNotStopPulls: a heal the server refuses forbidden
// (here the push of the replica's own writes: its token no longer grants
// writing) cannot be made by this client yet. It is skipped and told to
// ReplicaConfig.OnError once, as the browser client does, and the
// collection is pulled on: a Sync that failed on it, every time, would
// never pull the collection again (TestHealForbiddenStaysOwed: it stays
// owed).
func TestHealForbiddenDoesNotStopPulls(t *testing.T) {
	s := newLossServer(t, false)
	var told errorsTold
	alice := s.replica("alice", true, client.ReplicaConfig{OnError: told.add}, nil)
	bob := s.replica("bob", true, client.ReplicaConfig{}, nil)
	set(t, alice, "a", "n", 1)
	syncAll(t, alice, bob)
	s.restart(nil)
	set(t, bob, "b", "n", 2) // written after the loss
	syncAll(t, bob)
	refuse := func(path string, body []byte) *proto.Error {
		if strings.HasSuffix(path, proto.PathPush) {
			return proto.Errorf(proto.CodeForbidden, "no writes for you")
		}
		return nil
	}
	s.refuse.Store(&refuse)
	for range 2 {
		_ = alice.Sync(t.Context())
	}
	if _, ok := alice.Records("notes")["b"]; !ok {
		t.Errorf("alice's syncs never pulled the record written after the loss")
	}
	if err := alice.Sync(t.Context()); err != nil {
		t.Errorf("a sync after the heal was refused: %v", err)
	}
	n := 0
	for _, err := range told.all() {
		if errors.Is(err, client.ErrForbidden) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("OnError told %d forbidden errors (%v), want 1 (the heal refused, told once)", n, told.all())
	}
}

// TestHealForbiddenStaysOwed: a heal the server refuses forbidden (the
// token no longer grants reading the collection: its restores and the
// pushes of its own writes refused) is skipped, told to
// ReplicaConfig.OnError once, and stays owed: once the server grants the
// collection again, the next Sync gives back what the replica holds, as
// the browser client does. Before, it was given up for good, and what
// only this replica held was never on the server again.
func TestHealForbiddenStaysOwed(t *testing.T) {
	s := newLossServer(t, false)
	var told errorsTold
	alice := s.replica("alice", true, client.ReplicaConfig{OnError: told.add}, nil)
	set(t, alice, "a", "n", 1)
	syncAll(t, alice)
	held := alice.Records("notes")
	s.restart(nil)
	refuse := func(path string, body []byte) *proto.Error {
		if strings.HasSuffix(path, proto.PathRestore) || strings.HasSuffix(path, proto.PathPush) {
			return proto.Errorf(proto.CodeForbidden, "not yours any more")
		}
		return nil
	}
	s.refuse.Store(&refuse)
	for range 3 {
		if err := alice.Sync(t.Context()); err != nil {
			t.Fatalf("a sync while the heal is refused: %v", err)
		}
	}
	forbidden := func() int {
		n := 0
		for _, err := range told.all() {
			if errors.Is(err, client.ErrForbidden) {
				n++
			}
		}
		return n
	}
	if n := forbidden(); n != 1 {
		t.Errorf("OnError told %d forbidden errors (%v), want 1", n, told.all())
	}
	if got := s.served(t); len(got) != 0 {
		t.Fatalf("the server holds %d records while the heal is refused, want 0", len(got))
	}
	s.refuse.Store(nil)
	if err := alice.Sync(t.Context()); err != nil {
		t.Fatalf("the sync once the collection is granted again: %v", err)
	}
	if d := sameRecords(s.served(t), held); d != "" {
		t.Errorf("the server after the heal is granted again:\n%s", d)
	}
	if n := forbidden(); n != 1 {
		t.Errorf("OnError told %d forbidden errors after the heal (%v), want 1", n, told.all())
	}
}

// TestHealForbiddenAskedWithNoRecords: a heal the server refused
// forbidden is made again by every Sync, and asks first with a restore of
// no records: while the token still may not read the collection, that is
// all a Sync sends of it, not a batch of what the replica holds refused
// again whole. Once the collection is granted again, the heal gives back
// what the replica holds.
func TestHealForbiddenAskedWithNoRecords(t *testing.T) {
	s := newLossServer(t, false)
	alice := s.replica("alice", true, client.ReplicaConfig{OnError: func(error) {}}, nil)
	for i := range 20 {
		set(t, alice, fmt.Sprint("r", i), "n", i)
	}
	syncAll(t, alice)
	held := alice.Records("notes")
	s.restart(nil)
	var mu sync.Mutex
	var restores []int // the records of each restore refused
	refuse := func(path string, body []byte) *proto.Error {
		if !strings.HasSuffix(path, proto.PathRestore) {
			return nil
		}
		var req proto.RestoreRequest
		if err := proto.Decode(body, &req); err != nil {
			t.Errorf("a restore that does not decode: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		restores = append(restores, len(req.Records))
		return proto.Errorf(proto.CodeForbidden, "not yours any more")
	}
	s.refuse.Store(&refuse)
	for range 4 {
		if err := alice.Sync(t.Context()); err != nil {
			t.Fatalf("a sync while the heal is refused: %v", err)
		}
	}
	mu.Lock()
	if len(restores) < 4 || restores[0] == 0 || slices.ContainsFunc(restores[1:], func(n int) bool { return n != 0 }) {
		t.Errorf("the restores refused carried %v records; want the first one's records, then none at each sync", restores)
	}
	mu.Unlock()
	s.refuse.Store(nil)
	if err := alice.Sync(t.Context()); err != nil {
		t.Fatalf("the sync once the collection is granted again: %v", err)
	}
	if d := sameRecords(s.served(t), held); d != "" {
		t.Errorf("the server after the heal is granted again:\n%s", d)
	}
}
