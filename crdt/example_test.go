package crdt_test

import (
	"fmt"

	"github.com/convergo/convergo/crdt"
)

// Two replicas edit one record concurrently; merging in either order gives
// the same record.
func Example() {
	alice, _ := crdt.NewClock(crdt.ClockConfig{Replica: "alice"})
	bob, _ := crdt.NewClock(crdt.ClockConfig{Replica: "bob"})

	milk, _ := crdt.EncodeValue("buy milk")
	oat, _ := crdt.EncodeValue("buy oat milk")
	yes, _ := crdt.EncodeValue(true)

	s1, _ := alice.Now(1_000)
	s2, _ := bob.Now(1_000) // same millisecond: the replica id breaks the tie
	s3, _ := bob.Now(1_001)
	a := crdt.SetField("todo-1", "title", milk, s1)
	b := crdt.SetField("todo-1", "title", oat, s2)
	c := crdt.SetField("todo-1", "done", yes, s3)

	var x, y crdt.Record
	x.Merge(a)
	x.Merge(b)
	x.Merge(c)
	y.Merge(c)
	y.Merge(b)
	y.Merge(a)

	var title string
	_ = crdt.DecodeValue(x.Values()["title"], &title)
	fmt.Println(title, x.Equal(y))

	// A delete hides everything written before it.
	s4, _ := alice.Now(1_002)
	x.Merge(crdt.DeleteRecord("todo-1", s4))
	fmt.Println(x.Exists())
	// Output:
	// buy oat milk true
	// false
}
