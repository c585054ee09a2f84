package crdt_test

import (
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/convergo/convergo/crdt"
)

// A field value decoded into an interface has JSON-friendly types.
func ExampleDecodeValue() {
	b, err := crdt.EncodeValue(map[string]any{
		"n": 42, "x": 0.5, "tags": []string{"a"}, "at": time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC), "raw": []byte{7},
	})
	if err != nil {
		log.Fatal(err)
	}
	var v any
	if err := crdt.DecodeValue(b, &v); err != nil {
		log.Fatal(err)
	}
	m := v.(map[string]any)
	fmt.Printf("%T %T %T %T %T\n", m["n"], m["x"], m["tags"], m["at"], m["raw"])
	j, _ := json.Marshal(v)
	fmt.Println(string(j))
	// Output:
	// int64 float64 []interface {} string []uint8
	// {"at":"2025-01-02T03:04:05Z","n":42,"raw":"Bw==","tags":["a"],"x":0.5}
}
