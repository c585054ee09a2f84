package crdt

import (
	"bytes"
	"maps"
	"slices"
)

// Field is one last-writer-wins register of a record: the value of its last
// write and the stamp of that write. A nil Value means the field was unset;
// the stamp is kept so that older writes cannot bring the field back.
//
// Value holds one CBOR data item in deterministic encoding (see
// CanonicalValue). Values are opaque to merging and must not be modified
// once they are in a Field: records share them freely.
type Field struct {
	Stamp Stamp
	Value []byte
}

// IsUnset reports whether the field records an unset.
func (f Field) IsUnset() bool { return f.Value == nil }

// beats reports whether f wins over g in last-writer-wins order: the larger
// stamp wins; at equal stamps (which only a replica reusing another's id can
// produce) an unset wins over a value, and otherwise the larger value bytes
// win. Every tie is therefore decided the same way on every replica.
func (f Field) beats(g Field) bool {
	if c := f.Stamp.Compare(g.Stamp); c != 0 {
		return c > 0
	}
	switch {
	case f.Value == nil:
		return g.Value != nil
	case g.Value == nil:
		return false
	}
	return bytes.Compare(f.Value, g.Value) > 0
}

func (f Field) equal(g Field) bool {
	return f.Stamp == g.Stamp && (f.Value == nil) == (g.Value == nil) && bytes.Equal(f.Value, g.Value)
}

// Record is a last-writer-wins element map: the state of one record of a
// collection, or a change to it (a change is simply a partial record).
//
// Deleted is the stamp of the latest delete of the whole record, or zero. A
// delete at stamp T hides every field stamped at or before T; fields written
// after T are visible, so a write after a delete re-creates the record with
// only the newer fields. Merge drops hidden fields, so a merged record holds
// only fields stamped after Deleted.
//
// A record exists when it has at least one field with a value; a record that
// was deleted, or whose fields were all unset, does not.
type Record struct {
	ID      string
	Deleted Stamp
	Fields  map[string]Field
}

// Change is a change to one record of a collection, as pushed by a client
// and applied by the engine.
type Change struct {
	Collection string
	Record     Record
}

// Exists reports whether r has at least one visible field with a value.
func (r Record) Exists() bool {
	for _, f := range r.Fields {
		if f.Value != nil && f.Stamp.Compare(r.Deleted) > 0 {
			return true
		}
	}
	return false
}

// Values returns the visible field values of r (unset and hidden fields
// left out), or nil when the record does not exist.
func (r Record) Values() map[string][]byte {
	var out map[string][]byte
	for name, f := range r.Fields {
		if f.Value != nil && f.Stamp.Compare(r.Deleted) > 0 {
			if out == nil {
				out = make(map[string][]byte, len(r.Fields))
			}
			out[name] = f.Value
		}
	}
	return out
}

// MaxStamp returns the largest stamp in r: its delete stamp or a field's.
func (r Record) MaxStamp() Stamp {
	m := r.Deleted
	for _, f := range r.Fields {
		if f.Stamp.Compare(m) > 0 {
			m = f.Stamp
		}
	}
	return m
}

// Clone returns a copy of r whose field map can be changed without touching
// r. Values are shared; they are immutable.
func (r Record) Clone() Record {
	r.Fields = maps.Clone(r.Fields)
	return r
}

// Equal reports whether r and s hold the same state.
func (r Record) Equal(s Record) bool {
	if r.ID != s.ID || r.Deleted != s.Deleted || len(r.Fields) != len(s.Fields) {
		return false
	}
	for name, f := range r.Fields {
		g, ok := s.Fields[name]
		if !ok || !f.equal(g) {
			return false
		}
	}
	return true
}

// Merge merges delta (a full state or a partial change of the same record)
// into r and reports whether r changed. It is the join of a semilattice:
// commutative, associative and idempotent, so replicas that merge the same
// set of changes, in any order and any number of times, hold equal records.
//
// Merge never modifies delta. It takes r's ID from delta when r has none;
// merging records with different ids is the caller's mistake and merges
// fields all the same.
func (r *Record) Merge(delta Record) (changed bool) {
	if r.ID == "" {
		r.ID = delta.ID
	}
	if delta.Deleted.Compare(r.Deleted) > 0 {
		r.Deleted = delta.Deleted
		changed = true
		for name, f := range r.Fields {
			if f.Stamp.Compare(r.Deleted) <= 0 {
				delete(r.Fields, name)
			}
		}
	}
	for name, f := range delta.Fields {
		if f.Stamp.Compare(r.Deleted) <= 0 {
			continue // hidden by the record's delete
		}
		cur, ok := r.Fields[name]
		if ok && !f.beats(cur) {
			continue
		}
		if r.Fields == nil {
			r.Fields = make(map[string]Field, len(delta.Fields))
		}
		r.Fields[name] = f
		changed = true
	}
	return changed
}

// Merge returns the merge of a and b without modifying either, and whether
// the result differs from a.
func Merge(a, b Record) (Record, bool) {
	out := a.Clone()
	changed := out.Merge(b)
	return out, changed
}

// LostFields returns the names, sorted, of the fields of delta that merged
// does not hold as delta wrote them, where merged is the record after delta
// was merged into it: a field with a newer stamp won, a field with the same
// stamp won the tie-break (see Field), or a delete stamped at or after the
// field's stamp dropped it. delta's delete stamp is never reported: a delete
// has nothing to lose. It returns nil when merged holds every field of delta.
//
// Stores report it per change (stores.Result.Lost), so a writer learns which
// of its writes a newer write superseded.
func LostFields(delta, merged Record) []string {
	var lost []string
	for name, f := range delta.Fields {
		if g, ok := merged.Fields[name]; !ok || !g.equal(f) {
			lost = append(lost, name)
		}
	}
	slices.Sort(lost)
	return lost
}

// Normalize drops fields hidden by r's delete stamp, returning the record in
// the form Merge produces. Decoded input need not be normalized; two
// normalized records are equal exactly when they hold the same state.
func (r Record) Normalize() Record {
	out := Record{ID: r.ID}
	out.Merge(r)
	return out
}

// FieldNames returns r's field names in sorted order.
func (r Record) FieldNames() []string {
	return slices.Sorted(maps.Keys(r.Fields))
}

// SetField returns a change that sets field name of record id to value (one
// CBOR data item in deterministic form) at stamp s.
func SetField(id, name string, value []byte, s Stamp) Record {
	return Record{ID: id, Fields: map[string]Field{name: {Stamp: s, Value: value}}}
}

// UnsetField returns a change that unsets field name of record id at stamp s.
func UnsetField(id, name string, s Stamp) Record {
	return Record{ID: id, Fields: map[string]Field{name: {Stamp: s}}}
}

// DeleteRecord returns a change that deletes record id at stamp s.
func DeleteRecord(id string, s Stamp) Record {
	return Record{ID: id, Deleted: s}
}

// WrittenBy returns the stamps of r that carry replica id replica (its
// delete and its fields), as a record: what that replica wrote of r that
// r still holds. A client gives these back to a server that may have lost
// them; pushing them is always safe, since merge is idempotent.
func (r Record) WrittenBy(replica string) Record {
	part := Record{ID: r.ID}
	if r.Deleted.Replica == replica {
		part.Deleted = r.Deleted
	}
	for name, f := range r.Fields {
		if f.Stamp.Replica == replica {
			if part.Fields == nil {
				part.Fields = map[string]Field{}
			}
			part.Fields[name] = f
		}
	}
	return part
}

// NotIn returns the stamps of r that s neither holds nor hides: a field s
// holds at the same stamp or a newer one, or stamped at or before s's
// delete, is covered, and so is a delete at or before s's. Merging the
// result into s gives what merging r into s gives.
func (r Record) NotIn(s Record) Record {
	out := Record{ID: r.ID}
	if r.Deleted.Compare(s.Deleted) > 0 {
		out.Deleted = r.Deleted
	}
	for name, f := range r.Fields {
		if f.Stamp.Compare(s.Deleted) <= 0 {
			continue
		}
		if g, ok := s.Fields[name]; ok && g.Stamp.Compare(f.Stamp) >= 0 {
			continue
		}
		if out.Fields == nil {
			out.Fields = map[string]Field{}
		}
		out.Fields[name] = f
	}
	return out
}

// ByStamp splits r into one record per stamp, in stamp order: its delete
// alone, and its fields grouped by stamp (the fields one change wrote).
// Pushed one by one, a part refused (an old stamp below a server's write
// horizon) does not take the others down with it.
func (r Record) ByStamp() []Record {
	var out []Record
	if !r.Deleted.IsZero() {
		out = append(out, Record{ID: r.ID, Deleted: r.Deleted})
	}
	groups := map[Stamp]map[string]Field{}
	for name, f := range r.Fields {
		if groups[f.Stamp] == nil {
			groups[f.Stamp] = map[string]Field{}
		}
		groups[f.Stamp][name] = f
	}
	for _, st := range slices.SortedFunc(maps.Keys(groups), Stamp.Compare) {
		out = append(out, Record{ID: r.ID, Fields: groups[st]})
	}
	return out
}
