package redis

import (
	"fmt"
	"strings"
	"testing"
)

// TestWrittenCacheRing checks the written cache's arena: entries are found
// with their blobs until newer ones overwrite them, oldest first; a record
// kept again has its new blob; no entry runs past the arena's end; an entry
// too large is not kept and forgets the record's older one; and the index
// does not grow with the entries overwritten.
func TestWrittenCacheRing(t *testing.T) {
	blob := func(id string, n int) string { return strings.Repeat(id, n) }
	entry := writtenHeader + len("x") + 1 + 10
	// Room for three entries and a part of a fourth: the fourth starts
	// again at the beginning.
	c := newWrittenCache(3*entry + entry/2)
	held := func(id string) (string, bool) {
		b, ok := c.appendBlob(nil, writtenKey{"x", id})
		return string(b), ok
	}
	want := func(wantLen int, present map[string]string, absent ...string) {
		t.Helper()
		if got := c.len(); got != wantLen {
			t.Fatalf("the cache holds %d records, want %d", got, wantLen)
		}
		for id, b := range present {
			if got, ok := held(id); !ok || got != b {
				t.Fatalf("record %s: got %q (held %v), want %q", id, got, ok, b)
			}
		}
		for _, id := range absent {
			if got, ok := held(id); ok {
				t.Fatalf("record %s: got %q, want it not held", id, got)
			}
		}
	}
	for _, id := range []string{"a", "b", "c"} {
		c.put(writtenKey{"x", id}, blob(id, 10))
	}
	want(3, map[string]string{"a": blob("a", 10), "b": blob("b", 10), "c": blob("c", 10)})
	c.put(writtenKey{"x", "d"}, blob("d", 10)) // at the start: overwrites a
	want(3, map[string]string{"b": blob("b", 10), "c": blob("c", 10), "d": blob("d", 10)}, "a")
	c.put(writtenKey{"x", "b"}, blob("B", 10)) // kept again: overwrites b's old entry
	want(3, map[string]string{"b": blob("B", 10), "c": blob("c", 10), "d": blob("d", 10)})
	c.put(writtenKey{"x", "c"}, blob("h", len(c.arena))) // too large: c is forgotten
	want(2, map[string]string{"b": blob("B", 10), "d": blob("d", 10)}, "c")
	c.drop(writtenKey{"x", "d"})
	want(1, map[string]string{"b": blob("B", 10)}, "d")
	if _, ok := c.appendBlob(nil, writtenKey{"y", "b"}); ok {
		t.Fatal("record b of collection y is held; only x's was kept")
	}

	// Many records through a small arena: the index keeps about the
	// entries the arena holds, not every one ever kept.
	for i := range 20_000 {
		c.put(writtenKey{"x", fmt.Sprintf("r%05d", i)}, blob("v", 10))
	}
	if n := len(c.index); n > 2048 {
		t.Fatalf("the index has %d positions after 20,000 entries through an arena of 3; want at most 2048", n)
	}
	if n := c.len(); n < 1 || n > 3 {
		t.Fatalf("the cache holds %d records after 20,000 through an arena of 3, want 1 to 3", n)
	}
	want(c.len(), map[string]string{"r19999": blob("v", 10)}, "r19990", "b")
}
