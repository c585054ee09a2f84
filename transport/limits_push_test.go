package transport

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// Hello key 4 promises pushes of MaxPushChanges changes; the decoder reads
// no array longer than crdt.MaxContainerItems, so a larger limit would
// refuse the pushes it promises as malformed (not even too_large, which a
// client answers by sending less). New refuses such a limit, and a push of
// exactly the largest it accepts is applied.
func TestMaxPushChangesDecodable(t *testing.T) {
	ts := newTestServer(t, nil)
	if _, err := New(Config{Engine: ts.eng, Limits: Limits{MaxPushChanges: crdt.MaxContainerItems + 1}}); err == nil {
		t.Fatalf("MaxPushChanges %d, above what a push decodes: no error", crdt.MaxContainerItems+1)
	}
	big := newTestServer(t, func(c *Config) { c.Limits.MaxPushChanges = crdt.MaxContainerItems })
	tok := big.token(t, "alice", []string{"notes"}, []string{"notes"})
	changes := make([]crdt.Change, crdt.MaxContainerItems)
	for i := range changes {
		changes[i] = change(t, "notes", fmt.Sprint(i), "f", i)
	}
	a := big.post(t, proto.PathPush, tok, proto.PushRequest{Replica: ownReplica, Changes: changes})
	if a.status != http.StatusOK {
		t.Fatalf("a push of %d changes, the limit: %d %s", len(changes), a.status, a.errorCode(t))
	}
}

// A server never announces a limit of 0 (docs/protocol.md, section 6):
// a zero field of Limits is its default, and New refuses one below 1, so
// every limit key of the hello answer is at least 1.
func TestAnnouncedLimitsAtLeastOne(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, tc := range []struct {
		name string
		set  func(*Limits)
	}{
		{"MaxBodyBytes", func(l *Limits) { l.MaxBodyBytes = -1 }},
		{"MaxPushChanges", func(l *Limits) { l.MaxPushChanges = -1 }},
		{"MaxPullRecords", func(l *Limits) { l.MaxPullRecords = -1 }},
		{"MaxPageBytes", func(l *Limits) { l.MaxPageBytes = -1 }},
		{"MaxMessageBytes", func(l *Limits) { l.MaxMessageBytes = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l Limits
			tc.set(&l)
			if _, err := New(Config{Engine: ts.eng, Limits: l}); err == nil || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("%s -1: got %v, want an error naming it", tc.name, err)
			}
		})
	}
	h := ts.srv.helloAnswer(Principal{}) // every Limits field zero: the defaults
	for key, v := range map[int]uint64{4: h.MaxPush, 5: h.MaxPull, 6: h.MaxBodyBytes, 9: h.MaxPageBytes, 10: h.MaxMessageBytes} {
		if v < 1 {
			t.Errorf("hello key %d: got %d, want at least 1", key, v)
		}
	}
}
