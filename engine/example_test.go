package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
)

// A Go program embedding Convergo: open an engine on a store, write, read
// and branch on errors.
func Example() {
	ctx := context.Background()
	st := memory.New() // or bolt.Open, redis.Open, dynamodb.Open, storeurl.Open
	defer st.Close()
	e, err := engine.Open(engine.Config{Store: st})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()

	if err := e.Put(ctx, "todos", "t1", engine.Doc{"title": "buy milk", "done": false}); err != nil {
		log.Fatal(err)
	}
	if err := e.Update(ctx, "todos", "t1", engine.Doc{"done": true}); err != nil {
		log.Fatal(err)
	}
	doc, err := e.Get(ctx, "todos", "t1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(doc["title"], doc["done"])

	_, err = e.Get(ctx, "todos", "t2")
	fmt.Println(errors.Is(err, engine.ErrNotFound), err)
	err = e.Put(ctx, "to dos", "t1", engine.Doc{"title": "x"})
	fmt.Println(errors.Is(err, engine.ErrInvalid))
	// Output:
	// buy milk true
	// true get todos/t2: stores: not found
	// true
}

// Values come back as JSON-friendly Go values, and decode into structs.
func ExampleEngine_GetInto() {
	ctx := context.Background()
	st := memory.New()
	defer st.Close()
	e, err := engine.Open(engine.Config{Store: st})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()

	type Order struct {
		Total  int64             `json:"total"`
		Price  float64           `json:"price"`
		Placed time.Time         `json:"placed"`
		Lines  []map[string]any  `json:"lines"`
		Tags   map[string]string `json:"tags"`
		Sig    []byte            `json:"sig"`
	}
	in := Order{Total: 3, Price: 9.5, Placed: time.Date(2025, 11, 24, 9, 30, 0, 0, time.UTC),
		Lines: []map[string]any{{"sku": "a", "qty": 2}}, Tags: map[string]string{"via": "pos"}, Sig: []byte{1, 2}}
	doc, err := engine.DocOf(in)
	if err != nil {
		log.Fatal(err)
	}
	if err := e.Put(ctx, "orders", "o1", doc); err != nil {
		log.Fatal(err)
	}

	got, err := e.Get(ctx, "orders", "o1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%T %T %T %T\n", got["total"], got["price"], got["placed"], got["lines"])
	b, _ := json.Marshal(got)
	fmt.Println(string(b))

	var out Order
	if err := e.GetInto(ctx, "orders", "o1", &out); err != nil {
		log.Fatal(err)
	}
	fmt.Println(out.Placed.Equal(in.Placed), out.Lines[0]["qty"], out.Sig)
	// Output:
	// int64 float64 string []interface {}
	// {"lines":[{"qty":2,"sku":"a"}],"placed":"2025-11-24T09:30:00Z","price":9.5,"sig":"AQI=","tags":{"via":"pos"},"total":3}
	// true 2 [1 2]
}

// Follow reads what a collection holds, then what changes, as it changes.
func ExampleEngine_Follow() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := memory.New()
	defer st.Close()
	e, err := engine.Open(engine.Config{Store: st})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()
	if err := e.Put(ctx, "todos", "t1", engine.Doc{"title": "buy milk"}); err != nil {
		log.Fatal(err)
	}

	seen := 0
	err = e.Follow(ctx, "todos", engine.Cursor{}, func(p engine.Page) error {
		for _, en := range p.Entries {
			doc, err := engine.DecodeDoc(en.Record)
			if err != nil {
				return err
			}
			fmt.Println(en.Seq, en.Record.ID, doc["title"])
			seen++
		}
		switch seen {
		case 1: // a write elsewhere in the program wakes Follow
			go e.Put(ctx, "todos", "t2", engine.Doc{"title": "call mum"})
		case 2:
			cancel()
		}
		return nil // p.Next is where to resume after a restart
	})
	fmt.Println(errors.Is(err, context.Canceled))
	// Output:
	// 1 t1 buy milk
	// 2 t2 call mum
	// true
}
