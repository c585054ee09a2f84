package dynamodb

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
)

// Resharding: changing a collection's K is rebuilding its log. Every record
// goes into the log shard its id falls in under the new K, with new
// sequence numbers (numbered anew per shard), so no cursor of the old logs
// means anything in the new ones: the rebuild ends with a new epoch of
// cause stores.Rebuilt, and readers pull again from the start (the engine
// resets a cursor whose epoch or K differs).
//
// The source of truth is the record items (~r#COLL#ID), which do not
// depend on K; the logs are derived from them. Reshard runs in steps, each
// of which a crash may interrupt and a second run repeats:
//
//  1. Fence. The epoch item gets rs = K' (the target) and rr, a token of
//     the run, and every head item of the collection (~h#COLL and ~h#COLL#I
//     for every I < MaxShards, created when absent) gets rs too. Every
//     write of the rebuild from here on (the heads' fence included) is in a
//     transaction with a condition check on the epoch item: rs = K' and rr
//     this run's. A second run (an operator's retry while the first is
//     still going) takes the fence over by writing its own rr, so that the
//     first writes nothing more: without it, a first run let go after the
//     second finished would delete the rebuilt log and put the heads back
//     under writers, without a new epoch, and hand out seqs that readers
//     had already passed. Every transaction's head condition
//     requires that rs be absent, and a head or epoch item carrying it
//     reads as errResharding (stores.ErrUnavailable: retry later), so from
//     here on no writer commits: one with a cached head is cancelled and
//     sees the fence; one routing afresh reads it on the epoch item.
//  2. Delete every log entry of every log partition of the collection (the
//     old logs, and what an interrupted run wrote of the new ones).
//  3. Read every record item of the collection (a strongly consistent
//     Scan: records have one partition each, and only a Scan finds them
//     all; the rebuild is rare and the Scan reads the table once).
//     RepairAll fences and empties every collection first and reads the
//     record items of all of them with one Scan (scanRecords).
//  4. Number the records per new shard in id order, and write each its
//     log entry and its new seq on the record item. Records are kept in
//     memory up to rebuildBufferBytes (of every collection of the Scan
//     together); past it, those kept are numbered and written (in id
//     order among them, after those written before) and let go. A record
//     item that holds no readable record (readableRecord) is deleted
//     instead, in a transaction that marks the fence (attrRebuildLost),
//     and counted in the report's Lost: step 6 then starts the epoch
//     with cause HistoryLost, whichever run gets there.
//  5. Put the new heads (head, usage, k; for K' > 1 the marker ~h#COLL
//     {head 0, k}). Head items beyond the new shards keep their fence, so
//     a writer still routing by the old K is refused there too, forgets
//     its K and reads the new one.
//  6. On the epoch item, in one update conditioned on the fence (and on
//     n as read, like every bump): k = K' (removed for K' = 1), rs
//     removed, n raised to stores.NextEpoch (the Rebuilt epoch).
//
// Writers are refused (ErrUnavailable) from step 1 to step 6; the rebuild
// writes about four items per record. It is an operator's command
// (convergo store reshard), run while the collection may be written: the
// fence keeps writers out, and their clients retry.
//
// Repair (convergo repair) is the same rebuild with K' the collection's
// current K (or, when a rebuild to some K' is unfinished, that K'): the
// remedy for a log that lacks entries of records the record items hold. A
// table restored from a backup can hold such a record item: DynamoDB's
// backups keep no transaction's items together, so a backup may hold a
// record item written by a commit and its log partition from before the
// commit, whose old entry the commit deleted. A reader never pulls that
// record, and a client's give-back of it is answered duplicate (the record
// item holds it already), so no write heals it: the client reports
// client.ErrNotHealed. The rebuild lists every record item in the new log.

// attrResharding marks the epoch item and the head items of a collection
// whose log is being rebuilt (N: the target K).
const attrResharding = "rs"

// attrReshardRun is the token of the run of Reshard that holds the fence
// (S, on the epoch item beside rs): only that run writes.
const attrReshardRun = "rr"

// errRebuildLost is the new epoch of a rebuild finding the fence marked
// by a run that dropped records (attrRebuildLost): it is then HistoryLost.
var errRebuildLost = errors.New("the rebuild dropped unreadable records")

// attrRebuildOp and attrRebuildSince say, beside the fence on the epoch
// item and the head items, which operation of the rebuild (reshard,
// repair) set it and when (N, Unix seconds of Config.Now): the fenced
// collection's error names them (fencedError).
const (
	attrRebuildOp    = "ro"
	attrRebuildSince = "rt"
)

// rebuildCommands names the commands that run each operation of the
// rebuild, for the fenced collection's error.
var rebuildCommands = map[string]string{
	"reshard": "convergo store reshard",
	"repair":  "convergo repair or convergo store mark-restored",
}

// fencedError is the error of a collection whose log is being rebuilt,
// read on its fenced epoch or head item. It is stores.ErrFenced, and
// errOtherShards: writers forget the collection's K and read it again on
// their retry. It names the operation and since when, and what to do when
// that operation no longer runs: a fence stays until a run finishes it.
func fencedError(item map[string]types.AttributeValue) error {
	by := "convergo store reshard, convergo repair or convergo store mark-restored"
	if op, ok := item[attrRebuildOp].(*types.AttributeValueMemberS); ok && rebuildCommands[op.Value] != "" {
		by = rebuildCommands[op.Value]
	}
	since := "a time not recorded"
	if at, err := getN(item, attrRebuildSince); err == nil && at <= math.MaxInt64 {
		since = time.Unix(int64(at), 0).UTC().Format(time.RFC3339)
	}
	return fenced(fmt.Sprintf("%v (%s, since %s): its writers and readers are refused until that finishes; if it no longer runs, it was interrupted: run it again", stores.ErrFenced, by, since))
}

// fenced is fencedError's error: its message alone, wrapping both.
type fenced string

func (e fenced) Error() string   { return string(e) }
func (e fenced) Unwrap() []error { return []error{errOtherShards, stores.ErrFenced} }

// Reshard rebuilds coll's log into k shards and starts a new epoch of
// cause stores.Rebuilt (see above). A collection already of k shards is
// left alone. Run again after an interruption, it finishes the rebuild;
// asked for another k while a rebuild to some K' is unfinished, it
// refuses.
func (st *Store) Reshard(ctx context.Context, coll string, k int) error {
	if err := st.check(ctx); err != nil {
		return err
	}
	if err := stores.CheckCollection(coll); err != nil {
		return err
	}
	if err := stores.CheckShards(k); err != nil {
		return err
	}
	_, err := st.rebuild(ctx, "reshard", coll, k)
	return err
}

// Repair rebuilds coll's log and heads from its record items under its
// current K (see above) and starts a new epoch of cause stores.Rebuilt:
// readers pull again from the start, every record once. Run again after
// an interruption, it finishes the rebuild; a rebuild to some K' left
// unfinished by Reshard it finishes to K'. A record item that holds no
// readable record (as a pull reads it) is deleted and counted in the
// report's Lost, and the new epoch is then of cause HistoryLost, so that
// clients give back what they hold, as Redis's Repair does. It is safe on
// a healthy collection (nothing is lost; readers pull everything again).
func (st *Store) Repair(ctx context.Context, coll string) (stores.RepairReport, error) {
	if err := st.check(ctx); err != nil {
		return stores.RepairReport{}, err
	}
	if err := stores.CheckCollection(coll); err != nil {
		return stores.RepairReport{}, err
	}
	return st.rebuild(ctx, "repair", coll, 0)
}

// rebuild runs the rebuild of coll's log into k shards (steps 1 to 6
// above) for op (reshard, repair). k = 0 is the collection's current K,
// or the target of an unfinished rebuild, and always rebuilds; a k that
// is the collection's K already (no rebuild unfinished) does nothing.
func (st *Store) rebuild(ctx context.Context, op, coll string, k int) (stores.RepairReport, error) {
	r, _, err := st.startRebuild(ctx, op, coll, k)
	if err != nil || r == nil {
		return stores.RepairReport{}, err
	}
	if err := st.scanRecords(ctx, op+" "+coll, map[string]*rebuildRun{coll: r}, recordPK(coll, "")); err != nil {
		return stores.RepairReport{}, err
	}
	return st.finishRebuild(ctx, r)
}

// rebuildRun is one collection's rebuild in progress: its fence, the new
// shards as numbered so far (step 4), and the records read and not yet
// numbered and written (see scanRecords).
type rebuildRun struct {
	f       fence
	kv      types.AttributeValue
	shards  []rebuildShard
	pending []storedRecord
	held    int // the pending records' size
	recs    int
	lost    int // record items dropped as unreadable
}

// rebuildShard is a new shard of a rebuild: its head and usage so far.
type rebuildShard struct {
	head  uint64
	usage stores.Usage
}

// recordsPrefix begins the key of every record item (~r#).
var recordsPrefix = strings.TrimSuffix(recordPK("", ""), "#")

// rebuildBufferBytes bounds the records a Scan of the records holds for
// every collection it rebuilds (see scanRecords). A variable for the
// tests, which make it small.
var rebuildBufferBytes = 32 << 20

// startRebuild decides the target of coll's rebuild (see rebuild: nil
// when there is nothing to do), fences the collection (step 1) and
// deletes every entry of every log partition of it (step 2).
func (st *Store) startRebuild(ctx context.Context, op, coll string, k int) (r *rebuildRun, fenced bool, err error) {
	out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{TableName: &st.table, Key: key(epochPK(coll), 0), ConsistentRead: ptr(true)}, st.dbOpt)
	if err != nil {
		return nil, false, translate(ctx, op+" "+coll, err)
	}
	if rs, ok := out.Item[attrResharding]; ok {
		v, err := getN(out.Item, attrResharding)
		if err == nil && k == 0 && stores.CheckShards(int(v)) == nil && v <= stores.MaxShards {
			k = int(v)
		}
		if err != nil || v != uint64(k) {
			return nil, false, fmt.Errorf("%s %s: %w: a rebuild to %v shards is unfinished; finish it first", op, coll, stores.ErrInvalid, rs)
		}
	} else {
		cur, err := shardsInItem(out.Item)
		if err != nil {
			return nil, false, fmt.Errorf("%s %s: %w", op, coll, err)
		}
		if k == 0 {
			k = cur.k
		} else if cur.k == k {
			return nil, false, nil
		}
	}
	kv := n(uint64(k))
	f := fence{op: op, coll: coll, k: k, run: st.bumpToken()}

	// 1. Fence.
	at := n(uint64(max(st.epochNow().Unix(), 0)))
	if _, err := st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
		TableName: &st.table, Key: key(epochPK(coll), 0),
		UpdateExpression:    ptr("SET #rs = :k, #rr = :run, #cvg = :one, #ro = :op, #rt = :at"),
		ConditionExpression: ptr("attribute_not_exists(#rs) OR #rs = :k"),
		ExpressionAttributeNames: map[string]string{"#rs": attrResharding, "#rr": attrReshardRun, "#cvg": attrCvg,
			"#ro": attrRebuildOp, "#rt": attrRebuildSince},
		ExpressionAttributeValues: map[string]types.AttributeValue{":k": kv, ":run": s(f.run), ":one": n(1),
			":op": s(op), ":at": at},
	}, st.dbOpt); err != nil {
		return nil, false, translate(ctx, op+" "+coll+": fence", err)
	}
	heads := []string{headPK(coll)}
	for i := range stores.MaxShards {
		heads = append(heads, logRef{coll: coll, shard: i, shards: stores.MaxShards}.headPK())
	}
	var fences []types.TransactWriteItem
	for _, pk := range heads {
		fences = append(fences, types.TransactWriteItem{Update: &types.Update{
			TableName: &st.table, Key: key(pk, 0),
			UpdateExpression:          ptr("SET #rs = :k, #cvg = :one, #ro = :op, #rt = :at"),
			ExpressionAttributeNames:  map[string]string{"#rs": attrResharding, "#cvg": attrCvg, "#ro": attrRebuildOp, "#rt": attrRebuildSince},
			ExpressionAttributeValues: map[string]types.AttributeValue{":k": kv, ":one": n(1), ":op": s(op), ":at": at},
		}})
	}
	if err := st.writeAll(ctx, f, fences, nil); err != nil {
		return nil, true, err
	}
	st.forgetShards(coll)

	// 2. Every log entry of every log partition goes.
	logs := []string{logPK(coll)}
	for i := range stores.MaxShards {
		logs = append(logs, logRef{coll: coll, shard: i, shards: stores.MaxShards}.logPK())
	}
	var dels []types.TransactWriteItem
	for _, pk := range logs {
		var start map[string]types.AttributeValue
		for {
			out, err := st.db.Query(ctx, &awsdynamodb.QueryInput{
				TableName: &st.table, ConsistentRead: ptr(true),
				KeyConditionExpression:    ptr("#pk = :pk AND #sk > :after"),
				ExpressionAttributeNames:  map[string]string{"#pk": attrPK, "#sk": attrSK},
				ExpressionAttributeValues: map[string]types.AttributeValue{":pk": s(pk), ":after": n(0)},
				ExclusiveStartKey:         start,
			}, st.dbOpt)
			if err != nil {
				return nil, true, translate(ctx, op+" "+coll+": read the log", err)
			}
			for _, it := range out.Items {
				dels = append(dels, types.TransactWriteItem{Delete: &types.Delete{TableName: &st.table, Key: map[string]types.AttributeValue{attrPK: it[attrPK], attrSK: it[attrSK]}}})
			}
			if start = out.LastEvaluatedKey; start == nil {
				break
			}
		}
		// Committed partition by partition: a log of many entries is not
		// held whole.
		if err := st.writeAll(ctx, f, dels, nil); err != nil {
			return nil, true, err
		}
		dels = dels[:0]
	}
	return &rebuildRun{f: f, kv: kv, shards: make([]rebuildShard, k)}, true, nil
}

type storedRecord struct {
	id  string
	enc []byte
	// lost: the item holds no readable record (readableRecord); the
	// rebuild deletes it and counts it in the report's Lost.
	lost bool
}

// readableRecord checks that a record item holds the record id, as a
// pull reads it (decodeEntry): a rebuild that listed anything else would
// make every pull of the collection fail, and a record item it neither
// lists nor drops is pulled by nobody and fails every write of its id.
func readableRecord(item map[string]types.AttributeValue, id string) error {
	raw, ok := item[attrRec].(*types.AttributeValueMemberB)
	if !ok {
		return fmt.Errorf("attribute %q is missing or not binary", attrRec)
	}
	rec, err := crdt.DecodeRecord(raw.Value)
	if err != nil {
		return err
	}
	if rec.ID != id {
		return fmt.Errorf("item holds record %q, want %q", rec.ID, id)
	}
	return nil
}

// size is what r holds of memory, about.
func (r storedRecord) size() int { return len(r.id) + len(r.enc) + 64 }

// flush numbers r's pending records in id order, each in its new shard
// after the records numbered before (step 4), and writes each its seq on
// its record item and its log entry.
func (st *Store) flush(ctx context.Context, r *rebuildRun) error {
	slices.SortFunc(r.pending, func(a, b storedRecord) int { return strings.Compare(a.id, b.id) })
	acts := make([]types.TransactWriteItem, 0, 2*len(r.pending))
	sizes := make([]int, 0, 2*len(r.pending))
	var drops []types.TransactWriteItem
	for _, rec := range r.pending {
		if rec.lost {
			r.lost++
			drops = append(drops, types.TransactWriteItem{Delete: &types.Delete{
				TableName: &st.table, Key: key(recordPK(r.f.coll, rec.id), 0),
			}})
			continue
		}
		ref := logRef{coll: r.f.coll, shard: stores.ShardOf(rec.id, r.f.k), shards: r.f.k}
		sh := &r.shards[ref.shard]
		sh.head++
		sh.usage.Records++
		sh.usage.Bytes += int64(len(rec.enc))
		r.recs++
		entry := logItem(ref, stores.Entry{Seq: sh.head, Record: crdt.Record{ID: rec.id}}, rec.enc)
		acts = append(acts,
			types.TransactWriteItem{Update: &types.Update{
				TableName: &st.table, Key: key(recordPK(r.f.coll, rec.id), 0),
				UpdateExpression:          ptr("SET #s = :s"),
				ConditionExpression:       ptr("attribute_exists(#pk)"),
				ExpressionAttributeNames:  map[string]string{"#s": attrSeq, "#pk": attrPK},
				ExpressionAttributeValues: map[string]types.AttributeValue{":s": n(sh.head)},
			}},
			types.TransactWriteItem{Put: &types.Put{TableName: &st.table, Item: entry}})
		sizes = append(sizes, 64, itemSize(entry))
	}
	r.pending, r.held = nil, 0
	if err := st.writeAll(ctx, r.f, acts, sizes); err != nil {
		return err
	}
	// The drops mark the fence (attrRebuildLost) in their transactions:
	// a run that finishes the rebuild after this one was interrupted
	// starts the epoch this one would have, history lost.
	marked := r.f
	marked.dropping = true
	return st.writeAll(ctx, marked, drops, nil)
}

// scanRecords is steps 3 and 4 of the rebuild of every collection of
// runs (each fenced, its logs emptied) for op: one strongly consistent Scan of
// the table (records have one partition each, and only a Scan finds them
// all) for the record items whose key begins with prefix (~r#COLL# for
// one collection, recordsPrefix for many), each kept with its
// collection's run. A Scan returns items in hash order, not grouped by
// collection, so memory is bounded otherwise: whenever the records kept
// reach rebuildBufferBytes, those of the runs that keep most (until half
// is left) are numbered in id order after those numbered before, written
// (flush) and let go. A table whose
// records fit is rebuilt as one collection at a time would be, each log in
// id order; a larger one in id order within each part. Memory is then a
// page of the Scan, rebuildBufferBytes and, per collection, its new
// shards' heads and usage. Record items of a collection without a run
// (created after the runs were fenced) are skipped.
func (st *Store) scanRecords(ctx context.Context, op string, runs map[string]*rebuildRun, prefix string) error {
	held := 0
	// flushDown writes the runs that hold most first, until the records
	// held are under limit: transactions stay full where they can.
	flushDown := func(limit int) error {
		order := slices.SortedFunc(maps.Values(runs), func(a, b *rebuildRun) int {
			return cmp.Or(b.held-a.held, strings.Compare(a.f.coll, b.f.coll))
		})
		for _, r := range order {
			if held < limit || r.held == 0 {
				break
			}
			held -= r.held
			if err := st.flush(ctx, r); err != nil {
				return err
			}
		}
		return nil
	}
	var start map[string]types.AttributeValue
	for {
		out, err := st.db.Scan(ctx, &awsdynamodb.ScanInput{
			TableName: &st.table, ConsistentRead: ptr(true), ExclusiveStartKey: start,
			FilterExpression:          ptr("begins_with(#pk, :p)"),
			ExpressionAttributeNames:  map[string]string{"#pk": attrPK},
			ExpressionAttributeValues: map[string]types.AttributeValue{":p": s(prefix)},
		}, st.dbOpt)
		if err != nil {
			return translate(ctx, op+": read the records", err)
		}
		for _, it := range out.Items {
			pk, _ := it[attrPK].(*types.AttributeValueMemberS)
			if pk == nil || !strings.HasPrefix(pk.Value, prefix) {
				continue
			}
			coll, id, ok := strings.Cut(strings.TrimPrefix(pk.Value, recordsPrefix), "#") // a collection name has no '#'
			r := runs[coll]
			if !ok || r == nil {
				continue
			}
			sr := storedRecord{id: id}
			if err := readableRecord(it, id); err != nil {
				st.log.Error("a record item holds no readable record: dropped by the rebuild, counted lost", "op", op, "key", pk.Value, "err", err)
				sr.lost = true
			} else {
				sr.enc = it[attrRec].(*types.AttributeValueMemberB).Value
			}
			r.pending = append(r.pending, sr)
			r.held += sr.size()
			if held += sr.size(); held >= rebuildBufferBytes {
				if err := flushDown(rebuildBufferBytes / 2); err != nil {
					return err
				}
			}
		}
		if start = out.LastEvaluatedKey; start == nil {
			break
		}
	}
	return flushDown(1)
}

// finishRebuild puts r's new heads (step 5) and its new K and epoch (step
// 6), once every record of its collection is in its new log.
func (st *Store) finishRebuild(ctx context.Context, r *rebuildRun) (stores.RepairReport, error) {
	var none stores.RepairReport
	op, coll, k, kv, f := r.f.op, r.f.coll, r.f.k, r.kv, r.f

	// 5. The new heads.
	var puts []types.TransactWriteItem
	headItem := func(pk string, head uint64, u stores.Usage, withK bool) types.TransactWriteItem {
		item := map[string]types.AttributeValue{
			attrPK: s(pk), attrSK: n(0), attrHead: n(head),
			attrUsageRecords: n(uint64(u.Records)), attrUsageBytes: n(uint64(u.Bytes)),
			attrCvg: &types.AttributeValueMemberN{Value: layoutVersion},
		}
		if withK {
			item[attrK] = kv
		}
		return types.TransactWriteItem{Put: &types.Put{TableName: &st.table, Item: item}}
	}
	if k == 1 {
		puts = append(puts, headItem(headPK(coll), r.shards[0].head, r.shards[0].usage, false))
	} else {
		marker := map[string]types.AttributeValue{
			attrPK: s(headPK(coll)), attrSK: n(0), attrHead: n(0), attrK: kv,
			attrCvg: &types.AttributeValueMemberN{Value: layoutVersion},
		}
		puts = append(puts, types.TransactWriteItem{Put: &types.Put{TableName: &st.table, Item: marker}})
		for i, sh := range r.shards {
			puts = append(puts, headItem(logRef{coll: coll, shard: i, shards: k}.headPK(), sh.head, sh.usage, true))
		}
	}
	if err := st.writeAll(ctx, f, puts, nil); err != nil {
		return none, err
	}

	// 6. The new K and epoch.
	cause := stores.Rebuilt
	b := counterBump{op: op + " " + coll + ": new epoch", pk: epochPK(coll), attr: attrN,
		accept: func(item map[string]types.AttributeValue, _ uint64) (bool, error) {
			if _, ok := item[attrRebuildLost]; ok && cause != stores.HistoryLost {
				return false, errRebuildLost // this or an earlier run dropped records
			}
			if v, err := getN(item, attrResharding); err != nil || v != uint64(k) {
				return false, fmt.Errorf("%s %s: new epoch: the fence to %d shards is gone (%v): another run finished the rebuild", op, coll, k, item[attrResharding])
			}
			if rr, _ := item[attrReshardRun].(*types.AttributeValueMemberS); rr == nil || rr.Value != f.run {
				return false, f.overtaken()
			}
			return true, nil
		},
		set: "#k = :k", remove: "#rs, #rr, #rl, #ro, #rt", cond: "#rs = :k AND #rr = :run",
		names: map[string]string{"#rs": attrResharding, "#rr": attrReshardRun, "#k": attrK, "#rl": attrRebuildLost,
			"#ro": attrRebuildOp, "#rt": attrRebuildSince},
		values: map[string]types.AttributeValue{":k": kv, ":run": s(f.run)},
	}
	if k == 1 {
		b.set, b.remove = "", "#rs, #rr, #rl, #ro, #rt, #k"
	}
	rebuilt := b
	if r.lost > 0 {
		cause = stores.HistoryLost
	}
	for {
		if cause == stores.HistoryLost {
			// Records were dropped: history lost, as BumpEpoch writes it.
			b.set = strings.TrimPrefix(rebuilt.set+", #lost = :new", ", ")
			b.names = maps.Clone(rebuilt.names)
			b.names["#lost"] = attrLost
		}
		_, err := st.bump(ctx, b)
		if errors.Is(err, errRebuildLost) {
			cause = stores.HistoryLost
			continue
		}
		if err != nil {
			return none, err
		}
		break
	}
	st.forgetShards(coll)
	st.shards.put(coll, shardInfo{k: k, durable: k > 1})
	st.log.Warn("log rebuilt: new epoch", "op", op, "collection", coll, "shards", k, "records", r.recs, "lost", r.lost, "cause", cause.String())
	st.watchers.Notify(stores.Notification{Resync: true})
	rep := stores.RepairReport{Records: r.recs, Lost: r.lost}
	for _, sh := range r.shards {
		rep.Head = max(rep.Head, sh.head)
	}
	return rep, nil
}

// fence is the fence a run of the rebuild holds: its operation (reshard,
// repair), collection, target and token (attrReshardRun).
type fence struct {
	op   string
	coll string
	k    int
	run  string
	// dropping: the run's transactions drop unreadable record items, and
	// mark the epoch item for it (attrRebuildLost) instead of checking it.
	dropping bool
}

// attrRebuildLost marks an epoch item whose rebuild dropped record items
// (N 1, beside the fence): the rebuild's new epoch is then of cause
// HistoryLost, whichever run finishes it.
const attrRebuildLost = "rl"

// check is the condition check every transaction of the run carries: the
// epoch item still fenced for this run.
func (f fence) check(table string) types.TransactWriteItem {
	cond, names := ptr("#rs = :k AND #rr = :run"), map[string]string{"#rs": attrResharding, "#rr": attrReshardRun}
	values := map[string]types.AttributeValue{":k": n(uint64(f.k)), ":run": s(f.run)}
	if f.dropping {
		names["#rl"], values[":one"] = attrRebuildLost, n(1)
		return types.TransactWriteItem{Update: &types.Update{
			TableName: &table, Key: key(epochPK(f.coll), 0), UpdateExpression: ptr("SET #rl = :one"),
			ConditionExpression: cond, ExpressionAttributeNames: names, ExpressionAttributeValues: values,
		}}
	}
	return types.TransactWriteItem{ConditionCheck: &types.ConditionCheck{
		TableName: &table, Key: key(epochPK(f.coll), 0),
		ConditionExpression: cond, ExpressionAttributeNames: names, ExpressionAttributeValues: values,
	}}
}

// overtaken is the error of a run whose fence another run took over.
func (f fence) overtaken() error {
	return fmt.Errorf("%s %s: %w: another run of the rebuild took it over (or finished it); this one stopped without writing more", f.op, f.coll, stores.ErrUnavailable)
}

// writeAll commits acts in transactions of at most maxTxActions actions,
// the fence's condition check included, and (when sizes gives each
// action's item size) txBudgetBytes. Writers are fenced out; a transaction
// whose answer was lost is repeated with its token. When another run took
// the fence over, the check fails and the run stops.
func (st *Store) writeAll(ctx context.Context, f fence, acts []types.TransactWriteItem, sizes []int) error {
	coll := f.coll
	for len(acts) > 0 {
		end, total := 0, 0
		for end < len(acts) && end < maxTxActions-1 {
			if sizes != nil {
				if total+sizes[end] > txBudgetBytes && end > 0 {
					break
				}
				total += sizes[end]
			}
			end++
		}
		// Record updates and their log puts go in pairs: never split one.
		if sizes != nil && end%2 == 1 && end < len(acts) {
			end--
		}
		items := append([]types.TransactWriteItem{f.check(st.table)}, acts[:end]...)
		p := plan{items: items, token: stores.NewIdentity()}
		if err := st.commit(ctx, coll, p); err != nil {
			var cancelled *types.TransactionCanceledException
			if errors.As(err, &cancelled) {
				if r := cancelled.CancellationReasons; len(r) > 0 && str(r[0].Code) == "ConditionalCheckFailed" {
					return f.overtaken()
				}
				return fmt.Errorf("%s %s: %w: transaction cancelled: %v", f.op, coll, stores.ErrUnavailable, reasonCodes(cancelled.CancellationReasons))
			}
			return translate(ctx, f.op+" "+coll, err)
		}
		acts = acts[end:]
		if sizes != nil {
			sizes = sizes[end:]
		}
	}
	return nil
}

// RepairAll runs Repair on every collection of the table that has record
// items or head items: the step of a restore (`convergo store
// mark-restored`) that brings every log in line with the record items a
// backup kept. It reads the table twice, whatever the number of
// collections: one Scan of keys lists the collections, every one is
// fenced and its logs emptied (steps 1 and 2), then one Scan of the
// record items rebuilds them all at once (steps 3 and 4, memory bounded:
// see scanRecords), and each gets its heads and new epoch (steps 5 and 6),
// each reported to each as it is done. Listing first is what makes the
// one Scan of records sound: a collection found only by it could have
// been written, where the Scan had passed, before its fence. It stops at
// the first failure, leaving the collections not finished fenced (their
// writers refused), and its error names them (leftFenced); a second call
// repairs every collection again, finishing every interrupted rebuild.
func (st *Store) RepairAll(ctx context.Context, each func(coll string, rep stores.RepairReport)) error {
	if err := st.check(ctx); err != nil {
		return err
	}
	colls, err := st.scanCollections(ctx)
	if err != nil {
		return err
	}
	runs := make(map[string]*rebuildRun, len(colls))
	var fenced []string // by this call, not finished: in colls' order
	fail := func(err error) error {
		return leftFenced(fmt.Errorf("repair every collection: %w", err), fenced)
	}
	for _, coll := range colls {
		r, isFenced, err := st.startRebuild(ctx, "repair", coll, 0)
		if isFenced {
			fenced = append(fenced, coll)
		}
		if err != nil {
			return fail(err)
		}
		runs[coll] = r // never nil: k = 0 always rebuilds
	}
	if len(runs) == 0 {
		return nil
	}
	if err := st.scanRecords(ctx, "repair every collection", runs, recordsPrefix); err != nil {
		return fail(err)
	}
	for _, coll := range colls {
		rep, err := st.finishRebuild(ctx, runs[coll])
		if err != nil {
			return fail(err)
		}
		fenced = fenced[1:] // coll, its fence lifted with its new epoch
		if each != nil {
			each(coll, rep)
		}
	}
	return nil
}

// maxNamedFenced bounds the collections an error names (leftFenced): a
// table of many thousands would otherwise make an error of megabytes.
const maxNamedFenced = 10

// leftFenced adds to err the collections a failed RepairAll left fenced,
// the first maxNamedFenced of them by name and how many in all, for the
// operator to know which a second run (or a repair of each) must finish.
func leftFenced(err error, colls []string) error {
	if len(colls) == 0 {
		return err
	}
	names := strings.Join(colls[:min(len(colls), maxNamedFenced)], ", ")
	if more := len(colls) - maxNamedFenced; more > 0 {
		names += fmt.Sprintf(" and %d more", more)
	}
	what := "collections"
	if len(colls) == 1 {
		what = "collection"
	}
	return fmt.Errorf("%w; %d %s left fenced (writers and readers refused until a rebuild finishes them): %s", err, len(colls), what, names)
}

// scanCollections returns, sorted, the collections the table holds record
// items or head items of (~r#COLL#ID, ~h#COLL, ~h#COLL#I: a collection
// name has no '#').
func (st *Store) scanCollections(ctx context.Context) ([]string, error) {
	rp, hp := recordsPrefix, headPK("") // ~r#, ~h#
	set := map[string]bool{}
	var start map[string]types.AttributeValue
	for {
		out, err := st.db.Scan(ctx, &awsdynamodb.ScanInput{
			TableName: &st.table, ConsistentRead: ptr(true), ExclusiveStartKey: start,
			ProjectionExpression:     ptr("#pk"),
			FilterExpression:         ptr("begins_with(#pk, :r) OR begins_with(#pk, :h)"),
			ExpressionAttributeNames: map[string]string{"#pk": attrPK},
			ExpressionAttributeValues: map[string]types.AttributeValue{
				":r": s(rp), ":h": s(hp),
			},
		}, st.dbOpt)
		if err != nil {
			return nil, translate(ctx, "list the collections", err)
		}
		for _, it := range out.Items {
			pk, _ := it[attrPK].(*types.AttributeValueMemberS)
			if pk == nil {
				continue
			}
			for _, p := range []string{rp, hp} {
				if rest, ok := strings.CutPrefix(pk.Value, p); ok {
					coll, _, _ := strings.Cut(rest, "#")
					if stores.CheckCollection(coll) == nil {
						set[coll] = true
					}
				}
			}
		}
		if start = out.LastEvaluatedKey; start == nil {
			break
		}
	}
	return slices.Sorted(maps.Keys(set)), nil
}
