package crdttest_test

import (
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/crdttest"
)

// The reference model says what every replica must hold; Diff names the
// rule a replica breaks.
func ExampleReference() {
	one, _ := crdt.EncodeValue(1)
	two, _ := crdt.EncodeValue(2)
	changes := []crdt.Change{
		{Collection: "c", Record: crdt.SetField("a", "f", one, crdt.Stamp{Wall: 1, Replica: "r1"})},
		{Collection: "c", Record: crdt.SetField("a", "f", two, crdt.Stamp{Wall: 1, Replica: "r2"})},
		{Collection: "c", Record: crdt.DeleteRecord("b", crdt.Stamp{Wall: 2, Replica: "r1"})},
	}
	want := crdttest.Reference(changes)
	fmt.Println(crdttest.Format(want[crdttest.Key{Collection: "c", ID: "a"}]))

	good, stale := crdttest.Replica{}, crdttest.Replica{}
	good.Apply(changes...)
	stale.Apply(changes[0], changes[2])
	fmt.Println(crdttest.Diff(crdttest.RuleMerge, "good", good, want))
	fmt.Println(crdttest.Diff("merge", "stale", stale, want))
	// Output:
	// a {f: 1.0.r2=02}
	// <nil>
	// merge: stale holds c/a as
	//   a {f: 1.0.r1=01}
	// want
	//   a {f: 1.0.r2=02}
}
