package client

import (
	"bytes"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport"
)

// The client keeps its own copy of the wire types so that it does not link
// the server. These tests pin both copies to the same bytes.

func TestWireMatchesServer(t *testing.T) {
	rec := crdt.Record{ID: "r1", Deleted: crdt.Stamp{Wall: 5, Logical: 1, Replica: "a"},
		Fields: map[string]crdt.Field{"t": {Stamp: crdt.Stamp{Wall: 9, Replica: "b"}, Value: []byte{0x61, 0x78}}, "u": {Stamp: crdt.Stamp{Wall: 8, Replica: "c"}}}}
	changes := []crdt.Change{{Collection: "notes", Record: rec}}
	for _, tc := range []struct {
		name         string
		client, serv any
	}{
		{"hello request", helloRequest{Protocol: 1, Replica: "a"}, transport.HelloRequest{Protocol: 1, Replica: "a"}},
		{"hello answer",
			helloAnswer{Protocol: 1, ServerTime: 1700000000000, ServerReplica: "srv", MaxPush: 1000, MaxPull: 1000, MaxBody: 4 << 20, MaxDrift: 300000, Subject: "u"},
			transport.HelloResponse{Protocol: 1, ServerTime: 1700000000000, ServerReplica: "srv", MaxPush: 1000, MaxPull: 1000, MaxBodyBytes: 4 << 20, MaxDrift: 300000, Subject: "u"}},
		{"push request", pushRequest{Replica: "a", Changes: changes}, transport.PushRequest{Replica: "a", Changes: changes}},
		{"push answer",
			pushAnswer{Results: []resultWire{{Status: 0, Seq: 3}, {Status: 1, Seq: 2}, {Status: 2, Code: "clock_drift", Message: "ahead"}}},
			transport.PushResponse{Results: []transport.PushResult{{Status: 0, Seq: 3}, {Status: 1, Seq: 2}, {Status: 2, Code: "clock_drift", Message: "ahead"}}}},
		{"pull request", pullRequest{Collection: "notes", Cursor: 7, Limit: 100}, transport.PullRequest{Collection: "notes", Cursor: 7, Limit: 100}},
		{"pull answer",
			pullAnswer{Entries: []entryWire{{Seq: 4, Record: rec}}, Next: 4, More: true},
			transport.PullResponse{Entries: []transport.Entry{{Seq: 4, Record: rec}}, Next: 4, More: true}},
		{"error", errorBody{Code: "forbidden", Message: "no"}, transport.ErrorBody{Code: "forbidden", Message: "no"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := crdt.Marshal(tc.client)
			if err != nil {
				t.Fatal(err)
			}
			b, err := transport.Encode(tc.serv)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("client %x\nserver %x", a, b)
			}
		})
	}
}

func TestLiveMessagesMatchServer(t *testing.T) {
	rec := crdt.Record{ID: "r1", Fields: map[string]crdt.Field{"t": {Stamp: crdt.Stamp{Wall: 9, Replica: "b"}, Value: []byte{0xf5}}}}
	for _, tc := range []struct {
		name   string
		client any
		serv   transport.Message
	}{
		{"hello", wsHello{Type: msgHello, Protocol: 1, Replica: "a", Token: "tok"}, transport.Hello{Protocol: 1, Replica: "a", Token: "tok"}},
		{"sub", wsSub{Type: msgSub, Collection: "c", Cursor: 9}, transport.Sub{Collection: "c", Cursor: 9}},
		{"ping", wsPing{Type: msgPing, Nonce: 3}, transport.Ping{Nonce: 3}},
		{"welcome", wsWelcome{Type: msgWelcome, Hello: helloAnswer{Protocol: 1, ServerTime: 2, ServerReplica: "s", MaxPush: 1, MaxPull: 2, MaxBody: 3, MaxDrift: 4}},
			transport.Welcome{Hello: transport.HelloResponse{Protocol: 1, ServerTime: 2, ServerReplica: "s", MaxPush: 1, MaxPull: 2, MaxBodyBytes: 3, MaxDrift: 4}}},
		{"changes", wsChanges{Type: msgChanges, Collection: "c", Entries: []entryWire{{Seq: 1, Record: rec}}, Next: 1, More: false},
			transport.Changes{Collection: "c", Entries: []transport.Entry{{Seq: 1, Record: rec}}, Next: 1}},
		{"error", wsError{Type: msgError, Code: "forbidden", Message: "m", Collection: "c"}, transport.ErrorMessage{Code: "forbidden", Message: "m", Collection: "c"}},
		{"resync", wsResync{Type: msgResync, Collection: "c"}, transport.Resync{Collection: "c"}},
		{"ack", wsAck{Type: msgAck, ID: 1, Results: []resultWire{{Status: 1, Seq: 2}}}, transport.Ack{ID: 1, Results: []transport.PushResult{{Status: 1, Seq: 2}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := crdt.Marshal(tc.client)
			if err != nil {
				t.Fatal(err)
			}
			b, err := transport.EncodeMessage(tc.serv)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Fatalf("client %x\nserver %x", a, b)
			}
			typ, err := messageType(b)
			if err != nil || typ != tc.name {
				t.Fatalf("messageType: got %q, %v; want %q", typ, err, tc.name)
			}
		})
	}
}
