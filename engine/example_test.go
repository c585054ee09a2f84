package engine_test

import (
	"context"
	"fmt"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
)

// A Go program embedding Convergo: open an engine on a store, write, read
// and follow a collection.
func Example() {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	e, err := engine.Open(engine.Config{Store: st})
	if err != nil {
		panic(err)
	}
	defer e.Close()

	sub, _ := e.Subscribe("todos")
	defer sub.Close()

	_ = e.Put(ctx, "todos", "t1", engine.Doc{"title": "buy milk", "done": false})
	_ = e.Update(ctx, "todos", "t1", engine.Doc{"done": true})

	head := <-sub.C()
	page, _ := e.Pull(ctx, "todos", engine.Cursor{}, engine.PageLimit{Records: 100})
	doc, _ := e.Get(ctx, "todos", "t1")
	fmt.Println(head, len(page.Entries), doc["title"], doc["done"])
	// Output: 2 1 buy milk true
}
