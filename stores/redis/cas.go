package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"
	"unsafe"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
)

// What a record was when Go read it, as the merge script's compare-and-set
// section says it (see merge.lua).
const (
	casAbsent   = 0 // no blob: the record does not exist
	casReadable = 1 // a blob Go decoded
	casDamaged  = 2 // a blob Go could not decode: the merge replaces it
)

// casInfoBytes is the size of one record's entry in the plan's info
// argument: its kind (casAbsent, ...) and its usage delta, a big-endian
// int32.
const casInfoBytes = 5

// casPlan is a script call's merge done in Go (doc.go, "# Merging in Go"):
// the stored blob of each record it names as Go read it, the merged blob,
// and what every change did.
type casPlan struct {
	ids  []string   // the call's records, in order of first appearance
	at   []int      // per change of the call, the index of its record in ids
	lost [][]string // per change, the fields it lost (crdt.LostFields)

	// What the records are after the call when the script takes them as
	// Go merged them, for the written cache: per record how Go read it
	// (casAbsent, ...), the blob read, the merged blob ('' when no change
	// altered it); per change its verdict; and the head foreseen before
	// the call (-1: none).
	kinds    []byte
	raws     []string
	merged   []string
	verdicts []byte
	base     int64
}

// roundValue is what a record is, as far as Go knows, after the calls of
// the round so far that name it: the blob Go merged it to (or read), or
// unknown when a call that names it went to the script without a plan.
type roundValue struct {
	blob  string
	known bool
	found bool // a blob: the record exists
}

// readStored reads, in one pipeline, the stored blobs of the records of
// every call in calls and the heads of their collections, and merges each
// call in Go (planCall). A call whose read failed, or whose merge planCall
// leaves to the script, is sent as it is: the script merges its changes
// (and reports the failure, if it lasts).
//
// It reads only what it does not know: a record that this store's script
// calls left as Go merged it is taken from the written cache, and a
// record that an earlier call of the same round names is taken as that
// call's plan leaves it (the script runs the calls in order); a head the
// cache holds is not read either. When nothing is left to read there is
// no pipeline. What is taken so may be stale; the script's comparison
// finds out, and merges such a record itself.
//
// Go also foresees the seqs: a collection's head as read, plus the changes
// that altered their records in the calls before, in pipeline order. The
// merged blobs carry the seqs so foreseen, and the script writes them as
// they are when the head is the one foreseen (no other writer came in
// between and every call before went as Go merged it); otherwise it puts
// the right seq into them.
func (s *Store) readStored(ctx context.Context, calls []*scriptCall) {
	if s.mergeInScript {
		for _, sc := range calls {
			sc.encodeBlobs()
		}
		return
	}
	type reading struct {
		vals  []any        // per record of the call: a blob, or nil (absent)
		from  []int8       // per record: 0 vals has it, 1 an earlier call of the round, 2 the read
		miss  []string     // the records read
		read  *goredis.Cmd // HMGET of miss
		whole bool         // every record is read (no cache)
	}
	plans := make([]*casPlan, len(calls))
	reads := make([]reading, len(calls))
	next := make(map[string]int64, 1) // the foreseen head; -1: none
	heads := map[string]*goredis.StringCmd{}
	// round holds the records of the round's calls so far: unknown until
	// the call that names them first is planned.
	var round map[writtenKey]roundValue
	if len(calls) > 1 {
		n := 0
		for _, sc := range calls {
			n += len(sc.recs)
		}
		round = make(map[writtenKey]roundValue, n)
	}
	var pipe goredis.Pipeliner
	// The blobs the written cache holds are copied into one buffer (the
	// arena's bytes may be overwritten once c.mu is let go), and made
	// strings once it is complete.
	type cachedAt struct{ call, rec, start, end int }
	var cached []byte
	var spans []cachedAt
	c := s.written
	if c != nil {
		c.mu.Lock()
	}
	var seen map[string]int // the records of a call so far, cleared for each
	for k, sc := range calls {
		p := &casPlan{at: make([]int, len(sc.recs)), ids: make([]string, 0, len(sc.recs))}
		if seen == nil {
			seen = make(map[string]int, len(sc.recs))
		} else {
			clear(seen)
		}
		for j, r := range sc.recs {
			i, ok := seen[r.ID]
			if !ok {
				i = len(p.ids)
				seen[r.ID] = i
				p.ids = append(p.ids, r.ID)
			}
			p.at[j] = i
		}
		plans[k] = p
		rd := &reads[k]
		rd.vals = make([]any, len(p.ids))
		rd.from = make([]int8, len(p.ids))
		for i, id := range p.ids {
			key := writtenKey{sc.coll, id}
			if round != nil {
				if _, ok := round[key]; ok {
					rd.from[i] = 1
					continue
				}
				round[key] = roundValue{}
			}
			if c != nil {
				start := len(cached)
				var ok bool
				if cached, ok = c.appendBlob(cached, key); ok {
					spans = append(spans, cachedAt{k, i, start, len(cached)})
					continue
				}
			}
			rd.from[i] = 2
			if rd.miss == nil {
				rd.miss = make([]string, 0, len(p.ids)-i)
			}
			rd.miss = append(rd.miss, id)
		}
		if _, ok := next[sc.coll]; !ok {
			next[sc.coll] = -1
			h, ok := int64(0), false
			if c != nil {
				h, ok = c.heads[sc.coll]
			}
			if ok {
				next[sc.coll] = h
			} else {
				if pipe == nil {
					pipe = s.client.Pipeline()
				}
				heads[sc.coll] = pipe.Get(ctx, s.seqKey(sc.coll))
			}
		}
		if len(rd.miss) > 0 {
			if pipe == nil {
				pipe = s.client.Pipeline()
			}
			rd.whole = len(rd.miss) == len(p.ids)
			s.commits.recordsRead.Add(uint64(len(rd.miss)))
			// As pipe.HMGet sends it, with the ids as pointers: a
			// string put in a []any allocates its header.
			args := make([]any, 2+len(rd.miss))
			args[0], args[1] = "hmget", s.recKey(sc.coll)
			for m := range rd.miss {
				args[2+m] = &rd.miss[m]
			}
			rd.read = pipe.Do(ctx, args...)
		}
	}
	if c != nil {
		c.mu.Unlock()
	}
	for _, sp := range spans {
		// cached is not written again.
		reads[sp.call].vals[sp.rec] = unsafe.String(unsafe.SliceData(cached[sp.start:sp.end]), sp.end-sp.start)
	}
	if pipe != nil {
		_, _ = pipe.Exec(ctx) // each read's error is in its own command
	}
	for coll, cmd := range heads {
		if v, err := cmd.Result(); errors.Is(err, goredis.Nil) {
			next[coll] = 0
		} else if h, perr := strconv.ParseInt(v, 10, 64); err == nil && perr == nil && h >= 0 && h < MaxSeq {
			next[coll] = h
		}
	}
	for k, sc := range calls {
		p, rd := plans[k], &reads[k]
		ok := true
		if rd.read != nil {
			stored, err := rd.read.Slice()
			if err != nil || len(stored) != len(rd.miss) {
				ok = false
			} else if rd.whole {
				rd.vals = stored
			} else {
				m := 0
				for i, f := range rd.from {
					if f == 2 {
						rd.vals[i] = stored[m]
						m++
					}
				}
			}
		}
		for i, f := range rd.from {
			if f == 1 && ok {
				v := round[writtenKey{sc.coll, p.ids[i]}]
				if !v.known {
					ok = false
				} else if v.found {
					rd.vals[i] = v.blob
				}
			}
		}
		changed := 0
		if ok {
			changed, ok = planCall(p, sc, rd.vals, next[sc.coll], s.maxRecordBytes)
		}
		if !ok {
			sc.encodeBlobs() // for the script's merge
			next[sc.coll] = -1
			for _, id := range p.ids {
				if round != nil {
					round[writtenKey{sc.coll, id}] = roundValue{}
				}
			}
			continue
		}
		p.base = next[sc.coll]
		if next[sc.coll] >= 0 {
			next[sc.coll] += int64(changed)
		}
		if round != nil {
			for i, id := range p.ids {
				v := roundValue{blob: p.raws[i], known: true, found: p.kinds[i] != casAbsent}
				if p.merged[i] != "" {
					v.blob, v.found = p.merged[i], true
				}
				round[writtenKey{sc.coll, id}] = v
			}
		}
		sc.plan = p
	}
}

// planCall merges the changes of call sc into the records as stored
// (HMGET's reply, in the order of p.ids) exactly as the merge script
// would, with crdt.Record.Merge, and fills p: per change whether it
// changed its record and the fields it lost, per record the blob read, the
// merged blob (with the seq it gets if the collection's head is base when
// the script runs; base -1: not foreseen) and the change in its encoded
// size, and appends the script's compare-and-set section to sc.args. It
// returns the number of changes that altered their records, and
// false, leaving the call to the script (sc.args as it was), when a merged record breaks
// crdt's limits as Go read it: the script checks them against the record
// as it is when it runs, and refuses the call with the error every store
// gives.
func planCall(p *casPlan, sc *scriptCall, stored []any, base int64, maxBytes int) (int, bool) {
	type rec struct {
		kind  byte
		raw   string
		state crdt.Record
		size  int    // the encoded size as read (0 unless readable)
		seq   uint64 // the seq foreseen for its last change
		dirty bool
		// shared: state is a change of the call itself (a record that
		// did not exist, and its first change, which has no delete:
		// merging it into the empty record gives the change), not a
		// copy: it is cloned before another change merges into it.
		shared bool
	}
	recs := make([]rec, len(p.ids))
	var buf []byte
	for i, id := range p.ids {
		r := &recs[i]
		r.state = crdt.Record{ID: id}
		raw, ok := stored[i].(string)
		if !ok {
			continue // nil: absent
		}
		r.raw = raw
		// The merge only reads the values, which share raw's memory.
		if _, state, err := decodeStringBlob(id, raw); err != nil {
			r.kind = casDamaged
		} else {
			r.kind, r.state = casReadable, state
			buf = crdt.AppendRecord(buf[:0], state)
			r.size = len(buf)
		}
	}
	verdicts := make([]byte, len(sc.recs))
	p.lost = make([][]string, len(sc.recs))
	changed := 0
	for j, change := range sc.recs {
		r := &recs[p.at[j]]
		if r.kind == casAbsent && !r.dirty && change.Deleted.IsZero() {
			// The first change of a record that does not exist:
			// Store.Apply took no field with the zero stamp
			// (checkRecord), so the merge would copy every field.
			if len(change.Fields) > 0 {
				r.state, r.shared = change, true
				verdicts[j] = 1
				changed++
				r.dirty = true
				if base >= 0 {
					r.seq = uint64(base + int64(changed))
				}
			}
			continue // lost nothing
		}
		if r.shared {
			r.state, r.shared = r.state.Clone(), false
		}
		if r.state.Merge(change) {
			verdicts[j] = 1
			changed++
			r.dirty = true
			if base >= 0 {
				r.seq = uint64(base + int64(changed))
			}
		}
		p.lost[j] = crdt.LostFields(change, r.state)
	}
	// The merged blobs go in one buffer, and the section's arguments at
	// the end of sc.args (scriptCalls left room), with no allocation per
	// record: the blob read is HMGET's reply as it is, the merged one a
	// pointer to p.merged's string.
	size := 0
	for i := range recs {
		if r := &recs[i]; r.dirty {
			if len(r.state.Fields) > crdt.MaxFieldsPerRecord {
				return 0, false
			}
			size += blobSize(r.state)
		}
	}
	blobs := make([]byte, 0, size)
	info := make([]byte, 0, casInfoBytes*len(recs))
	args := sc.args
	p.kinds = make([]byte, len(recs))
	p.raws = make([]string, len(recs))
	p.merged = make([]string, len(recs))
	foreseen := ""
	if base >= 0 {
		foreseen = strconv.FormatInt(base, 10)
	}
	args = append(args, foreseen, verdicts, nil) // info, below
	at := len(args) - 1
	for i := range recs {
		r := &recs[i]
		var delta int
		if r.dirty {
			buf = crdt.AppendRecord(buf[:0], r.state)
			if len(buf) > maxBytes {
				return 0, false
			}
			delta = len(buf) - r.size
			start := len(blobs)
			blobs = appendBlob(blobs, r.seq, r.state)
			// blobs is not written again where it is.
			p.merged[i] = unsafe.String(unsafe.SliceData(blobs[start:]), len(blobs)-start)
		}
		p.kinds[i], p.raws[i] = r.kind, r.raw
		info = append(info, r.kind)
		info = binary.BigEndian.AppendUint32(info, uint32(int32(delta)))
		args = append(args, stored[i], &p.merged[i]) // nil and "" are sent as ''
	}
	args[at] = info
	sc.args = args
	p.verdicts = verdicts
	return changed, true
}
