package redis

import (
	"strings"
	"sync"
)

// writtenEntryBytes is what one entry of the written cache is counted at
// beside its id and blob: the map's slot, the key's collection header and
// the strings' headers.
const writtenEntryBytes = 64

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
type writtenCache struct {
	mu    sync.Mutex
	max   int // bytes of ids and blobs, each entry also counted at writtenEntryBytes
	size  int
	blobs map[writtenKey]string
	heads map[string]int64
}

func newWrittenCache(maxBytes int) *writtenCache {
	return &writtenCache{max: maxBytes, blobs: map[writtenKey]string{}, heads: map[string]int64{}}
}

func entryBytes(k writtenKey, blob string) int {
	return len(k.id) + len(blob) + writtenEntryBytes
}

// put keeps blob as record k's stored blob; c.mu is held. A record held
// already has its blob replaced in place; an entry that would not fit at
// all is not kept; otherwise entries picked at random (Go's map order)
// make room.
func (c *writtenCache) put(k writtenKey, blob string) {
	n := entryBytes(k, blob)
	if old, ok := c.blobs[k]; ok {
		if c.size-entryBytes(k, old)+n <= c.max {
			c.size += n - entryBytes(k, old)
			c.blobs[k] = blob
			return
		}
		c.drop(k)
	}
	if n > c.max {
		return
	}
	for c.size+n > c.max {
		for old, b := range c.blobs {
			c.size -= entryBytes(old, b)
			delete(c.blobs, old)
			break
		}
	}
	c.blobs[k] = blob
	c.size += n
}

// drop forgets record k; c.mu is held.
func (c *writtenCache) drop(k writtenKey) {
	if b, ok := c.blobs[k]; ok {
		c.size -= entryBytes(k, b)
		delete(c.blobs, k)
	}
}

// len is the number of records held (tests).
func (c *writtenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.blobs)
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
					// A copy: the call's merged blobs share one buffer,
					// which an entry alone would keep.
					c.put(k, strings.Clone(p.merged[i]))
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
