package transport

import (
	"net/http"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// A push's answer is held while it is written, outside the bodies in
// flight, and a refusal's message quotes what the change named: a record
// id of 512 control characters was quoted in 2,048 bytes, so a push of
// 1,000 such changes (530 KB) was answered in over 2 MB, four times its
// body, held for as long as a slow client takes to read it. Every message
// is cut to maxMessageBytes, so a push's answer stays within a few hundred
// bytes a change.
func TestRefusalMessagesBounded(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token(t, "mallory", []string{"m.*"}, []string{"m.*"})
	own := proto.ReplicaFor("mallory", "d1")
	bad := strings.Repeat("\x01", crdt.MaxIDBytes)
	changes := make([]any, proto.DefaultMaxPushChanges)
	for i := range changes {
		changes[i] = map[int]any{1: "m.notes", 2: map[int]any{1: bad, 3: map[string]any{bad[:crdt.MaxFieldNameBytes]: []any{1, 0, uint64(0), 1}}}}
	}
	raw, err := crdt.Marshal(map[int]any{1: own, 2: changes})
	if err != nil {
		t.Fatal(err)
	}
	a := ts.post(t, proto.PathPush, tok, raw)
	if a.status != http.StatusOK {
		t.Fatalf("push: status %d, code %s", a.status, a.errorCode(t))
	}
	var resp proto.PushResponse
	if err := proto.Decode(a.body, &resp); err != nil {
		t.Fatal(err)
	}
	t.Logf("body %d bytes, answer %d bytes, first refusal %s: %.80q", len(raw), len(a.body), resp.Results[0].Code, resp.Results[0].Message)
	for i, r := range resp.Results {
		if r.Status != proto.StatusRefused || len(r.Message) > maxMessageBytes {
			t.Fatalf("result %d: %s %s, message of %d bytes, want refused with at most %d", i, r.Status, r.Code, len(r.Message), maxMessageBytes)
		}
	}
}
