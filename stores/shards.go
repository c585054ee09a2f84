package stores

import (
	"context"
	"fmt"
	"hash/fnv"
)

// MaxShards is the most log shards a collection may have. A cursor holds
// one position per shard and must fit proto.MaxCursorBytes.
const MaxShards = 16

// ShardOf returns the shard of a collection with shards log shards that
// record id lives in: FNV-1a of the id, modulo shards. A record lives in
// one shard for as long as the collection's shard count stays the same,
// so its log entry is compacted within that shard. Stores that shard use
// this function, and tests derive placements from it.
func ShardOf(id string, shards int) int {
	if shards <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(shards))
}

// CheckShards validates a shard count: 1 to MaxShards.
func CheckShards(shards int) error {
	if shards < 1 || shards > MaxShards {
		return fmt.Errorf("%w: %d shards not in 1..%d", ErrInvalid, shards, MaxShards)
	}
	return nil
}

// Sharder is implemented by stores that can split a collection's change
// log over several shards (Meta.Shards > 1), so that writers of different
// records commit without contending on one head. Each shard is a log of
// its own with its own sequence numbers, and every rule of Store's log
// holds per shard: a change takes its shard's next sequence number in the
// step that makes it visible (no gaps within a shard), entries are in
// ascending order, a record is in its shard's log once, at its latest
// change. A record lives in shard ShardOf(id, Meta.Shards). There is no
// order between shards: a reader keeps one position per shard (the
// engine's cursor does).
//
// For a collection with K > 1 shards the single-log methods of Store mean:
// Result.Seq and Entry.Seq are sequence numbers of the record's shard;
// Head is the sum of the shards' heads (it grows with every change, which
// is all that readiness checks and notifications need); Pull refuses with
// ErrInvalid, since no single position describes K logs. Notifications
// name the shard whose head they carry (Notification.Shard).
//
// A collection's shard count is durable and the same for every instance
// on the store; changing it rebuilds the log and starts a new epoch with
// cause Rebuilt, so that readers pull again from the start.
type Sharder interface {
	// PullShard is Pull over one shard's log: shard in 0..K-1 of the
	// collection's current Meta.Shards.
	PullShard(ctx context.Context, collection string, shard int, after uint64, limit PageLimit) (Page, error)
	// ShardHeads returns each shard's head, K values (one, the head, for
	// a collection of one shard).
	ShardHeads(ctx context.Context, collection string) ([]uint64, error)
}

// ShardsOf returns m's shard count: Meta.Shards, where 0 means 1.
func ShardsOf(m Meta) int { return max(m.Shards, 1) }
