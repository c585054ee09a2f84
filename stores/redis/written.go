package redis

import (
	"encoding/binary"
	"hash/maphash"
	"sync"
)

// writtenHeader is the size of an entry's header in the written cache's
// arena: the lengths of its collection (2 bytes), id (2) and blob (4).
const writtenHeader = 8

// writtenKey names a record in the written cache.
type writtenKey struct{ coll, id string }

// writtenCache keeps the blobs that this store's merge script calls left
// stored (doc.go, "# Merging in Go"), and each collection's head after
// them, so that the read before a round trip can skip the records and
// heads it holds. It may be stale: another instance, a purge, a repair or
// a restart may have changed a record since. That costs no correctness,
// because the script compares every record's stored blob with the one Go
// merged against, and merges a record that differs itself; the round trip
// then drops that record from the cache. A stale head only costs the
// foreseen seqs (the script puts the right ones in).
//
// The entries live in one byte arena used as a ring (the oldest entries
// are overwritten first), found by a map from a hash of their collection
// and id to their position. Neither holds a pointer, so the garbage
// collector does not mark them: a cache of 100,000 records held as a map
// of strings doubled the Go side's CPU per change in the collector alone
// (docs/benchmarks.md). A hash that two records share keeps the later
// one (each entry holds its collection and id, and a lookup checks them).
type writtenCache struct {
	mu    sync.Mutex
	arena []byte // entries: header, collection, id, blob; never across its end
	// next is the position of the next entry, counted from the first
	// ever written (its place in the arena is next modulo its length):
	// an entry at p is intact while p >= next - len(arena).
	next  uint64
	index map[uint64]uint64 // hash of collection and id -> position of its entry
	sweep int               // index's size at which dead positions are deleted
	seed  maphash.Seed
	heads map[string]int64
}

func newWrittenCache(maxBytes int) *writtenCache {
	return &writtenCache{arena: make([]byte, maxBytes), index: map[uint64]uint64{}, sweep: 1024,
		seed: maphash.MakeSeed(), heads: map[string]int64{}}
}

func (c *writtenCache) hash(k writtenKey) uint64 {
	return maphash.Comparable(c.seed, k)
}

// intact says an entry at position p has not been overwritten.
func (c *writtenCache) intact(p uint64) bool {
	return c.next <= uint64(len(c.arena)) || p >= c.next-uint64(len(c.arena))
}

// entry returns the blob of record k as the arena holds it (not a copy:
// the next put may overwrite it) and whether k is held; c.mu is held.
func (c *writtenCache) entry(k writtenKey) ([]byte, bool) {
	h := c.hash(k)
	p, ok := c.index[h]
	if !ok {
		return nil, false
	}
	if !c.intact(p) {
		delete(c.index, h)
		return nil, false
	}
	e := c.arena[p%uint64(len(c.arena)):]
	lc, li, lb := int(binary.BigEndian.Uint16(e)), int(binary.BigEndian.Uint16(e[2:])), int(binary.BigEndian.Uint32(e[4:]))
	e = e[writtenHeader:]
	if string(e[:lc]) != k.coll || string(e[lc:lc+li]) != k.id {
		return nil, false // another record of the same hash
	}
	return e[lc+li : lc+li+lb], true
}

// appendBlob appends the blob of record k to b if the cache holds it;
// c.mu is held.
func (c *writtenCache) appendBlob(b []byte, k writtenKey) ([]byte, bool) {
	blob, ok := c.entry(k)
	if !ok {
		return b, false
	}
	return append(b, blob...), true
}

// put keeps blob as record k's stored blob; c.mu is held. An entry larger
// than the arena is not kept (k is forgotten).
func (c *writtenCache) put(k writtenKey, blob string) {
	n := writtenHeader + len(k.coll) + len(k.id) + len(blob)
	size := uint64(len(c.arena))
	if n > len(c.arena) || len(k.coll) > 1<<16-1 || len(k.id) > 1<<16-1 {
		c.drop(k)
		return
	}
	if off := c.next % size; off+uint64(n) > size {
		c.next += size - off // no entry runs past the end
	}
	e := c.arena[c.next%size:]
	binary.BigEndian.PutUint16(e, uint16(len(k.coll)))
	binary.BigEndian.PutUint16(e[2:], uint16(len(k.id)))
	binary.BigEndian.PutUint32(e[4:], uint32(len(blob)))
	m := writtenHeader + copy(e[writtenHeader:], k.coll)
	m += copy(e[m:], k.id)
	copy(e[m:], blob)
	c.index[c.hash(k)] = c.next
	c.next += uint64(n)
	if len(c.index) >= c.sweep {
		// Positions overwritten since are deleted, so that the index
		// stays near the number of entries the arena holds.
		for h, p := range c.index {
			if !c.intact(p) {
				delete(c.index, h)
			}
		}
		c.sweep = max(1024, 2*len(c.index))
	}
}

// drop forgets record k; c.mu is held.
func (c *writtenCache) drop(k writtenKey) {
	delete(c.index, c.hash(k))
}

// len is the number of records held (tests).
func (c *writtenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, p := range c.index {
		if c.intact(p) {
			n++
		}
	}
	return n
}

// remember keeps in the written cache what the calls of a round trip left
// stored, in their order: for a call the script took as Go merged it, each
// record the script did not merge itself, as merged (or as read, when no
// change altered it), when its seqs are the ones Go foresaw, and the head
// after it; for any other call, it forgets the records it names and its
// collection's head.
func (s *Store) remember(calls []*scriptCall) {
	c := s.written
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, sc := range calls {
		p := sc.plan
		if p == nil || !sc.ok {
			for _, r := range sc.recs {
				c.drop(writtenKey{sc.coll, r.ID})
			}
			delete(c.heads, sc.coll)
			continue
		}
		// The seqs are as foreseen when every change that altered its
		// record got the next one after the head Go foresaw.
		foreseen := p.base >= 0 && len(sc.fell) == len(p.ids)
		changed := int64(0)
		for j, i := range sc.idx {
			if sc.fell != nil && sc.fell[p.at[j]] {
				foreseen = false
				break
			}
			if p.verdicts[j] == 1 {
				changed++
				if r := sc.req.results[i]; !r.Changed || r.Seq != uint64(p.base+changed) {
					foreseen = false
					break
				}
			}
		}
		for i, id := range p.ids {
			k := writtenKey{sc.coll, id}
			switch {
			case sc.fell != nil && sc.fell[i]:
				c.drop(k)
			case p.merged[i] != "":
				if foreseen {
					c.put(k, p.merged[i])
				} else {
					c.drop(k)
				}
			case p.kinds[i] == casReadable:
				c.put(k, p.raws[i])
			default:
				c.drop(k)
			}
		}
		switch {
		case !foreseen:
			delete(c.heads, sc.coll)
		case changed > 0:
			c.heads[sc.coll] = p.base + changed
		}
	}
}
