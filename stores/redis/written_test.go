package redis

import (
	"strings"
	"testing"
)

// TestWrittenCacheBound checks the cache's byte count as records are
// kept, replaced in place, dropped and evicted, and that it never holds
// more than its bound.
func TestWrittenCacheBound(t *testing.T) {
	c := newWrittenCache(3 * (1 + 10 + writtenEntryBytes))
	count := func() int {
		n := 0
		for k, b := range c.blobs {
			n += entryBytes(k, b)
		}
		return n
	}
	check := func(wantLen int) {
		t.Helper()
		if len(c.blobs) != wantLen || c.size != count() || c.size > c.max {
			t.Fatalf("%d records, size %d (counted %d, bound %d); want %d records", len(c.blobs), c.size, count(), c.max, wantLen)
		}
	}
	blob := strings.Repeat("b", 10)
	for _, id := range []string{"a", "b", "c"} {
		c.put(writtenKey{"x", id}, blob)
	}
	check(3)
	c.put(writtenKey{"x", "a"}, "short") // in place
	check(3)
	if c.blobs[writtenKey{"x", "a"}] != "short" {
		t.Fatalf("a is %q, want short", c.blobs[writtenKey{"x", "a"}])
	}
	c.put(writtenKey{"x", "a"}, strings.Repeat("l", 15)) // grows past the bound: another goes
	check(2)
	c.put(writtenKey{"x", "d"}, blob) // a new one: another goes if needed
	if _, ok := c.blobs[writtenKey{"x", "d"}]; !ok {
		t.Fatal("d is not kept")
	}
	check(len(c.blobs))
	c.put(writtenKey{"x", "e"}, strings.Repeat("h", c.max)) // never fits
	if _, ok := c.blobs[writtenKey{"x", "e"}]; ok {
		t.Fatal("a blob larger than the bound is kept")
	}
	check(len(c.blobs))
	c.drop(writtenKey{"x", "d"})
	c.drop(writtenKey{"x", "zz"})
	check(len(c.blobs))
}
