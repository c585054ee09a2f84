package crdt

import (
	"fmt"
	"testing"
)

func benchRecord(id string, fields int, wall int64, replica string) Record {
	r := Record{ID: id, Fields: make(map[string]Field, fields)}
	for i := range fields {
		v, _ := EncodeValue(fmt.Sprintf("value %d of %s", i, id))
		r.Fields[fmt.Sprintf("field%02d", i)] = Field{Stamp: Stamp{Wall: wall + int64(i), Replica: replica}, Value: v}
	}
	return r
}

// BenchmarkMerge10 merges a 10-field record into another where half the
// fields win.
func BenchmarkMerge10(b *testing.B) {
	base := benchRecord("r", 10, 1_000, "a")
	delta := benchRecord("r", 10, 1_005, "b")
	b.ReportAllocs()
	for b.Loop() {
		r := base.Clone()
		r.Merge(delta)
	}
}

func benchBatch(n int) []Change {
	cs := make([]Change, n)
	for i := range cs {
		cs[i] = Change{Collection: "todos", Record: benchRecord(fmt.Sprintf("todo-%d", i), 10, 1_732_464_000_000, "replica-1")}
	}
	return cs
}

func BenchmarkEncodeBatch1000(b *testing.B) {
	cs := benchBatch(1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeChanges(cs); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBatch1000(b *testing.B) {
	data, err := EncodeChanges(benchBatch(1000))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeChanges(data); err != nil {
			b.Fatal(err)
		}
	}
}
