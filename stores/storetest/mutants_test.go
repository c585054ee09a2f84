package storetest_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/stores/storetest"
)

// A suite that passes everything proves nothing. These mutants are the
// in-memory store with one contract violation each; the suite must fail
// each in the named check. Each runs in a child process (this test binary
// again), since a failing subtest cannot be contained in-process.
const mutantEnv = "STORETEST_MUTANT"

var mutants = []struct {
	name, check string
	wrap        func(*memory.Store) stores.Store
}{
	{"gap", "ConcurrentWriters", func(m *memory.Store) stores.Store { return &gapStore{Store: m} }},
	{"more-when-full", "Paging", func(m *memory.Store) stores.Store { return moreWhenFull{m} }},
	{"counts-only", "PageBytes", func(m *memory.Store) stores.Store { return countsOnly{m} }},
	{"holds-back-large", "PageBytes", func(m *memory.Store) stores.Store { return holdsBackLarge{m} }},
	{"changed-always", "NoopTakesNoSeq", func(m *memory.Store) stores.Store { return changedAlways{m} }},
	{"loses-nothing", "Lost", func(m *memory.Store) stores.Store { return losesNothing{m} }},
	{"notify-noop", "WatchNoop", func(m *memory.Store) stores.Store { return &notifyNoop{Store: m} }},
	{"silent", "Watch", func(m *memory.Store) stores.Store { return silent{m} }},
	{"ignores-context", "Cancelled", func(m *memory.Store) stores.Store { return ignoresContext{m} }},
	{"never-closes", "Closed", func(m *memory.Store) stores.Store { return neverCloses{m} }},
	{"shared-identity", "Identity", func(m *memory.Store) stores.Store { return sharedIdentity{m} }},
	{"fickle-identity", "Identity", func(m *memory.Store) stores.Store { return fickleIdentity{m} }},
	{"bumps-nothing", "Epochs", func(m *memory.Store) stores.Store { return bumpsNothing{m} }},
	{"lost-as-rebuilt", "Epochs", func(m *memory.Store) stores.Store { return lostAsRebuilt{m} }},
	{"bump-spills", "Epochs", func(m *memory.Store) stores.Store { return bumpSpills{m} }},
	{"bump-silent", "Epochs", func(m *memory.Store) stores.Store { return &bumpSilent{Store: m} }},
	{"bump-by-one", "Epochs", func(*memory.Store) stores.Store { s := newMapStore(); s.bug = "bump-by-one"; return s }},
	{"bump-from-any", "Epochs", func(m *memory.Store) stores.Store { return bumpFromAny{m} }},
	{"purges-past-read", "Purge", func(m *memory.Store) stores.Store { return purgesPast{m, 2, 0} }},
	{"purges-at-wall", "Purge", func(m *memory.Store) stores.Store { return purgesPast{m, 0, 1} }},
	{"purges-any-epoch", "PurgeEpoch", func(m *memory.Store) stores.Store { return purgesAnyEpoch{m} }},
	{"purge-not-atomic", "PurgeConcurrent", func(*memory.Store) stores.Store { return racyPurge{newMapStore()} }},
	{"joined-keys", "Names", func(m *memory.Store) stores.Store { return joinedKeys{m} }},
	{"reads-ids-as-errors", "RefusalNames", func(m *memory.Store) stores.Store { return readsIDsAsErrors{m} }},
}

// reopenMutants are durable-store mutants for RunReopen: the memory store
// "reopened" as the same data under a store that forgets one thing.
var reopenMutants = []struct {
	name, check string
	reopen      func(*memory.Store) stores.Store
}{
	{"reopen-new-identity", "IdentitySurvivesReopen", func(m *memory.Store) stores.Store { return fickleIdentity{m} }},
	{"reopen-forgets-epochs", "EpochsSurviveReopen", func(m *memory.Store) stores.Store { return forgetsEpochs{m} }},
}

// wantMutantFails runs test (this test binary again) on the mutant name
// in a child process, filtered to check, and fails unless the check fails.
func wantMutantFails(t *testing.T, test, check, name string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$/^"+check+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), mutantEnv+"="+name)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("%s passed mutant %q:\n%s", test, name, out)
	}
	if want := "--- FAIL: " + test + "/" + check; !strings.Contains(string(out), want) {
		t.Fatalf("mutant %q: no %q in the output:\n%s", name, want, out)
	}
}

func TestReopenCatchesMutants(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	for _, m := range reopenMutants {
		t.Run(m.name, func(t *testing.T) {
			wantMutantFails(t, "TestReopenMutant", m.check, m.name)
		})
	}
}

// TestReopenMutant runs RunReopen on the mutant named by STORETEST_MUTANT.
func TestReopenMutant(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("run by TestReopenCatchesMutants")
	}
	for _, m := range reopenMutants {
		if m.name == name {
			storetest.RunReopen(t, func(testing.TB) stores.Store { return memory.New() },
				func(_ testing.TB, s stores.Store) stores.Store { return m.reopen(s.(*memory.Store)) })
			return
		}
	}
	t.Fatalf("no mutant %q", name)
}

// TestReopenMemory shows the reopen checks pass on an honest "reopening"
// (the same memory store), so the mutants above fail for their mutation.
func TestReopenMemory(t *testing.T) {
	storetest.RunReopen(t, func(testing.TB) stores.Store { return memory.New() },
		func(_ testing.TB, s stores.Store) stores.Store { return s })
}

// bumpMutants are mapStore variants for RunBumps, each failing the
// named check.
var bumpMutants = []struct{ bug, check string }{
	{"bump-by-one", "BumpAfterRestore"},
	{"bump-by-one", "BumpsAreNextEpoch"},
}

// bumpMapStore is RunBumps's factory and hook for mapStore with bug.
func bumpMapStore(bug string) (storetest.ClockedFactory, storetest.SaveEpochs) {
	return func(_ testing.TB, now func() time.Time) stores.Store {
			s := newMapStore()
			s.now, s.bug = now, bug
			return s
		}, func(_ testing.TB, st stores.Store, coll string) func() {
			s := st.(*mapStore)
			s.mu.Lock()
			defer s.mu.Unlock()
			epoch, n, lost := s.epoch, s.epochs[coll], s.lost[coll]
			return func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.epoch, s.epochs[coll], s.lost[coll] = epoch, n, lost
			}
		}
}

// TestBumpsMapStore shows the bump checks pass on the honest mapStore, so
// the mutants below fail for their mutation.
func TestBumpsMapStore(t *testing.T) {
	f, save := bumpMapStore("")
	storetest.RunBumps(t, f, save)
}

func TestBumpsCatchMutants(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	for _, m := range bumpMutants {
		t.Run(m.bug+"/"+m.check, func(t *testing.T) {
			wantMutantFails(t, "TestBumpsMutant", m.check, m.bug)
		})
	}
}

// TestBumpsMutant runs RunBumps on the mapStore variant named by
// STORETEST_MUTANT.
func TestBumpsMutant(t *testing.T) {
	bug := os.Getenv(mutantEnv)
	if bug == "" {
		t.Skip("run by TestBumpsCatchMutants")
	}
	for _, m := range bumpMutants {
		if m.bug == bug {
			f, save := bumpMapStore(bug)
			storetest.RunBumps(t, f, save)
			return
		}
	}
	t.Fatalf("no mutant %q", bug)
}

func TestSuiteCatchesMutants(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	for _, m := range mutants {
		t.Run(m.name, func(t *testing.T) {
			wantMutantFails(t, "TestMutant", m.check, m.name)
		})
	}
}

// TestMutant runs the suite on the mutant named by STORETEST_MUTANT.
func TestMutant(t *testing.T) {
	name := os.Getenv(mutantEnv)
	if name == "" {
		t.Skip("run by TestSuiteCatchesMutants")
	}
	for _, m := range mutants {
		if m.name == name {
			storetest.Run(t, func(testing.TB) stores.Store { return m.wrap(memory.New()) })
			return
		}
	}
	t.Fatalf("no mutant %q", name)
}

// gapStore hides one entry of a page read while an Apply is in flight, as a
// store would whose sequence numbers become visible out of order: the entry
// is visible to later reads, behind the reader's cursor.
type gapStore struct {
	*memory.Store
	inflight atomic.Int32
	n        atomic.Int32
}

func (s *gapStore) Apply(ctx context.Context, cs []crdt.Change) ([]stores.Result, error) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	return s.Store.Apply(ctx, cs)
}

func (s *gapStore) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	p, err := s.Store.Pull(ctx, coll, after, limit)
	if err == nil && len(p.Entries) >= 2 && s.inflight.Load() > 0 && s.n.Add(1)%5 == 0 {
		p.Entries = p.Entries[1:]
	}
	return p, err
}

type moreWhenFull struct{ *memory.Store }

func (s moreWhenFull) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	p, err := s.Store.Pull(ctx, coll, after, limit)
	p.More = p.More || len(p.Entries) == limit.Records
	return p, err
}

// countsOnly cuts pages by count alone, as stores did before PageLimit.Bytes.
type countsOnly struct{ *memory.Store }

func (s countsOnly) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	limit.Bytes = math.MaxInt
	return s.Store.Pull(ctx, coll, after, limit)
}

// holdsBackLarge ends a page before a record larger than the budget even
// when it is the first, so the record never travels (and the page is empty
// but says More).
type holdsBackLarge struct{ *memory.Store }

func (s holdsBackLarge) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	p, err := s.Store.Pull(ctx, coll, after, limit)
	if err == nil && len(p.Entries) > 0 {
		if enc, _ := crdt.EncodeRecord(p.Entries[0].Record); len(enc) > limit.Bytes {
			return stores.Page{Next: after, More: true}, nil
		}
	}
	return p, err
}

type changedAlways struct{ *memory.Store }

func (s changedAlways) Apply(ctx context.Context, cs []crdt.Change) ([]stores.Result, error) {
	res, err := s.Store.Apply(ctx, cs)
	for i := range res {
		res[i].Changed = true
	}
	return res, err
}

// losesNothing reports every change as held whole, as a store would that
// does not compute Result.Lost.
type losesNothing struct{ *memory.Store }

func (s losesNothing) Apply(ctx context.Context, cs []crdt.Change) ([]stores.Result, error) {
	res, err := s.Store.Apply(ctx, cs)
	for i := range res {
		res[i].Lost = nil
	}
	return res, err
}

type notifyNoop struct {
	*memory.Store
	w stores.Watchers
}

func (s *notifyNoop) Watch(fn func(stores.Notification)) func() {
	stop1, stop2 := s.Store.Watch(fn), s.w.Add(fn)
	return func() { stop1(); stop2() }
}

func (s *notifyNoop) Apply(ctx context.Context, cs []crdt.Change) ([]stores.Result, error) {
	res, err := s.Store.Apply(ctx, cs)
	for i, r := range res {
		if !r.Changed {
			s.w.Notify(stores.Notification{Collection: cs[i].Collection, Seq: r.Seq})
		}
	}
	return res, err
}

type silent struct{ *memory.Store }

func (silent) Watch(func(stores.Notification)) func() { return func() {} }

type ignoresContext struct{ *memory.Store }

func (s ignoresContext) Get(_ context.Context, coll, id string) (stores.Entry, error) {
	return s.Store.Get(context.Background(), coll, id)
}

type neverCloses struct{ *memory.Store }

func (neverCloses) Close() error { return nil }

type sharedIdentity struct{ *memory.Store }

func (sharedIdentity) Identity(context.Context) (string, error) { return "the-store", nil }

type fickleIdentity struct{ *memory.Store }

func (fickleIdentity) Identity(context.Context) (string, error) { return stores.NewIdentity(), nil }

type bumpsNothing struct{ *memory.Store }

func (bumpsNothing) BumpEpochs(context.Context) error { return nil }

type lostAsRebuilt struct{ *memory.Store }

func (s lostAsRebuilt) BumpEpoch(ctx context.Context, coll string, _ stores.EpochCause) error {
	return s.Store.BumpEpoch(ctx, coll, stores.Rebuilt)
}

type bumpSpills struct{ *memory.Store }

func (s bumpSpills) BumpEpoch(ctx context.Context, coll string, cause stores.EpochCause) error {
	if err := s.Store.BumpEpoch(ctx, coll, cause); err != nil {
		return err
	}
	return s.Store.BumpEpoch(ctx, "b", cause)
}

// bumpSilent hides the Resync that follows a bump.
type bumpSilent struct {
	*memory.Store
}

func (s *bumpSilent) Watch(fn func(stores.Notification)) func() {
	return s.Store.Watch(func(n stores.Notification) {
		if !n.Resync {
			fn(n)
		}
	})
}

// bumpFromAny bumps in BumpEpochsFrom whatever the store-wide counter is.
type bumpFromAny struct{ *memory.Store }

func (s bumpFromAny) BumpEpochsFrom(ctx context.Context, _ uint64) (bool, error) {
	return true, s.BumpEpochs(ctx)
}

type forgetsEpochs struct{ *memory.Store }

func (forgetsEpochs) Meta(context.Context, string) (stores.Meta, error) { return stores.Meta{}, nil }

// joinedKeys keys a record of collection "a.b" as record "b#x" of
// collection "a", as a store that joins names with a separator they may
// hold would: two pairs share a key.
type joinedKeys struct{ *memory.Store }

func joinKey(coll, id string) (string, string) {
	if first, rest, ok := strings.Cut(coll, "."); ok {
		return first, rest + "#" + id
	}
	return coll, id
}

func (s joinedKeys) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	joined := make([]crdt.Change, len(changes))
	for i, c := range changes {
		c.Collection, c.Record.ID = joinKey(c.Collection, c.Record.ID)
		joined[i] = c
	}
	return s.Store.Apply(ctx, joined)
}

// readsIDsAsErrors tells a refusal's kind from its text, ids included.
type readsIDsAsErrors struct{ *memory.Store }

func (s readsIDsAsErrors) Apply(ctx context.Context, changes []crdt.Change) ([]stores.Result, error) {
	res, err := s.Store.Apply(ctx, changes)
	if err != nil && strings.Contains(fmt.Sprint(changes), "convergo:corrupt") {
		return nil, fmt.Errorf("%w: %v", stores.ErrCorrupt, err)
	}
	return res, err
}

// purgesPast purges past the horizon it is given, by read entries of the
// log and wall milliseconds, and reports Next within the horizon asked
// for, so only what it dropped gives it away.
type purgesPast struct {
	*memory.Store
	read uint64
	wall int64
}

func (s purgesPast) Purge(ctx context.Context, coll string, h stores.Horizon, scan stores.PurgeScan) (stores.PurgeResult, error) {
	asked := h.Read
	if len(h.Read) == 1 {
		h.Read = []uint64{h.Read[0] + s.read}
	}
	h.Wall += s.wall
	res, err := s.Store.Purge(ctx, coll, h, scan)
	for i := range res.Next {
		res.Next[i] = min(res.Next[i], asked[i])
	}
	return res, err
}

// purgesAnyEpoch purges under a horizon of whatever epoch, as if it
// were of the collection's epoch now.
type purgesAnyEpoch struct{ *memory.Store }

func (s purgesAnyEpoch) Purge(ctx context.Context, coll string, h stores.Horizon, scan stores.PurgeScan) (stores.PurgeResult, error) {
	m, err := s.Store.Meta(ctx, coll)
	if err != nil {
		return stores.PurgeResult{}, err
	}
	h.Epoch = m.Epoch
	return s.Store.Purge(ctx, coll, h, scan)
}

// racyPurge is the kit's map store with a Purge that reads the records
// and writes their purged state in two steps, without checking in the
// second that they are still as read: a change committed in between is
// lost. (The memory store purges under one lock; this shows the suite
// notices a store that does not.)
type racyPurge struct{ *mapStore }

func (s racyPurge) Purge(ctx context.Context, coll string, h stores.Horizon, scan stores.PurgeScan) (stores.PurgeResult, error) {
	after, limit, err := stores.CheckPurge(coll, h, scan, 1)
	if err != nil {
		return stores.PurgeResult{}, err
	}
	m, err := s.Meta(ctx, coll)
	if err != nil {
		return stores.PurgeResult{}, err
	}
	if err := stores.CheckEpoch(coll, h, m); err != nil {
		return stores.PurgeResult{}, err
	}
	if err := s.use(ctx); err != nil {
		return stores.PurgeResult{}, err
	}
	col := s.coll(coll)
	var seqs []uint64
	for seq, id := range col.log {
		if seq > after[0] && seq <= h.Read[0] && col.records[id].Seq == seq {
			seqs = append(seqs, seq)
		}
	}
	slices.Sort(seqs)
	res := stores.PurgeResult{Next: after}
	if len(seqs) > limit {
		seqs, res.More = seqs[:limit], true
	}
	read := map[string]stores.Entry{}
	for _, seq := range seqs {
		read[col.log[seq]] = col.records[col.log[seq]]
		res.Scanned++
		res.Next[0] = seq
	}
	s.mu.Unlock()
	time.Sleep(time.Millisecond) // the window
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, e := range read {
		out, deletes, fields := stores.PurgeRecord(e.Record, h)
		if deletes+fields == 0 {
			continue
		}
		res.Deletes += deletes
		res.Fields += fields
		if stores.Empty(out) {
			delete(col.records, id)
			res.Records++
			continue
		}
		col.records[id] = stores.Entry{Seq: e.Seq, Record: out}
	}
	return res, nil
}
