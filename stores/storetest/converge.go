package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/crdttest"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"pgregory.net/rapid"
)

// The rules Converge names when a store breaks one.
const (
	// RuleMerge: the store holds, per record, the merge of every change
	// it was given (crdttest.Reference).
	RuleMerge = "merge (the store holds, per field, the write with the largest stamp, and no field a later delete hides)"
	// RuleLogOrder: a pull from the start walks the log in strictly
	// ascending sequence numbers, each record once, none above the head.
	RuleLogOrder = "log order (a log walks in strictly ascending sequence numbers, each record once, none above the head)"
	// RuleLogComplete: every record the store holds is in its log at the
	// sequence number Get reports, in the state Get reports.
	RuleLogComplete = "log completeness (every record is in the log, at its sequence number, as Get returns it)"
	// RuleReaders: readers that pulled to the head through the engine hold
	// what the store holds.
	RuleReaders = "readers converge (a reader that pulled to the head holds what the store holds)"
)

// Converge is the engine convergence simulation, run on the stores
// newStore returns: 2 to 4 clients write random changes of a small space
// (crdttest.DefaultSpace: equal stamps, deletes, unsets), push them
// through an engine on the store in any order over a link that loses
// requests and acknowledgements and duplicates changes, pull pages of 1
// to 3 records after opaque cursors over a link that loses answers, and
// the engine writes too. Once every outbox is empty and every client has
// pulled to the head, the store must hold the merge of every change
// (RuleMerge), its log must walk in order (RuleLogOrder) and hold every
// record (RuleLogComplete), and every client must hold what the store
// holds (RuleReaders). A failure names the rule and prints the
// -rapid.seed that replays it; no failure file is written.
//
// It opens one store, gives each check a collection of its own and an
// engine of its own, and closes the store at the end of the test.
func Converge(t testing.TB, newStore Factory) {
	t.Helper()
	converge(t, newStore, 0)
}

// ConvergeN is Converge with at most checks random histories (fewer when
// -rapid.checks asks for fewer), for stores whose every call is a network
// round trip to an emulator. Once a history fails, rapid's shrinking runs
// as many as it needs.
func ConvergeN(t testing.TB, newStore Factory, checks int) {
	t.Helper()
	converge(t, newStore, checks)
}

func converge(t testing.TB, newStore Factory, checks int) {
	t.Helper()
	s := open(t, newStore)
	n := 0
	failed := false
	crdttest.Check(t, func(rt *rapid.T) {
		if checks > 0 && n >= checks && !failed {
			return // rapid's checks past the budget pass at once
		}
		defer func() {
			if rt.Failed() {
				failed = true
			}
		}()
		n++
		sim := newConvergeSim(rt, s, fmt.Sprintf("conv%d", n))
		defer sim.eng.Close()
		steps := rapid.IntRange(1, 60).Draw(rt, "steps")
		for range steps {
			switch rapid.SampledFrom([]string{"write", "serverWrite", "push", "pull", "tick"}).Draw(rt, "action") {
			case "write":
				sim.write(rt)
			case "serverWrite":
				sim.serverWrite(rt)
			case "push":
				sim.push(rt)
			case "pull":
				sim.pull(rt)
			case "tick":
				sim.now += rapid.Int64Range(0, 1000).Draw(rt, "tick")
			}
		}
		sim.drain(rt)
		if err := sim.check(); err != nil {
			rt.Fatalf("%v", err)
		}
	})
}

type convergeClient struct {
	outbox map[int]crdt.Change
	state  crdttest.State
	cursor []byte // opaque, as the engine handed it out
}

type convergeSim struct {
	coll    string
	store   stores.Store
	eng     *engine.Engine
	now     int64
	clients []*convergeClient
	nextID  int
	all     []crdt.Change // every change the engine accepted or will
}

// convergeEpoch is the simulation's wall clock start: every generated
// stamp (walls of a few ms) lies far in the past, so none is refused for
// drift, and the engine's own writes win every conflict.
const convergeEpoch = int64(1_764_000_000_000)

func newConvergeSim(rt *rapid.T, s stores.Store, coll string) *convergeSim {
	sim := &convergeSim{coll: coll, store: s, now: convergeEpoch}
	// The simulation's clock is years behind a store's own (Redis TIME,
	// DynamoDB's Date): no clock check, or the engine refuses its own
	// writes as a server whose clock is off.
	e, err := engine.Open(engine.Config{Store: s, Replica: "server", PollInterval: -1, ClockCheckEvery: -1,
		Now: func() time.Time { return time.UnixMilli(sim.now) }})
	if err != nil {
		rt.Fatalf("engine.Open: %v", err)
	}
	sim.eng = e
	for range rapid.IntRange(2, 4).Draw(rt, "clients") {
		sim.clients = append(sim.clients, &convergeClient{outbox: map[int]crdt.Change{}, state: crdttest.State{}})
	}
	return sim
}

func (sim *convergeSim) client(rt *rapid.T, label string) *convergeClient {
	return sim.clients[rapid.IntRange(0, len(sim.clients)-1).Draw(rt, label)]
}

func (sim *convergeSim) write(rt *rapid.T) {
	c := sim.client(rt, "writer")
	ch := crdttest.Change(sim.coll).Draw(rt, "change")
	c.state.Apply(ch)
	sim.nextID++
	c.outbox[sim.nextID] = ch
	sim.all = append(sim.all, ch)
}

func (sim *convergeSim) serverWrite(rt *rapid.T) {
	id := rapid.SampledFrom(crdttest.DefaultSpace.IDs).Draw(rt, "id")
	var err error
	switch rapid.IntRange(0, 2).Draw(rt, "kind") {
	case 0:
		err = sim.eng.Update(context.Background(), sim.coll, id, engine.Doc{"f": rapid.IntRange(0, 3).Draw(rt, "v")})
	case 1:
		err = sim.eng.Unset(context.Background(), sim.coll, id, "g")
	default:
		err = sim.eng.Delete(context.Background(), sim.coll, id)
	}
	if err != nil {
		rt.Fatalf("engine write: %v", err)
	}
	// What the engine wrote is in the store; the reference reads it back.
	ent, err := sim.eng.GetRecord(context.Background(), sim.coll, id)
	if err != nil {
		rt.Fatalf("GetRecord after an engine write: %v", err)
	}
	sim.all = append(sim.all, crdt.Change{Collection: sim.coll, Record: ent.Record})
}

func (sim *convergeSim) push(rt *rapid.T) {
	c := sim.client(rt, "pusher")
	ids := slices.Sorted(maps.Keys(c.outbox))
	if len(ids) == 0 {
		return
	}
	batch := rapid.SliceOfNDistinct(rapid.SampledFrom(ids), 1, 4, rapid.ID[int]).Draw(rt, "batch")
	if rapid.Bool().Draw(rt, "duplicate") {
		batch = append(batch, batch[0])
	}
	sim.send(rt, c, batch, rapid.SampledFrom([]string{"ok", "request lost", "answer lost"}).Draw(rt, "fate"))
}

func (sim *convergeSim) send(rt *rapid.T, c *convergeClient, batch []int, fate string) {
	if fate == "request lost" {
		return
	}
	changes := make([]crdt.Change, len(batch))
	for i, id := range batch {
		changes[i] = c.outbox[id]
	}
	res, err := sim.eng.Apply(context.Background(), changes)
	if err != nil {
		rt.Fatalf("engine Apply: %v", err)
	}
	if fate == "answer lost" {
		return
	}
	for i, r := range res {
		if r.Status == engine.StatusRefused {
			rt.Fatalf("change %s refused: %v", crdttest.Format(changes[i].Record), r.Err)
		}
		delete(c.outbox, batch[i])
	}
}

func (sim *convergeSim) pull(rt *rapid.T) {
	c := sim.client(rt, "puller")
	lost := rapid.IntRange(0, 3).Draw(rt, "lost") == 0
	if _, err := sim.pullPage(c, rapid.IntRange(1, 3).Draw(rt, "limit"), lost); err != nil {
		rt.Fatalf("%v", err)
	}
}

func (sim *convergeSim) pullPage(c *convergeClient, limit int, lost bool) (more bool, err error) {
	from, err := engine.ParseCursor(c.cursor)
	if err != nil {
		return false, fmt.Errorf("the engine cannot read its own cursor %x: %w", c.cursor, err)
	}
	page, err := sim.eng.Pull(context.Background(), sim.coll, from, engine.PageLimit{Records: limit})
	if errors.Is(err, engine.ErrReset) {
		// The store never goes back here: the engine saw its log break a
		// rule (a sequence number at another record, a record read that
		// is nowhere after, a position past the head). Name the rule when
		// the log shows which.
		held, seqs, herr := sim.held()
		if herr != nil {
			return false, herr
		}
		if lerr := sim.checkLog(held, seqs); lerr != nil {
			return false, lerr
		}
		return false, fmt.Errorf("%s: a reader of a store that never went back was reset: %w", RuleLogOrder, err)
	}
	if err != nil {
		return false, fmt.Errorf("pull: %w", err)
	}
	if lost {
		return true, nil
	}
	for _, e := range page.Entries {
		c.state.Apply(crdt.Change{Collection: sim.coll, Record: e.Record})
	}
	c.cursor = page.Next.Bytes()
	return page.More, nil
}

func (sim *convergeSim) drain(rt *rapid.T) {
	for _, c := range sim.clients {
		if ids := slices.Sorted(maps.Keys(c.outbox)); len(ids) > 0 {
			sim.send(rt, c, ids, "ok")
		}
	}
	for _, c := range sim.clients {
		for i := 0; ; i++ {
			more, err := sim.pullPage(c, 1000, false)
			if err != nil {
				rt.Fatalf("%v", err)
			}
			if !more {
				break
			}
			if i > 10_000 {
				rt.Fatalf("%s: pulls never reach the head", RuleLogOrder)
			}
		}
	}
}

// walkLog pulls the store's log from the start and returns what it
// holds, or the error naming the rule it breaks: its order, and, when
// seqs is not nil, that each record is at the sequence number seqs gives
// (Get's).
func (sim *convergeSim) walkLog(seqs map[string]uint64) (crdttest.State, error) {
	ctx := context.Background()
	head, err := sim.store.Head(ctx, sim.coll)
	if err != nil {
		return nil, fmt.Errorf("Head: %w", err)
	}
	log := crdttest.State{}
	var last uint64
	for after, more := uint64(0), true; more; {
		p, err := sim.store.Pull(ctx, sim.coll, after, lim(2))
		if err != nil {
			return nil, fmt.Errorf("Pull: %w", err)
		}
		for _, e := range p.Entries {
			k := crdttest.Key{Collection: sim.coll, ID: e.Record.ID}
			switch _, twice := log[k]; {
			case e.Seq <= last:
				return nil, fmt.Errorf("%s: %s at seq %d after seq %d", RuleLogOrder, k, e.Seq, last)
			case e.Seq > head:
				return nil, fmt.Errorf("%s: %s at seq %d above the head %d", RuleLogOrder, k, e.Seq, head)
			case twice:
				return nil, fmt.Errorf("%s: %s twice in the log", RuleLogOrder, k)
			case seqs != nil && seqs[e.Record.ID] != e.Seq:
				return nil, fmt.Errorf("%s: %s at seq %d in the log, Get says %d", RuleLogComplete, k, e.Seq, seqs[e.Record.ID])
			}
			last = e.Seq
			log[k] = e.Record
		}
		if len(p.Entries) == 0 && p.More {
			return nil, fmt.Errorf("%s: an empty page with More", RuleLogOrder)
		}
		after, more = p.Next, p.More
	}
	return log, nil
}

// check compares the store with the reference, its log with its records,
// and every client with the store.
func (sim *convergeSim) check() error {
	held, seqs, err := sim.held()
	if err != nil {
		return err
	}
	if err := crdttest.Diff(RuleMerge, "the store", held, crdttest.Reference(sim.all)); err != nil {
		return err
	}
	if err := sim.checkLog(held, seqs); err != nil {
		return err
	}
	for i, c := range sim.clients {
		if err := crdttest.Diff(RuleReaders, fmt.Sprintf("client %d", i), c.state, held); err != nil {
			return err
		}
	}
	return nil
}

// held reads from the store, with Get, every record a change was written
// to, and its sequence number.
func (sim *convergeSim) held() (crdttest.State, map[string]uint64, error) {
	ctx := context.Background()
	held := crdttest.State{}
	seqs := map[string]uint64{}
	for k := range crdttest.Reference(sim.all) {
		e, err := sim.store.Get(ctx, k.Collection, k.ID)
		switch {
		case errors.Is(err, stores.ErrNotFound):
		case err != nil:
			return nil, nil, fmt.Errorf("Get %s: %w", k, err)
		default:
			held[k], seqs[k.ID] = e.Record, e.Seq
		}
	}
	return held, seqs, nil
}

// checkLog walks the log and compares it with held, the records as Get
// returns them at seqs.
func (sim *convergeSim) checkLog(held crdttest.State, seqs map[string]uint64) error {
	log, err := sim.walkLog(seqs)
	if err != nil {
		return err
	}
	return crdttest.Diff(RuleLogComplete, "the log", log, held)
}
