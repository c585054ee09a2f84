package proto

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/convergo/convergo/crdt"
)

func TestPushVersionBytes(t *testing.T) {
	for _, tc := range []struct {
		coll    string
		version uint64
	}{{"a", 0}, {"a", 1}, {"a", 23}, {"a", 24}, {strings.Repeat("c", 23), 255}, {strings.Repeat("c", 24), 256}, {"用户", 65535}, {strings.Repeat("c", crdt.MaxCollectionBytes), 65536}, {"a", 1 << 32}} {
		want := 0
		if tc.version != 0 {
			b, err := crdt.Marshal(map[string]uint64{tc.coll: tc.version})
			if err != nil {
				t.Fatal(err)
			}
			want = len(b) - 1 // less the map's head of one entry
		}
		if got := PushVersionBytes(tc.coll, tc.version); got != want {
			t.Errorf("PushVersionBytes(%q, %d) = %d, want %d", tc.coll, tc.version, got, want)
		}
	}
}

// A push cut by BatchLen under PushRoom with PushSizer, spanning many
// collections with schema versions, is never over the body limit (but a
// batch of one change larger than the room, which goes alone). The
// changes are mostly a client's own (its replica pinned, so compact
// stamps save little) in collections of long names: cut by their own
// bytes alone, such batches were over it.
func TestPushSizerKeepsBatchesWithinBody(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	replicas := []string{ReplicaFor("alice", "d1"), "r", strings.Repeat("z", crdt.MaxReplicaBytes)}
	for run := range 300 {
		maxBody := int64(PushEnvelopeBytes + 64 + r.IntN(40000))
		colls := make([]string, 1+r.IntN(400))
		versions := map[string]uint64{}
		for i := range colls {
			colls[i] = fmt.Sprintf("c%04d.%s", i, strings.Repeat("x", 40+r.IntN(crdt.MaxCollectionBytes-46)))
			if r.IntN(4) > 0 {
				versions[colls[i]] = []uint64{1, 300, 1 << 40}[r.IntN(3)]
			}
		}
		changes := make([]crdt.Change, 1+r.IntN(600))
		for i := range changes {
			rec := crdt.Record{ID: fmt.Sprint("id", i), Fields: map[string]crdt.Field{}}
			for f := range 1 + r.IntN(2) {
				v, _ := crdt.Marshal(strings.Repeat("v", r.IntN(200)))
				s := crdt.Stamp{Wall: 1_700_000_000_000 + int64(r.IntN(1_000_000)), Logical: uint32(r.IntN(3)), Replica: replicas[max(0, r.IntN(len(replicas)+8)-8)]}
				rec.Fields[fmt.Sprint("f", f)] = crdt.Field{Stamp: s, Value: v}
			}
			changes[i] = crdt.Change{Collection: colls[r.IntN(len(colls))], Record: rec}
		}
		size := func(ch crdt.Change) int { return len(crdt.AppendChange(nil, ch)) }
		versionOf := func(ch crdt.Change) (string, uint64) { return ch.Collection, versions[ch.Collection] }
		for rest := changes; len(rest) > 0; {
			n := BatchLen(rest, DefaultMaxPushChanges, int(PushRoom(maxBody)), PushSizer(size, versionOf))
			batch := rest[:n]
			rest = rest[n:]
			req := PushRequest{Replica: replicas[0], Changes: batch}
			for _, ch := range batch {
				if v := versions[ch.Collection]; v != 0 {
					if req.Versions == nil {
						req.Versions = map[string]uint64{}
					}
					req.Versions[ch.Collection] = v
				}
			}
			b, err := req.MarshalCBOR()
			if err != nil {
				t.Fatal(err)
			}
			if n > 1 && int64(len(b)) > maxBody {
				t.Fatalf("run %d: a batch of %d changes over %d collections takes %d bytes, over the max-body of %d", run, n, len(req.Versions), len(b), maxBody)
			}
		}
	}
}
