package storeurl_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/convergo/convergo/stores/storeurl"
)

// A program opens the store its configuration names, as `convergo serve
// --store` does; switching to Redis or DynamoDB changes only the URL.
func ExampleOpen() {
	dir, err := os.MkdirTemp("", "storeurl-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for _, u := range []string{"memory:", "bolt:" + filepath.Join(dir, "app.db")} {
		st, err := storeurl.Open(context.Background(), u, storeurl.Options{})
		if err != nil {
			log.Fatal(err)
		}
		head, err := st.Head(context.Background(), "todos")
		fmt.Printf("%T head %d %v\n", st, head, err)
		st.Close()
	}
	spec, _ := storeurl.Parse("redis://app:s3cret@cache:6380/2?prefix=convergo:")
	fmt.Println(spec.Kind, spec.Redis.Addrs, spec.Redis.DB, spec.Redis.KeyPrefix)
	fmt.Println(storeurl.Redact("redis://app:s3cret@cache:6380/2"))
	// Output:
	// *memory.Store head 0 <nil>
	// *bolt.Store head 0 <nil>
	// redis [cache:6380] 2 convergo:
	// redis://app:xxxxx@cache:6380/2
}
