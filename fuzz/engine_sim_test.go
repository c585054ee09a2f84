package fuzz

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"pgregory.net/rapid"
)

// TestConvergenceThroughEngine runs 2 to 6 clients against an engine on the
// in-memory store. Clients push changes from their outboxes in any order
// over a link that loses requests, loses acknowledgements (so the server
// applies a change and the client pushes it again) and duplicates them;
// they pull pages after a cursor over a link that loses responses. The
// server writes too, with its own clock. Pushes the server refuses for
// clock drift stay in the outbox. Once every outbox is empty and every
// client has pulled to the head, each client must hold byte for byte what
// the server holds, which is what the reference model computes.
//
// Replay a failure with the -rapid.seed it prints.
func TestConvergenceThroughEngine(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := newStar(t)
		defer s.close()
		steps := rapid.IntRange(1, 200).Draw(t, "steps")
		actions := map[string]func(*rapid.T){
			"write":       s.write,
			"serverWrite": s.serverWrite,
			"push":        s.push,
			"pull":        s.pull,
			"tick":        s.tick,
			"jump":        s.jump,
		}
		names := slices.Sorted(maps.Keys(actions))
		for range steps {
			actions[rapid.SampledFrom(names).Draw(t, "action")](t)
		}
		s.drain(t)
		s.check(t)
	})
}

const starCollection = "sim"

type starClient struct {
	clock   *crdt.Clock
	skew    int64
	records map[string]crdt.Record
	outbox  map[uint64]crdt.Change
	cursor  []byte // as the server handed it out: opaque to the client
}

// star is a server in the middle of its clients.
type star struct {
	now     int64
	store   *memory.Store
	engine  *engine.Engine
	clients []*starClient
	nextID  uint64
	writes  []write
	refused int
}

func newStar(t *rapid.T) *star {
	s := &star{now: simEpoch, store: memory.New()}
	e, err := engine.Open(engine.Config{
		Store:        s.store,
		Replica:      "server",
		MaxDrift:     simMaxDrift,
		Now:          func() time.Time { return time.UnixMilli(s.now) },
		PollInterval: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.engine = e
	n := rapid.IntRange(2, 6).Draw(t, "clients")
	for i := range n {
		c, err := crdt.NewClock(crdt.ClockConfig{Replica: simReplicas[i]})
		if err != nil {
			t.Fatal(err)
		}
		s.clients = append(s.clients, &starClient{
			clock:   c,
			skew:    drawSkew(t, fmt.Sprintf("skew%d", i)),
			records: map[string]crdt.Record{},
			outbox:  map[uint64]crdt.Change{},
		})
	}
	return s
}

func (s *star) close() {
	s.engine.Close()
	s.store.Close()
}

func (s *star) wall(i int) int64 { return s.now + s.clients[i].skew }

func (s *star) pickClient(t *rapid.T, label string) int {
	return rapid.IntRange(0, len(s.clients)-1).Draw(t, label)
}

func drawWrite(t *rapid.T) write {
	w := write{
		key:  rapid.SampledFrom(simKeys).Draw(t, "key"),
		kind: writeKind(rapid.IntRange(0, 2).Draw(t, "kind")),
	}
	if w.kind != kindDelete {
		w.field = rapid.SampledFrom(simFields).Draw(t, "field")
	}
	if w.kind == kindSet {
		w.value = rapid.SampledFrom(simValues).Draw(t, "value")
	}
	return w
}

func (w write) change() crdt.Change {
	var rec crdt.Record
	switch w.kind {
	case kindSet:
		rec = crdt.SetField(w.key, w.field, w.value, w.stamp)
	case kindUnset:
		rec = crdt.UnsetField(w.key, w.field, w.stamp)
	case kindDelete:
		rec = crdt.DeleteRecord(w.key, w.stamp)
	}
	return crdt.Change{Collection: starCollection, Record: rec}
}

func (s *star) write(t *rapid.T) {
	i := s.pickClient(t, "writer")
	c := s.clients[i]
	w := drawWrite(t)
	s.now += rapid.Int64Range(0, 2).Draw(t, "elapsed")
	st, err := c.clock.Now(s.wall(i))
	if err != nil {
		t.Fatal(err)
	}
	w.stamp = st
	s.writes = append(s.writes, w)
	ch := w.change()
	cur := c.records[w.key]
	cur.Merge(ch.Record)
	c.records[w.key] = cur
	s.nextID++
	c.outbox[s.nextID] = ch
}

// serverWrite is a write of a program embedding the engine.
func (s *star) serverWrite(t *rapid.T) {
	w := drawWrite(t)
	s.now += rapid.Int64Range(0, 2).Draw(t, "elapsed")
	st, err := s.engine.Now(starCollection)
	if err != nil {
		t.Fatal(err)
	}
	w.stamp = st
	s.writes = append(s.writes, w)
	res, err := s.engine.Apply(context.Background(), []crdt.Change{w.change()})
	if err != nil || res[0].Err != nil {
		t.Fatalf("server write %v: %v %v", w, err, res)
	}
}

// push sends up to three outbox changes, in any order, over a lossy link.
func (s *star) push(t *rapid.T) {
	i := s.pickClient(t, "pusher")
	c := s.clients[i]
	ids := slices.Sorted(maps.Keys(c.outbox))
	if len(ids) == 0 {
		return
	}
	batch := rapid.SliceOfNDistinct(rapid.SampledFrom(ids), 1, 3, func(id uint64) uint64 { return id }).Draw(t, "batch")
	if rapid.Bool().Draw(t, "duplicate") {
		batch = append(batch, batch[0])
	}
	fate := rapid.SampledFrom([]string{"ok", "request lost", "response lost"}).Draw(t, "fate")
	s.send(t, i, batch, fate)
}

func (s *star) send(t *rapid.T, i int, batch []uint64, fate string) {
	c := s.clients[i]
	if fate == "request lost" {
		return
	}
	changes := make([]crdt.Change, len(batch))
	for k, id := range batch {
		changes[k] = c.outbox[id]
	}
	// The change crosses the wire as bytes.
	wire, err := crdt.EncodeChanges(changes)
	if err != nil {
		t.Fatal(err)
	}
	changes, err = crdt.DecodeChanges(wire)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.engine.Apply(context.Background(), changes)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if fate == "response lost" {
		return
	}
	for k, r := range res {
		switch {
		case r.Status == engine.StatusRefused && errors.Is(r.Err, crdt.ErrClockDrift):
			s.refused++ // stays in the outbox
		case r.Status == engine.StatusRefused:
			t.Fatalf("push refused: %v", r.Err)
		default:
			delete(c.outbox, batch[k])
		}
	}
}

// pull fetches one small page after the client's cursor; the response may
// be lost, in which case the cursor stays.
func (s *star) pull(t *rapid.T) {
	i := s.pickClient(t, "puller")
	limit := rapid.IntRange(1, 4).Draw(t, "limit")
	lost := rapid.IntRange(0, 3).Draw(t, "lost") == 0
	s.pullPage(t, i, limit, lost)
}

func (s *star) pullPage(t *rapid.T, i, limit int, lost bool) (more bool) {
	c := s.clients[i]
	from, err := engine.ParseCursor(c.cursor)
	if err != nil {
		t.Fatalf("the server cannot read its own cursor %x: %v", c.cursor, err)
	}
	page, err := s.engine.Pull(context.Background(), starCollection, from, engine.PageLimit{Records: limit})
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if lost {
		return true
	}
	for _, e := range page.Entries {
		b, err := crdt.EncodeRecord(e.Record)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := crdt.DecodeRecord(b)
		if err != nil {
			t.Fatalf("pulled record does not decode: %v", err)
		}
		if err := c.clock.Observe(rec.MaxStamp().Time(), s.wall(i)); err != nil {
			t.Fatalf("client %d refuses a stamp the server accepted: %v", i, err)
		}
		cur := c.records[rec.ID]
		cur.Merge(rec)
		c.records[rec.ID] = cur
	}
	if page.Next.Seq() < from.Seq() {
		t.Fatalf("cursor went back from %v to %v", from, page.Next)
	}
	c.cursor = page.Next.Bytes()
	return page.More
}

func (s *star) tick(t *rapid.T) { s.now += rapid.Int64Range(0, 5_000).Draw(t, "tick") }

func (s *star) jump(t *rapid.T) {
	c := s.clients[s.pickClient(t, "jumper")]
	c.skew = max(-simMaxSkew, c.skew-rapid.Int64Range(-1_000, simMaxSkew).Draw(t, "back"))
}

// drain pushes every outbox empty, letting time pass for refused stamps,
// then pulls every client to the head.
func (s *star) drain(t *rapid.T) {
	for round := 0; ; round++ {
		pending := 0
		for i, c := range s.clients {
			ids := slices.Sorted(maps.Keys(c.outbox))
			pending += len(ids)
			if len(ids) > 0 {
				s.send(t, i, ids, "ok")
			}
		}
		if pending == 0 {
			break
		}
		if round > 1_000 {
			t.Fatalf("outboxes not empty after %d rounds", round)
		}
		s.now += 1_000
	}
	for i := range s.clients {
		for s.pullPage(t, i, 1_000, false) {
		}
	}
}

func (s *star) check(t *rapid.T) {
	want := referenceState(s.writes)
	server := map[string]crdt.Record{}
	page, err := s.engine.Pull(context.Background(), starCollection, engine.Cursor{}, engine.PageLimit{Records: 1_000})
	if err != nil || page.More {
		t.Fatalf("pull all: %v (more %v)", err, page.More)
	}
	for _, e := range page.Entries {
		server[e.Record.ID] = e.Record
	}
	checkReplica(t, "server", server, want)
	for i, c := range s.clients {
		checkReplica(t, fmt.Sprintf("client %d (%s)", i, c.clock.Replica()), c.records, want)
	}
	checkWrites(t, server, s.writes)
}
