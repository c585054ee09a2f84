package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"strconv"

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
	args []any      // the script's compare-and-set section
}

// readStored reads, in one pipeline, the stored blobs of the records of
// every call in calls and the heads of their collections, and merges each
// call in Go (planCall). A call whose read failed, or whose merge planCall
// leaves to the script, is sent as it is: the script merges its changes
// (and reports the failure, if it lasts).
//
// Go also foresees the seqs: a collection's head as read, plus the changes
// that altered their records in the calls before, in pipeline order. The
// merged blobs carry the seqs so foreseen, and the script writes them as
// they are when the head is the one foreseen (no other writer came in
// between and every call before went as Go merged it); otherwise it puts
// the right seq into them.
func (s *Store) readStored(ctx context.Context, calls []*scriptCall) {
	if s.mergeInScript {
		return
	}
	pipe := s.client.Pipeline()
	plans := make([]*casPlan, len(calls))
	heads := map[string]*goredis.StringCmd{}
	for k, sc := range calls {
		p := &casPlan{at: make([]int, len(sc.recs))}
		seen := make(map[string]int, len(sc.recs))
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
		if heads[sc.coll] == nil {
			heads[sc.coll] = pipe.Get(ctx, s.seqKey(sc.coll))
		}
		sc.read = pipe.HMGet(ctx, s.recKey(sc.coll), p.ids...)
	}
	_, _ = pipe.Exec(ctx)                      // each read's error is in its own command
	next := make(map[string]int64, len(heads)) // the foreseen head; -1: none
	for coll, cmd := range heads {
		next[coll] = -1
		if v, err := cmd.Result(); errors.Is(err, goredis.Nil) {
			next[coll] = 0
		} else if h, perr := strconv.ParseInt(v, 10, 64); err == nil && perr == nil && h >= 0 && h < MaxSeq {
			next[coll] = h
		}
	}
	for k, sc := range calls {
		stored, err := sc.read.Result()
		sc.read = nil
		if err != nil || len(stored) != len(plans[k].ids) {
			next[sc.coll] = -1
			continue
		}
		changed, ok := planCall(plans[k], sc, stored, next[sc.coll], s.maxRecordBytes)
		if !ok {
			next[sc.coll] = -1
			continue
		}
		if next[sc.coll] >= 0 {
			next[sc.coll] += int64(changed)
		}
		sc.plan = plans[k]
		sc.args = append(sc.args, plans[k].args...)
	}
}

// planCall merges the changes of call sc into the records as stored
// (HMGET's reply, in the order of p.ids) exactly as the merge script
// would, with crdt.Record.Merge, and fills p: per change whether it
// changed its record and the fields it lost, per record the blob read, the
// merged blob (with the seq it gets if the collection's head is base when
// the script runs; base -1: not foreseen) and the change in its encoded
// size. It returns the number of changes that altered their records, and
// false, leaving the call to the script, when a merged record breaks
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
		if _, state, err := decodeBlob(id, []byte(raw)); err != nil {
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
	info := make([]byte, 0, casInfoBytes*len(recs))
	p.args = make([]any, 0, 3+2*len(recs))
	foreseen := ""
	if base >= 0 {
		foreseen = strconv.FormatInt(base, 10)
	}
	p.args = append(p.args, foreseen, verdicts, nil) // info, below
	for i := range recs {
		r := &recs[i]
		var delta int
		var merged []byte
		if r.dirty {
			if len(r.state.Fields) > crdt.MaxFieldsPerRecord {
				return 0, false
			}
			buf = crdt.AppendRecord(buf[:0], r.state)
			if len(buf) > maxBytes {
				return 0, false
			}
			delta = len(buf) - r.size
			merged = encodeBlob(r.seq, r.state)
		}
		info = append(info, r.kind)
		info = binary.BigEndian.AppendUint32(info, uint32(int32(delta)))
		p.args = append(p.args, r.raw, merged)
	}
	p.args[2] = info
	return changed, true
}
