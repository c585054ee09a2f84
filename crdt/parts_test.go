package crdt

import (
	"testing"

	"pgregory.net/rapid"
)

// WrittenBy keeps exactly the stamps of its replica.
func TestWrittenBy(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord().Draw(t, "r")
		who := genReplica.Draw(t, "replica")
		part := r.WrittenBy(who)
		if part.ID != r.ID {
			t.Fatalf("id %q, want %q", part.ID, r.ID)
		}
		if want := r.Deleted.Replica == who; part.Deleted.IsZero() == want || want && part.Deleted != r.Deleted {
			t.Fatalf("delete %v of %v by %s", part.Deleted, r.Deleted, who)
		}
		for name, f := range r.Fields {
			g, ok := part.Fields[name]
			if ok != (f.Stamp.Replica == who) || ok && !g.equal(f) {
				t.Fatalf("field %s: %v (kept %v), replica %s", name, f, ok, who)
			}
		}
		if len(part.Fields) > len(r.Fields) {
			t.Fatalf("%d fields from %d", len(part.Fields), len(r.Fields))
		}
	})
}

// NotIn leaves out what s already covers and nothing else: merged into s
// it gives what r gives, and it holds no stamp that s covers.
func TestNotIn(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord().Draw(t, "r")
		s := genRecord().Draw(t, "s")
		s.ID = r.ID
		// One stamp is one write: a field both hold at one stamp holds
		// one value (merge breaks such ties by value, a case replicas
		// never meet).
		for name, f := range r.Fields {
			if g, ok := s.Fields[name]; ok && g.Stamp == f.Stamp {
				f.Value = g.Value
				r.Fields[name] = f
			}
		}
		rest := r.NotIn(s)
		all, _ := Merge(s, r)
		some, _ := Merge(s, rest)
		if !all.Equal(some) {
			t.Fatalf("s+r = %v, s+r.NotIn(s) = %v (NotIn %v)", all, some, rest)
		}
		if _, changed := Merge(s, rest); !rest.Deleted.IsZero() || len(rest.Fields) > 0 {
			// Every stamp left is one s lacks: merging alters s.
			if !changed {
				t.Fatalf("s unchanged by %v, which should hold only what s lacks", rest)
			}
		}
		for name, f := range rest.Fields {
			if f.Stamp.Compare(s.Deleted) <= 0 {
				t.Fatalf("field %s at %v, hidden by the delete at %v", name, f.Stamp, s.Deleted)
			}
			if g, ok := s.Fields[name]; ok && g.Stamp.Compare(f.Stamp) >= 0 {
				t.Fatalf("field %s at %v, held at %v", name, f.Stamp, g.Stamp)
			}
		}
	})
}

// ByStamp gives parts of one stamp each, in stamp order, that merge back
// into r.
func TestByStamp(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := genRecord().Draw(t, "r")
		parts := r.ByStamp()
		back := Record{ID: r.ID}
		var last Stamp
		for i, p := range parts {
			stamps := map[Stamp]bool{}
			if !p.Deleted.IsZero() {
				stamps[p.Deleted] = true
			}
			for _, f := range p.Fields {
				stamps[f.Stamp] = true
			}
			if len(stamps) != 1 || !p.Deleted.IsZero() && len(p.Fields) > 0 {
				t.Fatalf("part %d holds %d stamps: %v", i, len(stamps), p)
			}
			for st := range stamps {
				if p.Deleted.IsZero() && i > 0 && st.Compare(last) <= 0 {
					t.Fatalf("part %d at %v after %v", i, st, last)
				}
				if p.Deleted.IsZero() {
					last = st
				}
			}
			back.Merge(p)
		}
		if !back.Equal(r.Normalize()) {
			t.Fatalf("parts merge into %v, want %v", back, r.Normalize())
		}
	})
}
