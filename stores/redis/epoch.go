package redis

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/stores"
)

// The store's own keys share the hash tag {convergo}, so one script may
// touch them all on a cluster. No collection key clashes with them: a
// collection's keys end in :seq, :log, :r and :meta.
func (s *Store) identityKey() string        { return s.prefix + "{convergo}:id" }
func (s *Store) storeEpochKey() string      { return s.prefix + "{convergo}:epoch" }
func (s *Store) serverKey() string          { return s.prefix + "{convergo}:server" }
func (s *Store) metaKey(coll string) string { return s.prefix + "{" + coll + "}:meta" }

// resyncPayload on the notification channel tells every instance on the
// prefix that epochs changed: their watchers get a Resync.
const resyncPayload = "*resync"

// serverCheckTimeout bounds the check of the server's run after a
// (re)subscription.
const serverCheckTimeout = 5 * time.Second

// Identity implements stores.Store. The identity is the key
// <prefix>{convergo}:id, made by the first call that finds it missing: on
// a new database, and after the key was lost (FLUSHALL, a restart without
// persistence, a lost write): the data is then not the data readers saw,
// and the new identity resets them.
func (s *Store) Identity(ctx context.Context) (string, error) {
	if err := s.begin(ctx); err != nil {
		return "", err
	}
	id, err := s.client.Get(ctx, s.identityKey()).Result()
	if errors.Is(err, goredis.Nil) {
		fresh := stores.NewIdentity()
		ok, err := s.client.SetNX(ctx, s.identityKey(), fresh, 0).Result()
		if err != nil {
			return "", s.fail(ctx, "identity", err)
		}
		if ok {
			s.log.Warn("new store identity: a new database, or one that lost its identity key", "identity", fresh)
			return fresh, nil
		}
		id, err = s.client.Get(ctx, s.identityKey()).Result()
	}
	if err != nil {
		return "", s.fail(ctx, "identity", err)
	}
	if id == "" || len(id) > 64 {
		return "", fmt.Errorf("identity: %w: %d bytes", stores.ErrInvalid, len(id))
	}
	return id, nil
}

// Meta implements stores.Store: the store-wide epoch in {convergo}:epoch
// and the collection's own counters in the hash {<collection>}:meta
// (fields n and lost), combined by stores.MetaOf.
func (s *Store) Meta(ctx context.Context, collection string) (stores.Meta, error) {
	if err := s.begin(ctx); err != nil {
		return stores.Meta{}, err
	}
	if err := stores.CheckCollection(collection); err != nil {
		return stores.Meta{}, err
	}
	if s.needCheck.Load() {
		if err := s.checkRun(ctx); err != nil {
			return stores.Meta{}, fmt.Errorf("meta %s: %w", collection, err)
		}
	}
	store, err := s.client.Get(ctx, s.storeEpochKey()).Uint64()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return stores.Meta{}, s.fail(ctx, "meta "+collection, err)
	}
	vals, err := s.client.HMGet(ctx, s.metaKey(collection), "n", "lost").Result()
	if err != nil {
		return stores.Meta{}, s.fail(ctx, "meta "+collection, err)
	}
	var own [2]uint64
	for i, v := range vals {
		if v == nil {
			continue
		}
		str, _ := v.(string)
		if own[i], err = strconv.ParseUint(str, 10, 64); err != nil {
			return stores.Meta{}, fmt.Errorf("meta %s: unreadable epoch %q", collection, str)
		}
	}
	return stores.MetaOf(store, own[0], own[1]), nil
}

// bumpScript raises a collection's own epoch counter and, for a loss,
// records it: KEYS[1] the meta hash, ARGV[1] "1" for a loss.
var bumpScript = goredis.NewScript(`
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
if ARGV[1] == '1' then redis.call('HSET', KEYS[1], 'lost', n) end
return n`)

// BumpEpoch implements stores.Store.
func (s *Store) BumpEpoch(ctx context.Context, collection string, cause stores.EpochCause) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	if err := stores.CheckBump(collection, cause); err != nil {
		return err
	}
	lost := "0"
	if cause == stores.HistoryLost {
		lost = "1"
	}
	if err := bumpScript.Run(ctx, s.client, []string{s.metaKey(collection)}, lost).Err(); err != nil {
		return s.fail(ctx, "bump epoch of "+collection, err)
	}
	s.log.Warn("new epoch", "collection", collection, "cause", cause.String())
	s.announceBump(ctx)
	return nil
}

// BumpEpochs implements stores.Store: INCR of the store-wide epoch.
func (s *Store) BumpEpochs(ctx context.Context) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	if err := s.client.Incr(ctx, s.storeEpochKey()).Err(); err != nil {
		return s.fail(ctx, "bump epochs", err)
	}
	s.log.Warn("new epoch of every collection", "cause", stores.HistoryLost.String())
	s.announceBump(ctx)
	return nil
}

// bumpFromScript raises the store-wide epoch (KEYS[1]) when it is ARGV[1]
// modulo 2^32 (a missing key is 0); it returns 1 when it did, else 0.
var bumpFromScript = goredis.NewScript(`
local e = tonumber(redis.call('GET', KEYS[1]) or '0')
if e % 4294967296 ~= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
return 1`)

// BumpEpochsFrom implements stores.EpochsBumperFrom.
func (s *Store) BumpEpochsFrom(ctx context.Context, from uint64) (bool, error) {
	if err := s.begin(ctx); err != nil {
		return false, err
	}
	n, err := bumpFromScript.Run(ctx, s.client, []string{s.storeEpochKey()}, from&0xffffffff).Int()
	if err != nil {
		return false, s.fail(ctx, "bump epochs", err)
	}
	if n == 0 {
		return false, nil
	}
	s.log.Warn("new epoch of every collection", "cause", stores.HistoryLost.String())
	s.announceBump(ctx)
	return true, nil
}

// announceBump tells local watchers and, through the notification
// channel, every other instance on the prefix.
func (s *Store) announceBump(ctx context.Context) {
	s.watchers.Notify(stores.Notification{Resync: true})
	if err := s.client.Publish(ctx, s.channel, resyncPayload).Err(); err != nil {
		s.log.Warn("announce a new epoch to other instances; they learn it at their next resync", "err", err)
	}
}

// A run is what the store knows of the Redis servers holding its data:
// per master, its run_id (new at every start of redis-server) and its
// replication ids.
type run struct {
	runID, replID, replID2 string
	// alwaysFsync: the append-only file is on and fsynced before every
	// reply, so a restart loses no acknowledged write.
	alwaysFsync bool
}

// key is how a master is remembered: "run_id/replid".
func (r run) key() string { return r.runID + "/" + r.replID }

// runs reads the run of the server, or of every master of a cluster.
func (s *Store) runs(ctx context.Context) ([]run, error) {
	one := func(ctx context.Context, c goredis.UniversalClient) (run, error) {
		info, err := c.Info(ctx, "server", "replication", "persistence").Result()
		if err != nil {
			return run{}, err
		}
		r := run{
			runID:   infoField(info, "run_id"),
			replID:  infoField(info, "master_replid"),
			replID2: infoField(info, "master_replid2"),
		}
		if r.runID == "" {
			return run{}, errors.New("INFO server has no run_id")
		}
		if infoField(info, "aof_enabled") == "1" {
			cfg, err := c.ConfigGet(ctx, "appendfsync").Result()
			r.alwaysFsync = err == nil && cfg["appendfsync"] == "always"
		}
		return r, nil
	}
	switch c := s.client.(type) {
	case *goredis.ClusterClient:
		var mu = make(chan struct{}, 1)
		var out []run
		err := c.ForEachMaster(ctx, func(ctx context.Context, n *goredis.Client) error {
			r, err := one(ctx, n)
			if err != nil {
				return err
			}
			mu <- struct{}{}
			out = append(out, r)
			<-mu
			return nil
		})
		return out, err
	default:
		r, err := one(ctx, s.client)
		return []run{r}, err
	}
}

// checkServerScript replaces the recorded runs (KEYS[1]) if they are still
// ARGV[1], and raises the store-wide epoch (KEYS[2]) when ARGV[3] is "1".
// It returns 1 when it did, 0 when another instance recorded ARGV[2]
// already, -1 when the record changed meanwhile.
var checkServerScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1]) or ''
if cur == ARGV[2] then return 0 end
if cur ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] == '1' then redis.call('INCR', KEYS[2]) end
return 1`)

// checkRun compares the servers' runs with those recorded in
// <prefix>{convergo}:server and starts a new epoch of every collection
// when the data may have gone back:
//
//   - a master whose replication id history includes a recorded one
//     (master_replid2) is a replica promoted by a failover, which may
//     lack the old master's last writes: always a new epoch;
//   - any other master not recorded (a restart, a new master) starts a
//     new epoch unless every master runs appendonly with appendfsync
//     always (a restart then loses no acknowledged write).
//
// The first check of a database records its runs without a new epoch.
// It runs at Open, at every (re)subscription of the notification
// connection (a restart or a failover breaks it), and in Meta while a
// check is owed because the last one failed.
func (s *Store) checkRun(ctx context.Context) error {
	for range 3 {
		runs, err := s.runs(ctx)
		if err != nil {
			s.needCheck.Store(true)
			return s.fail(ctx, "read the server's run", err)
		}
		keys := make([]string, len(runs))
		for i, r := range runs {
			keys[i] = r.key()
		}
		slices.Sort(keys)
		now := strings.Join(keys, ",")
		old, err := s.client.Get(ctx, s.serverKey()).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			s.needCheck.Store(true)
			return s.fail(ctx, "read the recorded run", err)
		}
		if old == now {
			s.needCheck.Store(false)
			return nil
		}
		bump, why := false, ""
		if old != "" {
			bump, why = runChanged(strings.Split(old, ","), runs)
		}
		res, err := checkServerScript.Run(ctx, s.client, []string{s.serverKey(), s.storeEpochKey()}, old, now, map[bool]string{true: "1", false: "0"}[bump]).Int()
		if err != nil {
			s.needCheck.Store(true)
			return s.fail(ctx, "record the server's run", err)
		}
		if res == -1 {
			continue
		}
		s.needCheck.Store(false)
		if res == 1 && bump {
			s.log.Warn("the Redis servers changed; new epoch of every collection", "why", why, "was", old, "now", now)
			s.announceBump(ctx)
		} else if res == 1 {
			s.log.Info("recorded the Redis servers' run", "was", old, "now", now)
		}
		return nil
	}
	s.needCheck.Store(true)
	return errors.New("record the server's run: the record keeps changing")
}

// runChanged decides whether the masters' data may have gone back since
// the recorded runs (run_id/replid each), and says why.
func runChanged(recorded []string, runs []run) (bool, string) {
	known := map[string]bool{}
	replIDs := map[string]bool{}
	for _, k := range recorded {
		known[k] = true
		if _, repl, ok := strings.Cut(k, "/"); ok && repl != "" {
			replIDs[repl] = true
		}
	}
	always := true
	var changed []string
	for _, r := range runs {
		always = always && r.alwaysFsync
		if known[r.key()] {
			continue
		}
		if replIDs[r.replID2] {
			return true, "failover: master " + r.runID + " was promoted from a recorded replication history"
		}
		changed = append(changed, r.runID)
	}
	if len(changed) == 0 {
		return false, ""
	}
	if always {
		return false, ""
	}
	return true, "restarted or new masters without appendfsync always: " + strings.Join(changed, " ")
}
