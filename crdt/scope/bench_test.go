package scope_test

import (
	"fmt"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
)

// BenchmarkMatch measures Match per record for a typical bound scope,
// owner == x or team in [3 values], over a page of records of five fields
// written as the clients write them (canonical CBOR values, 20-character
// ids), a third of which match.
func BenchmarkMatch(b *testing.B) {
	p, err := scope.Parse(`owner == $sub or team in ["red", "green", "blue"]`)
	if err != nil {
		b.Fatal(err)
	}
	if p, err = p.Bind(scope.Params{"sub": "user-0001"}); err != nil {
		b.Fatal(err)
	}
	page := make([]crdt.Record, 300)
	owners := []string{"user-0001", "user-0002", "user-0003"}
	teams := []string{"red", "yellow", "black"}
	for i := range page {
		values := map[string]any{
			"owner":  owners[i%3],
			"team":   teams[i/3%3],
			"title":  fmt.Sprintf("task number %d", i),
			"done":   i%2 == 0,
			"points": i,
		}
		r := crdt.Record{ID: fmt.Sprintf("01HZX%015d", i), Fields: map[string]crdt.Field{}}
		for name, v := range values {
			enc, err := crdt.EncodeValue(v)
			if err != nil {
				b.Fatal(err)
			}
			r.Fields[name] = crdt.Field{Stamp: crdt.Stamp{Wall: 1_700_000_000_000 + int64(i), Replica: "replica-7"}, Value: enc}
		}
		page[i] = r
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; b.Loop(); i++ {
		if p.Match(page[i%len(page)]) {
			n++
		}
	}
	if n == 0 {
		b.Fatal("nothing matched")
	}
}
