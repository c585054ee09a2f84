package transport_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores/memory"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
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
		body, _ := proto.Encode(req)
		r, _ := http.NewRequest(http.MethodPost, ts.URL+path, bytes.NewReader(body))
		r.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
		r.Header.Set("Content-Type", proto.ContentType)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if err := proto.Decode(data, answer); err != nil {
			panic(err)
		}
	}

	// An anonymous demo client's replica id: the anonymous prefix and a
	// device part of its own (docs/protocol.md, "Replica ids").
	tab := proto.ReplicaFor("", "tab1")
	title, _ := crdt.EncodeValue("Buy milk")
	change := crdt.Change{Collection: transport.DemoCollection,
		Record: crdt.SetField("t1", "title", title, crdt.Stamp{Wall: eng.ServerTime(), Replica: tab})}
	var pushed proto.PushResponse
	call(proto.PathPush, proto.PushRequest{Replica: tab, Changes: []crdt.Change{change}}, &pushed)
	fmt.Println("push:", pushed.Results[0].Status)

	var page proto.PullResponse
	call(proto.PathPull, proto.PullRequest{Collection: transport.DemoCollection}, &page)
	var got string
	_ = crdt.DecodeValue(page.Records[0].Fields["title"].Value, &got)
	fmt.Println("pull:", page.Records[0].ID, got, "more", page.More)
	// Output:
	// push: applied
	// pull: t1 Buy milk more false
}
