package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestRealServerPushRefusesAnUnreadableValueAlone pushes a batch whose
// middle change holds a value that is not CBOR: the server would refuse
// that change alone, malformed (docs/protocol.md, section 7), so Push
// refuses it so too and the others are applied.
func TestRealServerPushRefusesAnUnreadableValueAlone(t *testing.T) {
	_, url, auth := realServer(t)
	ctx := t.Context()
	token, err := auth.Issue("alice", []string{"notes"}, []string{"notes"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: url, Token: token, Device: "laptop"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	change := func(id string, value []byte) crdt.Change {
		s, err := c.Now()
		if err != nil {
			t.Fatal(err)
		}
		return crdt.Change{Collection: "notes", Record: crdt.SetField(id, "title", value, s)}
	}
	good, err := crdt.EncodeValue("hi")
	if err != nil {
		t.Fatal(err)
	}
	// Not CBOR, truncated, two items, empty, and a tag (outside the value
	// model, which the server refuses malformed when it reads it).
	for _, bad := range [][]byte{{0xff}, {0x61}, {0x01, 0x02}, {}, {0xc1, 0x01}} {
		res, err := c.Push(ctx, []crdt.Change{change("a", good), change("b", bad), change("c", good)})
		if err != nil {
			t.Fatalf("value % x: Push: %v, want the change refused alone", bad, err)
		}
		if len(res) != 3 || !res[0].Acknowledged() || !res[2].Acknowledged() {
			t.Fatalf("value % x: results %+v, want the other changes acknowledged", bad, res)
		}
		var e *client.Error
		if res[1].Status != client.StatusRefused || !errors.As(res[1].Err, &e) || e.Code != proto.CodeMalformed || !errors.Is(res[1].Err, client.ErrMalformed) {
			t.Fatalf("value % x: result %+v, want refused malformed", bad, res[1])
		}
	}
}
