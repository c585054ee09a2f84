package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"
	"slices"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
)

// Two replicas of one user write offline and sync through a server.
func Example() {
	// A server, as `convergo serve --store memory:` would run it.
	eng, err := engine.Open(engine.Config{Store: memory.New()})
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()
	auth, err := transport.NewJWT([]byte("example-secret-0123456789"), nil)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: auth})
	if err != nil {
		log.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	open := func(device string) *client.Replica {
		c, err := client.New(client.Config{URL: hs.URL, Token: token, Device: device})
		if err != nil {
			log.Fatal(err)
		}
		// Hello corrects clock skew and binds the client to the replica id
		// alice owns for this device.
		if _, err := c.Hello(ctx); err != nil {
			log.Fatal(err)
		}
		r, err := client.NewReplica(c, client.ReplicaConfig{Collections: []string{"notes"}})
		if err != nil {
			log.Fatal(err)
		}
		return r
	}
	laptop, phone := open("laptop"), open("phone")

	// Offline writes land in the local records and the outbox.
	if err := laptop.Set("notes", "n1", "title", "Buy milk"); err != nil {
		log.Fatal(err)
	}
	if err := phone.Set("notes", "n1", "done", true); err != nil {
		log.Fatal(err)
	}
	fmt.Println("pending on the laptop:", len(laptop.Pending()))

	// Online again: push the outbox, pull the rest.
	for _, r := range []*client.Replica{laptop, phone, laptop} {
		if err := r.Sync(ctx); err != nil {
			log.Fatal(err)
		}
	}
	for name, r := range map[string]*client.Replica{"laptop": laptop, "phone": phone} {
		rec, _ := r.Get("notes", "n1")
		var title string
		var done bool
		if err := crdt.DecodeValue(rec.Values()["title"], &title); err != nil {
			log.Fatal(err)
		}
		if err := crdt.DecodeValue(rec.Values()["done"], &done); err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s (%s): %q done=%v, pending %d\n", name, r.Client().Replica(), title, done, len(r.Pending()))
	}
	// Unordered output:
	// pending on the laptop: 1
	// laptop (3y46xdnv3bk6uhgg_laptop): "Buy milk" done=true, pending 0
	// phone (3y46xdnv3bk6uhgg_phone): "Buy milk" done=true, pending 0
}

// A reader narrows a collection to named scopes; changing them goes on
// from the same cursor, and the server sends the difference.
func ExampleClient_SetScope() {
	eng, err := engine.Open(engine.Config{Store: memory.New()})
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()
	auth, err := transport.NewJWT([]byte("example-secret-0123456789"), nil)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := transport.New(transport.Config{Engine: eng, Authorizer: auth})
	if err != nil {
		log.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	defer hs.Close()
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	open := func(device string, scopes map[string]map[string]*scope.Pred) *client.Replica {
		c, err := client.New(client.Config{URL: hs.URL, Token: token, Device: device, Scopes: scopes})
		if err != nil {
			log.Fatal(err)
		}
		if _, err := c.Hello(ctx); err != nil {
			log.Fatal(err)
		}
		r, err := client.NewReplica(c, client.ReplicaConfig{
			Collections: []string{"notes"},
			OnLeave:     func(coll, id string) { fmt.Println("left:", coll+"/"+id) },
		})
		if err != nil {
			log.Fatal(err)
		}
		return r
	}
	held := func(r *client.Replica) []string {
		var ids []string
		for id := range r.Records("notes") {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		return ids
	}

	desk := open("desk", nil)
	for id, list := range map[string]string{"n1": "home", "n2": "work", "n3": "work"} {
		if err := desk.Set("notes", id, "list", list); err != nil {
			log.Fatal(err)
		}
	}
	if err := desk.Sync(ctx); err != nil {
		log.Fatal(err)
	}

	home, err := scope.Parse(`list == "home"`)
	if err != nil {
		log.Fatal(err)
	}
	phone := open("phone", map[string]map[string]*scope.Pred{"notes": {"mine": home}})
	if err := phone.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("home:", held(phone))

	work, err := scope.Parse(`list == "work"`)
	if err != nil {
		log.Fatal(err)
	}
	if err := phone.Client().SetScope("notes", "mine", work); err != nil {
		log.Fatal(err)
	}
	if err := phone.Sync(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("work:", held(phone))
	// Output:
	// home: [n1]
	// left: notes/n1
	// work: [n2 n3]
}
