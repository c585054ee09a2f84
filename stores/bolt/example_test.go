package bolt_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/bolt"
)

func Example() {
	dir, err := os.MkdirTemp("", "convergo")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := bolt.Open(context.Background(), filepath.Join(dir, "convergo.db"), bolt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()

	title, _ := crdt.EncodeValue("buy milk")
	done, _ := crdt.EncodeValue(true)
	res, err := s.Apply(ctx, []crdt.Change{
		{Collection: "todos", Record: crdt.SetField("t1", "title", title, crdt.Stamp{Wall: 1000, Replica: "alice"})},
		{Collection: "todos", Record: crdt.SetField("t2", "title", title, crdt.Stamp{Wall: 1001, Replica: "alice"})},
		{Collection: "todos", Record: crdt.SetField("t1", "done", done, crdt.Stamp{Wall: 1002, Replica: "bob"})},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("results:", res)

	// A reader pulls everything after its cursor: each record once, in its
	// current state, ordered by the seq of its latest change.
	page, err := s.Pull(ctx, "todos", 0, stores.PageLimit{Records: 100, Bytes: stores.DefaultPageBytes})
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range page.Entries {
		fmt.Println(e.Seq, e.Record.ID, e.Record.FieldNames())
	}
	fmt.Println("next cursor:", page.Next, "more:", page.More)
	// Output:
	// results: [{true 1 []} {true 2 []} {true 3 []}]
	// 2 t2 [title]
	// 3 t1 [done title]
	// next cursor: 3 more: false
}
