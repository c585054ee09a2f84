package redis

import (
	"context"
	"testing"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// TestMergeReplyRefuses: a reply of the merge script that is not of its
// shape (a Redis that is not ours, a script of another version) is an
// error, never a panic or a result out of the store's range.
func TestMergeReplyRefuses(t *testing.T) {
	s := &Store{} // mergeReply touches no field before it has checked the reply
	call := func() *scriptCall {
		return &scriptCall{req: &applyRequest{results: make([]stores.Result, 2)}, coll: "c", idx: []int{0, 1},
			recs: []crdt.Record{{ID: "a"}, {ID: "b"}}, args: []any{"ch", "c", 1, 2, 3, 2, "a", "blob-a", "b", "blob-b"}}
	}
	// A call merged in Go: two records, and the reply's extra item lists
	// those the script merged itself.
	planned := func() *scriptCall {
		c := call()
		c.plan = &casPlan{ids: []string{"a", "b"}, at: []int{0, 1}, lost: [][]string{{"g"}, nil}}
		return c
	}
	tail := func(lost any) []any { return []any{int64(0), "", []any{}, lost} }
	for _, tc := range []struct {
		name string
		out  []any
	}{
		{"short", []any{int64(1)}},
		{"not a seq", append([]any{"x", int64(2)}, tail([]any{})...)},
		{"seq past MaxSeq", append([]any{int64(MaxSeq + 1), int64(2)}, tail([]any{})...)},
		{"negative seq past MaxSeq", append([]any{int64(-MaxSeq - 1), int64(2)}, tail([]any{})...)},
		{"lowest int64", append([]any{int64(-1 << 63), int64(2)}, tail([]any{})...)},
		{"lost not a list", append([]any{int64(1), int64(2)}, tail("x")...)},
		{"lost of odd length", append([]any{int64(1), int64(2)}, tail([]any{int64(1)})...)},
		{"lost of change 0", append([]any{int64(1), int64(2)}, tail([]any{int64(0), "f"})...)},
		{"lost of change 3", append([]any{int64(1), int64(2)}, tail([]any{int64(3), "f"})...)},
		{"lost name not a string", append([]any{int64(1), int64(2)}, tail([]any{int64(1), int64(5)})...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.mergeReply(context.Background(), call(), tc.out); err == nil {
				t.Fatalf("reply %v accepted", tc.out)
			}
		})
	}
	for _, tc := range []struct {
		name string
		out  []any
	}{
		{"without the merged records", append([]any{int64(1), int64(2)}, tail([]any{})...)},
		{"merged records not a list", append(append([]any{int64(1), int64(2)}, tail([]any{})...), "x")},
		{"merged record 0", append(append([]any{int64(1), int64(2)}, tail([]any{})...), []any{int64(0)})},
		{"merged record 3", append(append([]any{int64(1), int64(2)}, tail([]any{})...), []any{int64(3)})},
		{"lost of a record Go merged", append(append([]any{int64(1), int64(2)}, tail([]any{int64(1), "f"})...), []any{int64(2)})},
	} {
		t.Run("planned/"+tc.name, func(t *testing.T) {
			if _, err := s.mergeReply(context.Background(), planned(), tc.out); err == nil {
				t.Fatalf("reply %v accepted", tc.out)
			}
		})
	}
	// The shape it does answer: change 1 altered its record (seq 7) and
	// lost field f, change 2 did not (its record at seq 3).
	c := call()
	head, err := s.mergeReply(context.Background(), c, append([]any{int64(7), int64(-3)}, tail([]any{int64(1), "f"})...))
	if err != nil || head != 7 {
		t.Fatalf("head %d, %v; want 7", head, err)
	}
	r := c.req.results
	if !r[0].Changed || r[0].Seq != 7 || len(r[0].Lost) != 1 || r[0].Lost[0] != "f" || r[1].Changed || r[1].Seq != 3 {
		t.Fatalf("results %+v", r)
	}
	// Planned: record a as Go merged it (its lost field g is Go's), record
	// b merged by the script (its lost field h is the script's).
	c = planned()
	head, err = s.mergeReply(context.Background(), c, append(append([]any{int64(7), int64(-3)}, tail([]any{int64(2), "h"})...), []any{int64(2)}))
	if err != nil || head != 7 {
		t.Fatalf("planned: head %d, %v; want 7", head, err)
	}
	r = c.req.results
	if !r[0].Changed || r[0].Seq != 7 || len(r[0].Lost) != 1 || r[0].Lost[0] != "g" || r[1].Changed || r[1].Seq != 3 || len(r[1].Lost) != 1 || r[1].Lost[0] != "h" {
		t.Fatalf("planned: results %+v", r)
	}
}
