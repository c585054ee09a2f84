package dynamodb

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"

	awsdynamodb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	st "github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/convergo/convergo/stores"
)

// The store item (pk "~store") holds the identity (attribute id) and the
// store-wide epoch (epoch); a collection's epoch item (pk "~e#COLL") its
// own counters (n, lost). See stores.MetaOf. Both hold the token of the
// last bump (bt).
const (
	storePK       = "~store"
	attrEpoch     = "epoch"
	attrN         = "n"
	attrLost      = "lost"
	attrBumpToken = "bt"
)

func epochPK(coll string) string { return "~e#" + coll }

// Identity implements stores.Store. The first call on a table without a
// store item makes one, conditioned on its absence, so instances starting
// together agree. A table restored from a backup or point-in-time recovery
// keeps the identity of its source: Open notices it by the incarnation the
// store item records (restored.go) and starts a new epoch, and the restore
// procedure runs `convergo store mark-restored` on it (docs/operations.md).
func (st *Store) Identity(ctx context.Context) (string, error) {
	if err := st.check(ctx); err != nil {
		return "", err
	}
	for range 2 {
		out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{
			TableName: &st.table, Key: key(storePK, 0), ConsistentRead: ptr(true),
		}, st.dbOpt)
		if err != nil {
			return "", translate(ctx, "identity", err)
		}
		if v, ok := out.Item[attrID].(*types.AttributeValueMemberS); ok && v.Value != "" {
			return v.Value, nil
		}
		// Create the identity, keeping an epoch a bump may have written.
		_, err = st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
			TableName:                 &st.table,
			Key:                       key(storePK, 0),
			UpdateExpression:          ptr("SET #id = :id, #cvg = :cvg"),
			ConditionExpression:       ptr("attribute_not_exists(#id)"),
			ExpressionAttributeNames:  map[string]string{"#id": attrID, "#cvg": attrCvg},
			ExpressionAttributeValues: map[string]types.AttributeValue{":id": s(stores.NewIdentity()), ":cvg": n(1)},
		}, st.dbOpt)
		var cond *types.ConditionalCheckFailedException
		if err != nil && !errors.As(err, &cond) {
			return "", translate(ctx, "identity", err)
		}
	}
	return "", errors.New("identity: the store item keeps changing")
}

// Meta implements stores.Store: one strongly consistent BatchGetItem of
// the store item and the collection's epoch item.
func (st *Store) Meta(ctx context.Context, collection string) (stores.Meta, error) {
	if err := st.check(ctx); err != nil {
		return stores.Meta{}, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Meta{}, err
	}
	if st.tableGone.Load() {
		if err := st.recheckTable(ctx); err != nil {
			return stores.Meta{}, fmt.Errorf("meta %s: %w", collection, err)
		}
	}
	items, err := st.batchGet(ctx, "meta "+collection, []map[string]types.AttributeValue{key(storePK, 0), key(epochPK(collection), 0)})
	if err != nil {
		return stores.Meta{}, err
	}
	var store, own, lost uint64
	shards := shardInfo{k: 1}
	num := func(item map[string]types.AttributeValue, name string) (uint64, error) {
		if _, ok := item[name]; !ok {
			return 0, nil
		}
		return getN(item, name)
	}
	storeItem, epochItem := splitEpochItems(items)
	store, err = num(storeItem, attrEpoch)
	if err == nil && epochItem != nil {
		if own, err = num(epochItem, attrN); err == nil {
			lost, err = num(epochItem, attrLost)
		}
		if err == nil {
			shards, err = shardsInItem(epochItem)
		}
	}
	if err != nil {
		return stores.Meta{}, fmt.Errorf("meta %s: %w", collection, err)
	}
	if shards.durable {
		st.shards.put(collection, shards) // readers follow the table's count
	}
	m := stores.MetaOf(store, own, lost)
	m.Shards = shards.k
	return m, nil
}

// splitEpochItems sorts what a batchGet of the store's item (storePK) and a
// collection's epoch item returned: either is nil when absent.
func splitEpochItems(items []map[string]types.AttributeValue) (store, epoch map[string]types.AttributeValue) {
	for _, item := range items {
		pk, _ := item[attrPK].(*types.AttributeValueMemberS)
		switch {
		case pk == nil:
		case pk.Value == storePK:
			store = item
		default:
			epoch = item
		}
	}
	return store, epoch
}

// A bump raises a counter to stores.NextEpoch of its value and the clock
// (Config.Now), the rule that keeps a table put back from before a bump
// from starting an epoch again. It reads the item strongly consistently,
// computes the next value in Go, and writes it in an update conditioned
// on the value read (absent: attribute_not_exists), reading again as
// stores.BumpTries says.

// counterBump is one bump of the counter attr of the item pk.
type counterBump struct {
	op, pk, attr string
	// item, when set, is the item as the caller just read it: the first
	// try uses it instead of reading it again.
	item map[string]types.AttributeValue
	// accept, when set, decides from the item and the counter read
	// whether to bump at all (false: no bump, no error).
	accept func(item map[string]types.AttributeValue, cur uint64) (bool, error)
	// set and remove add clauses to the update's SET (which may use :new,
	// the counter's new value) and REMOVE; cond adds a condition; names
	// and values what they use.
	set, remove, cond string
	names             map[string]string
	values            map[string]types.AttributeValue
}

// bump does b and reports whether it bumped.
//
// Each try's update writes a token of its own (bt) beside the counter. Its
// reply can be lost after DynamoDB applied it (a timeout, a connection
// reset), and the SDK's retry then fails the condition on the bump itself:
// the item read again holding the try's token says that the bump was this
// one, which is not made twice and is reported as made.
func (st *Store) bump(ctx context.Context, b counterBump) (bool, error) {
	var stalls stores.BumpStalls
	token := ""
	for try := 0; ; try++ {
		item := b.item
		if try > 0 || item == nil {
			out, err := st.db.GetItem(ctx, &awsdynamodb.GetItemInput{
				TableName: &st.table, Key: key(b.pk, 0), ConsistentRead: ptr(true),
			}, st.dbOpt)
			if err != nil {
				return false, translate(ctx, b.op, err)
			}
			item = out.Item
			if bt, ok := item[attrBumpToken].(*types.AttributeValueMemberS); ok && token != "" && bt.Value == token {
				return true, nil // the last try's update was applied
			}
		}
		names := map[string]string{"#c": b.attr, "#cvg": attrCvg}
		values := map[string]types.AttributeValue{":one": n(1)}
		var cur uint64
		var err error
		cond, read := "attribute_not_exists(#c)", "" // read: the counter as stalls compare it ("": absent)
		if v, ok := item[b.attr]; ok {
			if cur, err = getN(item, b.attr); err != nil {
				return false, fmt.Errorf("%s: %w", b.op, err)
			}
			cond, values[":cur"], read = "#c = :cur", v, strconv.FormatUint(cur, 10)
		}
		if stalls.Read(read) {
			return false, fmt.Errorf("%s: %w: the counter keeps refusing the value read", b.op, stores.ErrUnavailable)
		}
		if b.accept != nil {
			if ok, err := b.accept(item, cur); err != nil || !ok {
				return false, err
			}
		}
		values[":new"] = n(stores.NextEpoch(cur, st.epochNow()))
		token = st.bumpToken()
		names["#bt"], values[":bt"] = attrBumpToken, s(token)
		update := "SET #c = :new, #cvg = :one, #bt = :bt"
		if b.set != "" {
			update += ", " + b.set
		}
		if b.remove != "" {
			update += " REMOVE " + b.remove
		}
		if b.cond != "" {
			cond += " AND " + b.cond
		}
		maps.Copy(names, b.names)
		maps.Copy(values, b.values)
		_, err = st.db.UpdateItem(ctx, &awsdynamodb.UpdateItemInput{
			TableName:                 &st.table,
			Key:                       key(b.pk, 0),
			UpdateExpression:          &update,
			ConditionExpression:       &cond,
			ExpressionAttributeNames:  names,
			ExpressionAttributeValues: values,
		}, st.dbOpt)
		var failed *types.ConditionalCheckFailedException
		if errors.As(err, &failed) {
			continue // another bump came in between
		}
		if err != nil {
			return false, translate(ctx, b.op, err)
		}
		return true, nil
	}
}

// bumpToken returns a token no other bump, of this instance or another,
// writes.
func (st *Store) bumpToken() string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], rand.Uint64())
	return st.turnID() + hex.EncodeToString(b[:])
}

// BumpEpoch implements stores.Store: n set to stores.NextEpoch of n, and
// for a loss lost to the same value, in one conditional update.
func (st *Store) BumpEpoch(ctx context.Context, collection string, cause stores.EpochCause) error {
	if err := st.check(ctx); err != nil {
		return err
	}
	if err := stores.CheckBump(collection, cause); err != nil {
		return err
	}
	b := counterBump{op: "bump epoch of " + collection, pk: epochPK(collection), attr: attrN}
	if cause == stores.HistoryLost {
		b.set, b.names = "#lost = :new", map[string]string{"#lost": attrLost}
	}
	if _, err := st.bump(ctx, b); err != nil {
		return err
	}
	st.log.Warn("new epoch", "collection", collection, "cause", cause.String())
	st.watchers.Notify(stores.Notification{Resync: true})
	return nil
}

// BumpEpochs implements stores.Store: epoch on the store item set to
// stores.NextEpoch of it. With a stream, other instances see the store
// item change and resync.
func (st *Store) BumpEpochs(ctx context.Context) error {
	if err := st.check(ctx); err != nil {
		return err
	}
	b := counterBump{op: "bump epochs", pk: storePK, attr: attrEpoch}
	if st.restoredInc != "" {
		// Opened to be marked restored (Config.Restoring): this bump is
		// the one the copy calls for.
		b.set, b.names, b.values = "#inc = :inc", map[string]string{"#inc": attrInc}, map[string]types.AttributeValue{":inc": s(st.restoredInc)}
	}
	if _, err := st.bump(ctx, b); err != nil {
		return err
	}
	st.log.Warn("new epoch of every collection", "cause", stores.HistoryLost.String())
	st.watchers.Notify(stores.Notification{Resync: true})
	return nil
}

// BumpEpochsFrom implements stores.EpochsBumperFrom: BumpEpochs when the
// store item's epoch as read (absent: 0) is from, the update conditioned
// on that value.
func (st *Store) BumpEpochsFrom(ctx context.Context, from uint64) (bool, error) {
	if err := st.check(ctx); err != nil {
		return false, err
	}
	bumped, err := st.bump(ctx, counterBump{op: "bump epochs", pk: storePK, attr: attrEpoch,
		accept: func(_ map[string]types.AttributeValue, cur uint64) (bool, error) {
			return stores.IsStoreEpoch(cur, from), nil
		},
	})
	if err != nil || !bumped {
		return false, err
	}
	st.log.Warn("new epoch of every collection", "cause", stores.HistoryLost.String())
	st.watchers.Notify(stores.Notification{Resync: true})
	return true, nil
}

// isEpochRecord reports whether a stream record changed the store item or
// an epoch item: watchers then resync, so engines re-read epochs.
func isEpochRecord(rec st.Record) bool {
	if rec.Dynamodb == nil {
		return false
	}
	pk, _ := rec.Dynamodb.Keys[attrPK].(*st.AttributeValueMemberS)
	return pk != nil && (pk.Value == storePK || strings.HasPrefix(pk.Value, "~e#"))
}
