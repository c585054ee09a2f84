package scope_test

import (
	"fmt"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
)

func ExampleParse() {
	p, err := scope.Parse(`team in $claims.teams or owner == $sub`)
	if err != nil {
		panic(err)
	}
	fmt.Println(p)
	fmt.Println(p.Params(), p.Fields(), p.Bound())

	bound, err := p.Bind(scope.Params{
		"sub":    "alice",
		"claims": map[string]any{"teams": []any{"red", "blue"}},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(bound)
	// Output:
	// owner == $sub or team in $claims.teams
	// [claims.teams sub] [owner team] false
	// owner == "alice" or team in ["red", "blue"]
}

func ExamplePred_Match() {
	// The server's rule for the collection, and the client's filter.
	rule, _ := scope.Parse(`owner == $sub or members has $sub`)
	filter, _ := scope.Parse(`status in ["open", "doing"]`)
	s, err := scope.And(rule, filter).Bind(scope.Params{"sub": "alice"})
	if err != nil {
		panic(err)
	}

	at := crdt.Stamp{Wall: 1, Replica: "r1"}
	record := func(fields map[string]any) crdt.Record {
		r := crdt.Record{ID: "t1", Fields: map[string]crdt.Field{}}
		for name, v := range fields {
			b, _ := crdt.EncodeValue(v)
			r.Fields[name] = crdt.Field{Stamp: at, Value: b}
		}
		return r
	}
	mine := record(map[string]any{"owner": "alice", "status": "open"})
	shared := record(map[string]any{"owner": "bob", "members": []string{"alice"}, "status": "doing"})
	done := record(map[string]any{"owner": "alice", "status": "done"})
	deleted := mine.Clone()
	deleted.Merge(crdt.DeleteRecord("t1", crdt.Stamp{Wall: 2, Replica: "r1"}))

	fmt.Println(s)
	fmt.Println(s.Match(mine), s.Match(shared), s.Match(done), s.Match(deleted))
	// Output:
	// status in ["open", "doing"] and (owner == "alice" or members has "alice")
	// true true false false
}
