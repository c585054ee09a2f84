package crdt

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestCompactRoundTrip: records written with a planned Compact decode, with
// a Compact made from what the message carries, to the same records.
func TestCompactRoundTrip(t *testing.T) {
	long := strings.Repeat("r", MaxReplicaBytes)
	var rs []Record
	for i := range 40 {
		r := benchRecord(fmt.Sprint("id", i), 3, int64(1_700_000_000_000+i*3), []string{"a", long, "bb"}[i%3])
		if i%7 == 0 {
			r.Deleted = Stamp{Wall: int64(1_700_000_000_000 + i), Replica: "dd"}
		}
		rs = append(rs, r)
	}
	for _, pinned := range []string{"", "a", "zz"} {
		c := PlanCompact(pinned, slices.Values(rs))
		b := AppendHead(nil, majorArray, uint64(len(rs)))
		for _, r := range rs {
			b = AppendRecordCompact(b, r, c)
		}
		var base *uint64
		if v, ok := c.Base(); ok {
			base = &v
		}
		d, err := NewCompact(pinned, c.Table(), base)
		if err != nil {
			t.Fatal(err)
		}
		back, err := d.DecodeRecords(b)
		if err != nil {
			t.Fatalf("pinned %q: %v", pinned, err)
		}
		for i := range rs {
			if !back[i].Equal(rs[i]) {
				t.Fatalf("pinned %q, record %d:\n got %+v\nwant %+v", pinned, i, back[i], rs[i])
			}
		}
		if _, err := (*Compact)(nil).DecodeRecords(b); !errors.Is(err, ErrMalformed) && len(c.Table()) > 0 {
			t.Fatalf("compact records decoded as plain: %v", err)
		}
	}
}

// TestCompactRecordLimitIsPlain: a compact record under MaxRecordBytes
// whose plain form is over it is too large, as it would be stored plain.
func TestCompactRecordLimitIsPlain(t *testing.T) {
	replica := strings.Repeat("r", MaxReplicaBytes)
	r := Record{ID: "big", Fields: map[string]Field{}}
	big := AppendHead(nil, majorBytes, 90_000)
	big = append(big, make([]byte, 90_000)...)
	for i := range 1000 {
		v := []byte{0x01}
		if i < 3 {
			v = big
		}
		r.Fields[fmt.Sprintf("f%04d", i)] = Field{Stamp: Stamp{Wall: 1_764_720_000_000, Replica: replica}, Value: v}
	}
	c := PlanCompact("", slices.Values([]Record{r, r}))
	b := AppendRecordCompact(AppendHead(nil, majorArray, 1), r, c)
	if len(b) > MaxRecordBytes || len(AppendRecord(nil, r)) <= MaxRecordBytes {
		t.Fatalf("compact %d bytes, plain %d: the test needs one under the limit, one over", len(b), len(AppendRecord(nil, r)))
	}
	base, _ := c.Base()
	d, err := NewCompact("", c.Table(), &base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.DecodeRecords(b); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}
