package memory_test

import (
	"context"
	"fmt"
	"log"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/memory"
)

// A store merges changes and keeps a compacted log: a record appears once,
// at the sequence number of its latest change.
func ExampleNew() {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	v, _ := crdt.EncodeValue("milk")
	s := func(wall int64) crdt.Stamp { return crdt.Stamp{Wall: wall, Replica: "r1"} }
	res, err := st.Apply(ctx, []crdt.Change{
		{Collection: "todos", Record: crdt.SetField("t1", "title", v, s(1))},
		{Collection: "todos", Record: crdt.SetField("t2", "title", v, s(2))},
		{Collection: "todos", Record: crdt.UnsetField("t1", "title", s(3))},
		{Collection: "todos", Record: crdt.SetField("t2", "title", v, s(2))}, // a replay
	})
	if err != nil {
		log.Fatal(err)
	}
	for i, r := range res {
		fmt.Printf("change %d: changed %v, seq %d\n", i, r.Changed, r.Seq)
	}
	page, err := st.Pull(ctx, "todos", 0, stores.PageLimit{Records: 10, Bytes: stores.DefaultPageBytes})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range page.Entries {
		fmt.Println(e.Seq, e.Record.ID, e.Record.Exists())
	}
	// Output:
	// change 0: changed true, seq 1
	// change 1: changed true, seq 2
	// change 2: changed true, seq 3
	// change 3: changed false, seq 2
	// 2 t2 true
	// 3 t1 false
}
