package redis_test

import (
	"context"
	"log"
	"time"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/redis"
)

// Open a store on a Redis Cluster and run the engine on it. Several server
// instances may do the same on one cluster: they share records, sequence
// numbers and notifications.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := redis.Open(ctx, redis.Options{
		Addrs:      []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"},
		KeyPrefix:  "myapp:",
		ClientName: "myapp-convergo",
		PoolSize:   64,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	eng, err := engine.Open(engine.Config{Store: s})
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()
	if err := eng.Put(ctx, "todos", "t1", engine.Doc{"title": "buy milk"}); err != nil {
		log.Fatal(err)
	}
}
