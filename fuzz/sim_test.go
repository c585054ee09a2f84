package fuzz

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"pgregory.net/rapid"
)

// TestConvergence is the peer-to-peer convergence simulation: 3 to 7
// replicas write concurrently on a few keys, exchange changes over a network
// that reorders, duplicates, delays and drops, retransmit from their outboxes
// until acknowledged, and must end byte-identical and equal to the reference
// model. Run longer with
//
//	go test ./fuzz -run '^TestConvergence$' -rapid.checks=2000 -rapid.steps=300
//
// and replay a failure with the -rapid.seed it prints.
func TestConvergence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := newMesh(t)
		steps := rapid.IntRange(1, 300).Draw(t, "steps")
		actions := map[string]func(*rapid.T){
			"write":    s.write,
			"recreate": s.recreate,
			"gossip":   s.gossip,
			"tick":     s.tick,
			"jump":     s.jump,
			"send":     s.send,
			"deliver":  s.deliver,
			"drop":     s.drop,
		}
		names := slices.Sorted(func(yield func(string) bool) {
			for n := range actions {
				if !yield(n) {
					return
				}
			}
		})
		for range steps {
			actions[rapid.SampledFrom(names).Draw(t, "action")](t)
		}
		s.drain(t)
		s.check(t)
	})
}

// The key space is tiny on purpose: writes collide on records and fields,
// and short wall-clock steps make stamps tie on wall time.
var (
	simReplicas = []string{"a", "b", "C", "c-1", "zz", "a_", "0"} // varied byte order
	simKeys     = []string{"k1", "k2", "k3"}
	simFields   = []string{"x", "y", "zz"}
	simValues   = func() [][]byte {
		var out [][]byte
		for _, v := range []any{0, 1, "milk", true, nil, []any{1, "two"}, map[string]any{"n": 1.5}} {
			b, err := crdt.EncodeValue(v)
			if err != nil {
				panic(err)
			}
			out = append(out, b)
		}
		return out
	}()
)

const (
	simEpoch    = int64(1_764_000_000_000) // ms; late 2025
	simMaxSkew  = int64(60_000)            // a replica's wall clock is off by at most this
	simMaxDrift = 30 * time.Second         // smaller than 2*simMaxSkew, so Observe refuses some stamps
)

type writeKind int

const (
	kindSet writeKind = iota
	kindUnset
	kindDelete
)

func (k writeKind) String() string { return [...]string{"set", "unset", "delete"}[k] }

// write is one write a replica made and acknowledged to its user (by
// applying it locally).
type write struct {
	key   string
	field string // empty for a delete
	kind  writeKind
	stamp crdt.Stamp
	value []byte
}

func (w write) String() string {
	return fmt.Sprintf("%s %s/%s at %s", w.kind, w.key, w.field, w.stamp)
}

type simReplica struct {
	clock     *crdt.Clock
	skew      int64 // added to the simulation's true time
	records   map[string]crdt.Record
	outbox    map[uint64]outMsg // unacknowledged messages
	lastStamp crdt.Stamp
}

type outMsg struct {
	to      int
	payload []byte // crdt.EncodeChanges of the changes
}

type packet struct {
	ack      bool
	id       uint64
	from, to int
	payload  []byte
}

// mesh is a full mesh of replicas joined by an unreliable network.
type mesh struct {
	now      int64 // true time, ms
	replicas []*simReplica
	net      []packet // in flight, delivered in any order
	nextID   uint64
	writes   []write
	refused  int // messages refused for clock drift (retransmitted later)
}

func newMesh(t *rapid.T) *mesh {
	n := rapid.IntRange(3, 7).Draw(t, "replicas")
	m := &mesh{now: simEpoch}
	for i := range n {
		c, err := crdt.NewClock(crdt.ClockConfig{Replica: simReplicas[i], MaxDrift: simMaxDrift})
		if err != nil {
			t.Fatal(err)
		}
		m.replicas = append(m.replicas, &simReplica{
			clock:   c,
			skew:    drawSkew(t, fmt.Sprintf("skew%d", i)),
			records: map[string]crdt.Record{},
			outbox:  map[uint64]outMsg{},
		})
	}
	return m
}

// drawSkew mostly picks a skew of a few milliseconds, so stamps of different
// replicas tie on wall time, and sometimes one of up to a minute.
func drawSkew(t *rapid.T, label string) int64 {
	return rapid.OneOf(rapid.Int64Range(-2, 2), rapid.Int64Range(-simMaxSkew, simMaxSkew)).Draw(t, label)
}

func (m *mesh) wall(i int) int64 { return m.now + m.replicas[i].skew }

func (m *mesh) pickReplica(t *rapid.T, label string) int {
	return rapid.IntRange(0, len(m.replicas)-1).Draw(t, label)
}

// stamp issues a stamp on replica i after a few milliseconds pass.
func (m *mesh) stamp(t *rapid.T, i int) crdt.Stamp {
	m.now += rapid.Int64Range(0, 2).Draw(t, "elapsed")
	r := m.replicas[i]
	s, err := r.clock.Now(m.wall(i))
	if err != nil {
		t.Fatalf("replica %d: now: %v", i, err)
	}
	if s.Compare(r.lastStamp) <= 0 {
		t.Fatalf("replica %d issued %s after %s: stamps must strictly increase", i, s, r.lastStamp)
	}
	r.lastStamp = s
	return s
}

// commit applies a local write and queues it for every other replica.
func (m *mesh) commit(t *rapid.T, i int, w write) {
	var rec crdt.Record
	switch w.kind {
	case kindSet:
		rec = crdt.SetField(w.key, w.field, w.value, w.stamp)
	case kindUnset:
		rec = crdt.UnsetField(w.key, w.field, w.stamp)
	case kindDelete:
		rec = crdt.DeleteRecord(w.key, w.stamp)
	}
	m.writes = append(m.writes, w)
	r := m.replicas[i]
	cur := r.records[w.key]
	cur.Merge(rec)
	r.records[w.key] = cur
	m.broadcast(t, i, rec)
}

func (m *mesh) broadcast(t *rapid.T, from int, rec crdt.Record) {
	for to := range m.replicas {
		if to != from {
			m.enqueue(t, from, to, rec)
		}
	}
}

func (m *mesh) enqueue(t *rapid.T, from, to int, rec crdt.Record) {
	payload, err := crdt.EncodeChanges([]crdt.Change{{Collection: "sim", Record: rec}})
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	m.nextID++
	m.replicas[from].outbox[m.nextID] = outMsg{to: to, payload: payload}
}

func (m *mesh) write(t *rapid.T) {
	i := m.pickReplica(t, "writer")
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
	w.stamp = m.stamp(t, i)
	m.commit(t, i, w)
}

// recreate deletes a record and writes a field into it again.
func (m *mesh) recreate(t *rapid.T) {
	i := m.pickReplica(t, "writer")
	key := rapid.SampledFrom(simKeys).Draw(t, "key")
	m.commit(t, i, write{key: key, kind: kindDelete, stamp: m.stamp(t, i)})
	m.commit(t, i, write{
		key:   key,
		field: rapid.SampledFrom(simFields).Draw(t, "field"),
		kind:  kindSet,
		value: rapid.SampledFrom(simValues).Draw(t, "value"),
		stamp: m.stamp(t, i),
	})
}

// gossip sends a replica's whole state of a record to another replica, as a
// server answering a pull would.
func (m *mesh) gossip(t *rapid.T) {
	from := m.pickReplica(t, "from")
	to := m.pickReplica(t, "to")
	rec, ok := m.replicas[from].records[rapid.SampledFrom(simKeys).Draw(t, "key")]
	if !ok || from == to {
		return
	}
	m.enqueue(t, from, to, rec)
}

func (m *mesh) tick(t *rapid.T) {
	m.now += rapid.Int64Range(0, 5_000).Draw(t, "tick")
}

// jump sets a replica's wall clock back (or forward) by up to a minute, as
// NTP or a user changing the time would.
func (m *mesh) jump(t *rapid.T) {
	i := m.pickReplica(t, "jumper")
	r := m.replicas[i]
	r.skew = max(-simMaxSkew, r.skew-rapid.Int64Range(-1_000, simMaxSkew).Draw(t, "back"))
}

// send transmits one unacknowledged message from an outbox, possibly twice.
func (m *mesh) send(t *rapid.T) {
	i := m.pickReplica(t, "sender")
	ids := slices.Sorted(func(yield func(uint64) bool) {
		for id := range m.replicas[i].outbox {
			if !yield(id) {
				return
			}
		}
	})
	if len(ids) == 0 {
		return
	}
	id := rapid.SampledFrom(ids).Draw(t, "message")
	msg := m.replicas[i].outbox[id]
	copies := rapid.IntRange(1, 2).Draw(t, "copies")
	for range copies {
		m.net = append(m.net, packet{id: id, from: i, to: msg.to, payload: msg.payload})
	}
}

func (m *mesh) pickPacket(t *rapid.T) (packet, bool) {
	if len(m.net) == 0 {
		return packet{}, false
	}
	k := rapid.IntRange(0, len(m.net)-1).Draw(t, "packet")
	p := m.net[k]
	m.net = slices.Delete(m.net, k, k+1)
	return p, true
}

// deliver delivers one packet in flight, not necessarily the oldest.
func (m *mesh) deliver(t *rapid.T) {
	if p, ok := m.pickPacket(t); ok {
		m.receive(t, p)
	}
}

// drop loses one packet in flight; the outbox retransmits it later.
func (m *mesh) drop(t *rapid.T) { m.pickPacket(t) }

func (m *mesh) receive(t *rapid.T, p packet) {
	if p.ack {
		delete(m.replicas[p.to].outbox, p.id)
		return
	}
	r := m.replicas[p.to]
	changes, err := crdt.DecodeChanges(p.payload)
	if err != nil {
		t.Fatalf("replica %d: decode a message of replica %d: %v", p.to, p.from, err)
	}
	for _, c := range changes {
		if err := r.clock.Observe(c.Record.MaxStamp().Time(), m.wall(p.to)); err != nil {
			if errors.Is(err, crdt.ErrClockDrift) {
				m.refused++
				return // not acknowledged: the sender retransmits later
			}
			t.Fatalf("replica %d: observe: %v", p.to, err)
		}
	}
	for _, c := range changes {
		cur := r.records[c.Record.ID]
		cur.Merge(c.Record)
		r.records[c.Record.ID] = cur
	}
	m.net = append(m.net, packet{ack: true, id: p.id, from: p.to, to: p.from})
}

// drain lets time pass and retransmits everything until every outbox is
// empty and nothing is in flight, with no more losses.
func (m *mesh) drain(t *rapid.T) {
	for round := 0; ; round++ {
		pending := len(m.net)
		for i, r := range m.replicas {
			for _, id := range slices.Sorted(maps.Keys(r.outbox)) {
				m.net = append(m.net, packet{id: id, from: i, to: r.outbox[id].to, payload: r.outbox[id].payload})
				pending++
			}
		}
		if pending == 0 {
			return
		}
		if round > 1_000 {
			t.Fatalf("network not drained after %d rounds: %d packets pending", round, pending)
		}
		for len(m.net) > 0 {
			p := m.net[0]
			m.net = m.net[1:]
			m.receive(t, p)
		}
		m.now += 1_000
	}
}

func mapKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// check asserts convergence and that no acknowledged write was lost.
func (m *mesh) check(t *rapid.T) {
	want := referenceState(m.writes)
	for i, r := range m.replicas {
		checkReplica(t, fmt.Sprintf("replica %d (%s)", i, m.replicas[i].clock.Replica()), r.records, want)
	}
	checkWrites(t, m.replicas[0].records, m.writes)
	t.Logf("%d replicas, %d writes, %d refusals for drift", len(m.replicas), len(m.writes), m.refused)
}

// referenceState is the naive model of what every replica must hold: per
// record the largest delete stamp, and per field the write with the largest
// stamp, kept only when stamped after the delete.
func referenceState(writes []write) map[string]crdt.Record {
	out := map[string]crdt.Record{}
	for _, w := range writes {
		r := out[w.key]
		r.ID = w.key
		if r.Fields == nil {
			r.Fields = map[string]crdt.Field{}
		}
		switch w.kind {
		case kindDelete:
			if w.stamp.Compare(r.Deleted) > 0 {
				r.Deleted = w.stamp
			}
		default:
			if cur, ok := r.Fields[w.field]; !ok || w.stamp.Compare(cur.Stamp) > 0 {
				r.Fields[w.field] = crdt.Field{Stamp: w.stamp, Value: w.value}
			}
		}
		out[w.key] = r
	}
	for key, r := range out {
		for name, f := range r.Fields {
			if f.Stamp.Compare(r.Deleted) <= 0 {
				delete(r.Fields, name)
			}
		}
		if len(r.Fields) == 0 {
			r.Fields = nil
		}
		out[key] = r
	}
	return out
}

func checkReplica(t *rapid.T, name string, got, want map[string]crdt.Record) {
	if len(got) != len(want) {
		t.Fatalf("%s holds %d records, want %d", name, len(got), len(want))
	}
	for key, w := range want {
		g, ok := got[key]
		if !ok {
			t.Fatalf("%s lacks record %q", name, key)
		}
		gb, err := crdt.EncodeRecord(g)
		if err != nil {
			t.Fatal(err)
		}
		wb, err := crdt.EncodeRecord(w)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gb, wb) {
			t.Fatalf("%s record %q:\n got %x\nwant %x", name, key, gb, wb)
		}
	}
}

// checkWrites asserts that every write is visible in final, or beaten by a
// strictly larger stamp: a field's final stamp (or the delete stamp hiding
// it) is at least the write's, and equal only when the write's value (or
// unset) is what shows; a delete's stamp is at most the final delete stamp.
func checkWrites(t *rapid.T, final map[string]crdt.Record, writes []write) {
	for _, w := range writes {
		r := final[w.key]
		if w.kind == kindDelete {
			if c := r.Deleted.Compare(w.stamp); c < 0 {
				t.Fatalf("%v lost: final delete stamp %s is older", w, r.Deleted)
			}
			continue
		}
		f, ok := r.Fields[w.field]
		final, visible := r.Deleted, false
		if ok && f.Stamp.Compare(final) > 0 {
			final, visible = f.Stamp, true
		}
		switch c := final.Compare(w.stamp); {
		case c < 0:
			t.Fatalf("%v lost: final stamp %s is older", w, final)
		case c == 0 && !visible:
			t.Fatalf("%v hidden by a delete with the same stamp", w)
		case c == 0 && !bytes.Equal(f.Value, w.value):
			t.Fatalf("%v: field holds %x at the write's own stamp, want %x", w, f.Value, w.value)
		}
	}
}
