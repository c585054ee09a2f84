package transport

import (
	"fmt"
	"net/http"
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
