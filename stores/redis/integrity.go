package redis

import (
	"context"
	_ "embed"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
)

// Stats are the store's counters since it was opened: what it found
// damaged and repaired, and what capture did. Operators export them as
// metrics; every event counted is also logged.
type Stats struct {
	// Corrupt counts damaged data met by a call: a key of the wrong type,
	// an unreadable record, a log entry without its record, an unreadable
	// head. Each such call failed with stores.ErrCorrupt, except the
	// writes that repaired a record (also in RecordsReplaced) and the
	// calls that repaired a head (also in HeadRepairs).
	Corrupt uint64
	// HeadRepairs counts heads found unreadable or below the highest
	// sequence number in the log, and set right.
	HeadRepairs uint64
	// RecordsReplaced counts unreadable records that a write replaced.
	RecordsReplaced uint64
	// Captured counts captured changes the sink applied (or found
	// already applied); CaptureRefused those it refused for good;
	// CaptureSkipped keys or fields capture cannot turn into a change (a
	// key that is not a hash, an invalid record id or field name).
	Captured, CaptureRefused, CaptureSkipped uint64
	// CaptureParked is the number of keys parked now: keys of collections
	// whose captured changes the sink fails (and only theirs), held back
	// and retried while capture goes on for the others (park.go). Each
	// is listed by ParkedCaptures.
	CaptureParked uint64
	// Mirrored counts records written back into plain hashes.
	Mirrored uint64
}

type counters struct {
	corrupt, headRepairs, replaced         atomic.Uint64
	captured, captureRefused, captureSkips atomic.Uint64
	mirrored                               atomic.Uint64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	c := &s.stats
	var parked uint64
	if s.capture != nil {
		parked = s.capture.parkedKeys()
	}
	return Stats{
		CaptureParked: parked,
		Corrupt:       c.corrupt.Load(), HeadRepairs: c.headRepairs.Load(), RecordsReplaced: c.replaced.Load(),
		Captured: c.captured.Load(), CaptureRefused: c.captureRefused.Load(), CaptureSkipped: c.captureSkips.Load(),
		Mirrored: c.mirrored.Load(),
	}
}

var _ stores.CaptureCounter = (*Store)(nil)

// CaptureCounts implements stores.CaptureCounter, from the counters Stats
// shows: Captured, CaptureRefused and CaptureSkipped. The store parks
// keys, not writes: nothing overflows, and parked bytes are not measured.
func (s *Store) CaptureCounts() stores.CaptureCounts {
	c := &s.stats
	return stores.CaptureCounts{Applied: c.captured.Load(), Refused: c.captureRefused.Load(), Unmappable: c.captureSkips.Load()}
}

// corruptLog keeps the log to one line per damaged thing and minute: a
// damaged record that every client's pull reaches would flood it.
type corruptLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (l *corruptLog) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if t, ok := l.last[key]; ok && now.Sub(t) < time.Minute {
		return false
	}
	if l.last == nil || len(l.last) > 10000 {
		l.last = map[string]time.Time{}
	}
	l.last[key] = now
	return true
}

// corrupt counts and logs damaged data: of record id of coll, or
// (empty names) of a key the error names.
func (s *Store) corrupt(coll, id string, err error) {
	s.stats.corrupt.Add(1)
	if s.corruptLog.allow(coll + "/" + id + "/" + err.Error()) {
		s.log.Error("corrupt data in Redis: repair with the next write to the record or convergo repair",
			"collection", coll, "record", id, "err", err)
	}
}

// checkHead handles what the merge and head scripts found of the head:
// state 1 unreadable (raw), 2 below the log's highest seq; both scripts
// have set it to head. Seqs are never handed out twice, but readers may
// have read the wrong head, and something wrote into the store's keys: the
// collection starts a new epoch, history lost.
func (s *Store) checkHead(ctx context.Context, coll string, state int64, raw string, head uint64) {
	if state == 0 {
		return
	}
	s.stats.headRepairs.Add(1)
	s.stats.corrupt.Add(1)
	what := "unreadable"
	if state == 2 {
		what = "below the log's highest sequence number (set back)"
	}
	s.log.Error("corrupt head in Redis, set right from the log; new epoch", "collection", coll, "head", raw, "problem", what, "now", head)
	s.bumpAfterDamage(ctx, coll)
}

// replacedDamaged reports records whose stored state was unreadable and
// that a write replaced: their earlier fields are lost, so the collection
// starts a new epoch, history lost, and clients give back what they hold.
func (s *Store) replacedDamaged(ctx context.Context, coll string, ids []any) {
	for _, v := range ids {
		id, _ := v.(string)
		s.stats.replaced.Add(1)
		s.stats.corrupt.Add(1)
		s.log.Error("corrupt record in Redis replaced by a write; its earlier fields are lost; new epoch", "collection", coll, "record", id)
	}
	s.bumpAfterDamage(ctx, coll)
}

func (s *Store) bumpAfterDamage(ctx context.Context, coll string) {
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serverCheckTimeout)
	defer cancel()
	if err := s.BumpEpoch(bctx, coll, stores.HistoryLost); err != nil {
		s.log.Error("new epoch after damage", "collection", coll, "err", err)
	}
}

// headScript reads a collection's head and repairs it when it is
// unreadable or below the highest seq in the log. KEYS[1] the head,
// KEYS[2] the log. Returns {head, state, raw}: state 0 sound, 1
// unreadable, 2 set back.
var headScript = goredis.NewScript(`
for i, want in ipairs({'string', 'zset'}) do
  local t = redis.call('TYPE', KEYS[i]).ok
  if t ~= 'none' and t ~= want then
    error('convergo:corrupt key ' .. KEYS[i] .. ' is a ' .. t .. ', not a ' .. want)
  end
end
local raw = redis.call('GET', KEYS[1])
local head, state = 0, 0
if raw then
  if string.match(raw, '^%d+$') then head = tonumber(raw) else state = 1 end
end
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) > head then
  if state == 0 then state = 2 end
  head = tonumber(top[2])
end
if state ~= 0 then redis.call('SET', KEYS[1], string.format('%.0f', head)) end
return {head, state, raw or ''}`)

//go:embed repair.lua
var repairSource string

var repairScript = goredis.NewScript(withPrelude(repairSource, sizeSource))

// RepairReport says what Repair did.
type RepairReport = stores.RepairReport

// Repair rebuilds a collection's log and head from its records: the
// operator's tool (convergo repair) for damage the next write cannot
// heal, a log or head of the wrong type, log entries without records. It
// runs one script, which blocks Redis meanwhile (on the order of a
// second per 100,000 records), and
//
//   - drops unreadable records (counted in Lost) and keys of the wrong
//     type;
//   - gives every record a new sequence number above every one handed out
//     before (the old head, the log's highest score, every record's own),
//     in the order of their old ones, and writes the log and the head;
//   - then starts a new epoch of the collection: Rebuilt when every
//     record was kept, HistoryLost when some were lost, so readers pull
//     again from the start (and give back what they hold after a loss).
func (s *Store) Repair(ctx context.Context, coll string) (RepairReport, error) {
	if err := s.begin(ctx); err != nil {
		return RepairReport{}, err
	}
	if err := stores.CheckCollection(coll); err != nil {
		return RepairReport{}, err
	}
	keys := s.writeKeys(coll)
	// The script goes to the node whose run was checked, not on through a
	// redirect: rebuilt on a node that took the slot over unchecked (which
	// may lack the last writes), the log's new epoch would say Rebuilt
	// where the history was lost.
	var out []int64
	err := s.onSlotMaster(ctx, coll, func(node goredis.UniversalClient) error {
		var err error
		if out, err = repairScript.Run(ctx, node, keys, uint64(MaxSeq)).Int64Slice(); err != nil {
			return s.fail(ctx, "repair "+coll, err)
		}
		return nil
	})
	if err != nil {
		return RepairReport{}, err
	}
	if len(out) != 3 {
		return RepairReport{}, fmt.Errorf("repair %s: script returned %v", coll, out)
	}
	rep := RepairReport{Records: int(out[0]), Lost: int(out[1]), Head: uint64(out[2])}
	cause := stores.Rebuilt
	if rep.Lost > 0 {
		cause = stores.HistoryLost
	}
	s.log.Warn("repaired collection", "collection", coll, "records", rep.Records, "lost", rep.Lost, "head", rep.Head)
	if err := s.BumpEpoch(ctx, coll, cause); err != nil {
		return rep, fmt.Errorf("repair %s: rebuilt, but the new epoch failed (run repair again): %w", coll, err)
	}
	if rep.Head > 0 {
		s.watchers.Notify(stores.Notification{Collection: coll, Seq: rep.Head})
	}
	return rep, nil
}
