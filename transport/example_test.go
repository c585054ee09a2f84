package transport_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
)

// A server on an in-memory store, and one push and one pull over HTTP with
// an anonymous client of the demo collection.
func Example() {
	store := memory.New()
	defer store.Close()
	eng, _ := engine.Open(engine.Config{Store: store})
	defer eng.Close()
	srv, err := transport.New(transport.Config{Engine: eng, Demo: true})
	if err != nil {
		panic(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	call := func(path string, req, answer any) {
		body, _ := transport.Encode(req)
		r, _ := http.NewRequest(http.MethodPost, ts.URL+path, bytes.NewReader(body))
		r.Header.Set(transport.HeaderProtocol, "1")
		r.Header.Set("Content-Type", transport.ContentType)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if err := transport.Decode(data, answer); err != nil {
			panic(err)
		}
	}

	title, _ := crdt.EncodeValue("Buy milk")
	change := crdt.Change{Collection: transport.DemoCollection,
		Record: crdt.SetField("t1", "title", title, crdt.Stamp{Wall: eng.ServerTime(), Replica: "tab1"})}
	var pushed transport.PushResponse
	call(transport.PathPush, transport.PushRequest{Replica: "tab1", Changes: []crdt.Change{change}}, &pushed)
	fmt.Println("push: status", pushed.Results[0].Status, "seq", pushed.Results[0].Seq)

	var page transport.PullResponse
	call(transport.PathPull, transport.PullRequest{Collection: transport.DemoCollection}, &page)
	var got string
	_ = crdt.DecodeValue(page.Entries[0].Record.Fields["title"].Value, &got)
	fmt.Println("pull:", page.Entries[0].Record.ID, got, "next", page.Next, "more", page.More)
	// Output:
	// push: status 0 seq 1
	// pull: t1 Buy milk next 1 more false
}
