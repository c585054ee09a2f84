package crdttest_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/crdttest"
	"pgregory.net/rapid"
)

// An app-level property, written with the kit alone: devices that receive
// the same changes in any order, with duplicates, end equal, and equal to
// the reference model.
func TestDevicesConverge(t *testing.T) {
	crdttest.Check(t, func(t *rapid.T) {
		changes := crdttest.Changes("todos", "lists").Draw(t, "changes")
		phone, laptop := crdttest.Replica{}, crdttest.Replica{}
		phone.Apply(changes...)
		laptop.Apply(crdttest.Shuffle(changes).Draw(t, "order")...)
		crdttest.Converged(t, crdttest.Reference(changes), phone, laptop)
	})
}

// The generators reach what they promise: equal stamps, deletes, unsets.
// Two stamps drawn apart are equal a few times in a hundred, so the draws
// go on, up to ten rounds of checks, until each case was seen.
func TestGeneratorsCover(t *testing.T) {
	var ties, deletes, unsets, sets int
	for round := 0; round < 10 && (ties == 0 || deletes == 0 || unsets == 0 || sets == 0); round++ {
		draw(t, &ties, &deletes, &unsets, &sets)
	}
	if ties == 0 || deletes == 0 || unsets == 0 || sets == 0 {
		t.Fatalf("ties %d, deletes %d, unsets %d, sets %d: want each above 0", ties, deletes, unsets, sets)
	}
}

// draw counts, over one round of checks, the stamp pairs drawn equal and
// the deletes, unsets and sets in drawn records.
func draw(t *testing.T, ties, deletes, unsets, sets *int) {
	crdttest.Check(t, func(t *rapid.T) {
		a := crdttest.Stamp().Draw(t, "a")
		if a == crdttest.Stamp().Draw(t, "b") {
			*ties++
		}
		r := crdttest.Record().Draw(t, "r")
		if !r.Deleted.IsZero() {
			*deletes++
		}
		for _, f := range r.Fields {
			if f.IsUnset() {
				*unsets++
			} else {
				*sets++
			}
		}
	})
}

// A replica that loses a field on merge fails Converged with a message
// naming the merge rule.
func TestConvergedNamesTheRule(t *testing.T) {
	v, _ := crdt.EncodeValue(1)
	changes := []crdt.Change{
		{Collection: "c", Record: crdt.SetField("a", "f", v, crdt.Stamp{Wall: 1, Replica: "r1"})},
		{Collection: "c", Record: crdt.SetField("a", "g", v, crdt.Stamp{Wall: 2, Replica: "r1"})},
	}
	good, bad := crdttest.Replica{}, crdttest.Replica{}
	good.Apply(changes...)
	bad.Apply(changes[0])
	ft := &fakeT{}
	crdttest.Converged(ft, crdttest.Reference(changes), good, bad)
	if !strings.Contains(ft.msg, "merge (") || !strings.Contains(ft.msg, "replica 1 holds c/a") {
		t.Fatalf("got %q, want a failure naming the merge rule and replica 1", ft.msg)
	}
}

type fakeT struct{ msg string }

func (*fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	if f.msg == "" {
		f.msg = strings.TrimSpace(strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " "))
	}
}
