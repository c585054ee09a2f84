package crdttest

import (
	"fmt"
	"slices"

	"github.com/convergo/convergo/crdt"
	"pgregory.net/rapid"
)

// Space is the world generators draw from. Small on purpose: changes
// collide and stamps tie.
type Space struct {
	// IDs, Fields and Replicas are the record ids, field names and replica
	// ids drawn from; each must be valid (crdt.ValidateID, ...).
	IDs, Fields, Replicas []string
	// Values are the field values drawn from, as Go values crdt.EncodeValue
	// takes.
	Values []any
	// MaxWall bounds stamps' wall times (1 to MaxWall ms) and MaxLogical
	// their logical counters (0 to MaxLogical).
	MaxWall    int64
	MaxLogical uint32
}

// DefaultSpace is the Space of the package-level generators: three
// records, three fields, three replicas, walls of 1 to 4 ms.
var DefaultSpace = Space{
	IDs:        []string{"a", "b", "c"},
	Fields:     []string{"f", "g", "h"},
	Replicas:   []string{"r1", "r2", "r3"},
	Values:     []any{0, 1, "x", "yy", true, nil, 1.5, []any{1, "two"}, map[string]any{"n": 1}},
	MaxWall:    4,
	MaxLogical: 1,
}

// Stamp generates stamps of s; equal stamps are frequent.
func (s Space) Stamp() *rapid.Generator[crdt.Stamp] {
	return rapid.Custom(func(t *rapid.T) crdt.Stamp {
		return crdt.Stamp{
			Wall:    rapid.Int64Range(1, s.MaxWall).Draw(t, "wall"),
			Logical: rapid.Uint32Range(0, s.MaxLogical).Draw(t, "logical"),
			Replica: rapid.SampledFrom(s.Replicas).Draw(t, "replica"),
		}
	})
}

// Value generates encoded field values of s.
func (s Space) Value() *rapid.Generator[[]byte] {
	enc := make([][]byte, len(s.Values))
	for i, v := range s.Values {
		b, err := crdt.EncodeValue(v)
		if err != nil {
			panic(fmt.Sprintf("crdttest: value %#v: %v", v, err))
		}
		enc[i] = b
	}
	return rapid.SampledFrom(enc)
}

// Record generates partial records of s, as changes carry them: any of
// its fields set (a value) or unset (no value), and one time in four a
// delete stamp, alone or with fields. It may be empty (a no-op).
func (s Space) Record() *rapid.Generator[crdt.Record] {
	stamp, value := s.Stamp(), s.Value()
	return rapid.Custom(func(t *rapid.T) crdt.Record {
		r := crdt.Record{ID: rapid.SampledFrom(s.IDs).Draw(t, "id")}
		if rapid.IntRange(0, 3).Draw(t, "delete") == 0 {
			r.Deleted = stamp.Draw(t, "deleted")
		}
		names := rapid.SliceOfNDistinct(rapid.SampledFrom(s.Fields), 0, len(s.Fields), rapid.ID[string]).Draw(t, "fields")
		for _, name := range names {
			if r.Fields == nil {
				r.Fields = map[string]crdt.Field{}
			}
			f := crdt.Field{Stamp: stamp.Draw(t, "stamp")}
			if rapid.IntRange(0, 3).Draw(t, "unset") > 0 {
				f.Value = value.Draw(t, "value")
			}
			r.Fields[name] = f
		}
		return r
	})
}

// Change generates changes of s to one of collections.
func (s Space) Change(collections ...string) *rapid.Generator[crdt.Change] {
	if len(collections) == 0 {
		panic("crdttest: Change needs a collection")
	}
	rec := s.Record()
	return rapid.Custom(func(t *rapid.T) crdt.Change {
		return crdt.Change{Collection: rapid.SampledFrom(collections).Draw(t, "collection"), Record: rec.Draw(t, "record")}
	})
}

// Changes generates 0 to 40 changes of s to collections.
func (s Space) Changes(collections ...string) *rapid.Generator[[]crdt.Change] {
	return rapid.SliceOfN(s.Change(collections...), 0, 40)
}

// Stamp generates stamps of DefaultSpace.
func Stamp() *rapid.Generator[crdt.Stamp] { return DefaultSpace.Stamp() }

// Value generates field values of DefaultSpace.
func Value() *rapid.Generator[[]byte] { return DefaultSpace.Value() }

// Record generates partial records of DefaultSpace.
func Record() *rapid.Generator[crdt.Record] { return DefaultSpace.Record() }

// Change generates changes of DefaultSpace to collections.
func Change(collections ...string) *rapid.Generator[crdt.Change] {
	return DefaultSpace.Change(collections...)
}

// Changes generates 0 to 40 changes of DefaultSpace to collections.
func Changes(collections ...string) *rapid.Generator[[]crdt.Change] {
	return DefaultSpace.Changes(collections...)
}

// Shuffle generates permutations of changes with some of them repeated:
// the same set delivered in another order, with duplicates, as an
// at-least-once network delivers it.
func Shuffle(changes []crdt.Change) *rapid.Generator[[]crdt.Change] {
	return rapid.Custom(func(t *rapid.T) []crdt.Change {
		repeats := rapid.IntRange(0, 3).Draw(t, "repeats")
		out := slices.Clone(changes)
		for i := len(out) - 1; i > 0; i-- {
			j := rapid.IntRange(0, i).Draw(t, "swap")
			out[i], out[j] = out[j], out[i]
		}
		for n := len(changes); n > 0 && repeats > 0; repeats-- {
			out = append(out, out[rapid.IntRange(0, n-1).Draw(t, "repeat")])
		}
		return out
	})
}
