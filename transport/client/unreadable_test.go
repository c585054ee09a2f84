package client_test

import (
	"strings"
	"testing"
	"time"

	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// TestFlushPushesWhenItsPullFirstIsForbidden: a collection not pulled
// lately is pulled before its changes are pushed; when the server refuses
// that pull forbidden (the token may write the collection but no longer
// read it), the push goes on, as the browser client's does (pullOne: the
// collection is said unreadable and skipped). Before, Flush returned the
// refusal before pushing anything, at every Flush, so the whole outbox
// waited behind a collection the token may not read.
func TestFlushPushesWhenItsPullFirstIsForbidden(t *testing.T) {
	s := newLossServer(t, false)
	alice := s.replica("alice", true, client.ReplicaConfig{FreshFor: time.Nanosecond}, nil)
	set(t, alice, "a", "n", 1)
	syncAll(t, alice)
	refuse := func(path string, body []byte) *proto.Error {
		if strings.HasSuffix(path, proto.PathPull) {
			return proto.Errorf(proto.CodeForbidden, "no reads for you")
		}
		return nil
	}
	s.refuse.Store(&refuse)
	set(t, alice, "b", "n", 2)
	if err := alice.Flush(t.Context()); err != nil {
		t.Errorf("Flush with its pull first refused forbidden: %v", err)
	}
	if n := len(alice.Pending()); n != 0 {
		t.Errorf("%d changes still pending after the Flush, want 0", n)
	}
	s.refuse.Store(nil)
	if _, ok := s.served(t)["b"]; !ok {
		t.Errorf("the server does not hold b")
	}
}
