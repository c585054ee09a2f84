package crdttest

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/convergo/convergo/crdt"
	"pgregory.net/rapid"
)

// Key names a record: its collection and id.
type Key struct{ Collection, ID string }

func (k Key) String() string { return k.Collection + "/" + k.ID }

// State is what a replica holds: the merged record of each key. A key
// missing and a key holding an empty record are the same state.
type State map[Key]crdt.Record

// Replica is a State that applies changes with crdt.Record.Merge: the
// simplest correct replica, to compare a real one with.
type Replica = State

// Apply merges changes into s.
func (s State) Apply(changes ...crdt.Change) {
	for _, c := range changes {
		k := Key{c.Collection, c.Record.ID}
		r := s[k]
		r.Merge(c.Record)
		s[k] = r
	}
}

// Reference returns the state every replica must hold after merging every
// change in changes, in any order and any number of times, computed
// naively: per field the write with the largest stamp (at equal stamps an
// unset beats a value, else the larger value bytes), per record the
// largest delete stamp, and only the fields stamped after it. It does not
// call crdt.Record.Merge, so comparing the two checks Merge as well.
func Reference(changes []crdt.Change) State {
	out := State{}
	for _, c := range changes {
		k := Key{c.Collection, c.Record.ID}
		r := out[k]
		r.ID = c.Record.ID
		if c.Record.Deleted.Compare(r.Deleted) > 0 {
			r.Deleted = c.Record.Deleted
		}
		for name, f := range c.Record.Fields {
			if r.Fields == nil {
				r.Fields = map[string]crdt.Field{}
			}
			cur, ok := r.Fields[name]
			switch {
			case !ok, f.Stamp.Compare(cur.Stamp) > 0:
			case f.Stamp != cur.Stamp:
				continue
			case f.Value == nil && cur.Value != nil: // an unset wins a tie
			case f.Value != nil && cur.Value != nil && bytes.Compare(f.Value, cur.Value) > 0:
			default:
				continue
			}
			r.Fields[name] = f
		}
		out[k] = r
	}
	for k, r := range out {
		for name, f := range r.Fields {
			if f.Stamp.Compare(r.Deleted) <= 0 {
				delete(r.Fields, name)
			}
		}
		if len(r.Fields) == 0 {
			r.Fields = nil
		}
		out[k] = r
	}
	return out
}

// Diff returns an error describing the first difference between got and
// want, keys in order, naming the rule it breaks (rule), or nil when they
// hold the same state. name says whose state got is.
func Diff(rule, name string, got, want State) error {
	keys := slices.SortedFunc(maps.Keys(merged(got, want)), func(a, b Key) int {
		return strings.Compare(a.String(), b.String())
	})
	for _, k := range keys {
		g, w := got[k], want[k]
		g.ID, w.ID = k.ID, k.ID
		if !g.Equal(w) {
			return fmt.Errorf("%s: %s holds %s as\n  %s\nwant\n  %s", rule, name, k, Format(g), Format(w))
		}
	}
	return nil
}

func merged(a, b State) State {
	out := maps.Clone(a)
	maps.Copy(out, b)
	return out
}

// TB is what Converged needs of a test: *testing.T, *rapid.T and
// testing.TB all are.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
}

// RuleMerge is the rule Converged names: replicas that merged the same
// changes hold what the reference model computes.
const RuleMerge = "merge (every replica holds, per field, the write with the largest stamp, and no field a later delete hides)"

// Converged fails t unless every replica holds want.
func Converged(t TB, want State, replicas ...State) {
	t.Helper()
	for i, r := range replicas {
		if err := Diff(RuleMerge, fmt.Sprintf("replica %d", i), r, want); err != nil {
			t.Fatalf("%v", err)
		}
	}
}

// Format renders a record on one line, fields in name order, values in
// hex: "a deleted@3.0.r1 {f: 2.1.r2=01, g: 4.0.r1 unset}".
func Format(r crdt.Record) string {
	var b strings.Builder
	b.WriteString(r.ID)
	if !r.Deleted.IsZero() {
		fmt.Fprintf(&b, " deleted@%s", fmtStamp(r.Deleted))
	}
	b.WriteString(" {")
	for i, name := range slices.Sorted(maps.Keys(r.Fields)) {
		if i > 0 {
			b.WriteString(", ")
		}
		f := r.Fields[name]
		if f.Value == nil {
			fmt.Fprintf(&b, "%s: %s unset", name, fmtStamp(f.Stamp))
		} else {
			fmt.Fprintf(&b, "%s: %s=%x", name, fmtStamp(f.Stamp), f.Value)
		}
	}
	b.WriteString("}")
	return b.String()
}

func fmtStamp(s crdt.Stamp) string { return fmt.Sprintf("%d.%d.%s", s.Wall, s.Logical, s.Replica) }

// Check runs prop with rapid.Check, without the failure files rapid
// writes by default into the caller's testdata/: a failure prints the
// -rapid.seed that reproduces it. A -rapid.nofailfile given on the
// command line is left as it is.
func Check(t rapid.TB, prop func(*rapid.T)) {
	t.Helper()
	noFailFiles()
	rapid.Check(t, prop)
}

var noFailFilesOnce sync.Once

func noFailFiles() {
	noFailFilesOnce.Do(func() {
		f := flag.Lookup("rapid.nofailfile")
		if f == nil || !flag.Parsed() {
			return
		}
		set := false
		flag.Visit(func(g *flag.Flag) { set = set || g.Name == f.Name })
		if !set {
			_ = f.Value.Set("true")
		}
	})
}
