package redis

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
func (s *Store) storeBumpKey() string       { return s.prefix + "{convergo}:bump" }
func (s *Store) formatKey() string          { return s.prefix + "{convergo}:format" } // format.go
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
			// Told like a new epoch: a FLUSHALL leaves the other
			// instances' subscriptions, which would otherwise tell
			// them nothing, and their engines would go on giving
			// readers cursors of the identity they cached.
			s.announceBump(ctx)
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
	m, _, err := s.meta(ctx, collection, "meta "+collection)
	return m, err
}

// epochRead is how meta read a collection's epoch counters: the
// store-wide counter and the collection's own (field n of its meta hash),
// as Redis holds them, "" when missing. A purge checks they are still
// these (purge.lua).
type epochRead struct{ store, own string }

// meta reads collection's Meta, after a check of the servers' run when
// one is owed, and the counters as read.
func (s *Store) meta(ctx context.Context, collection, op string) (stores.Meta, epochRead, error) {
	if s.needCheck.Load() {
		if err := s.checkRun(ctx); err != nil {
			return stores.Meta{}, epochRead{}, fmt.Errorf("%s: %w", op, err)
		}
	}
	var read epochRead
	raw, err := s.client.Get(ctx, s.storeEpochKey()).Result()
	if err != nil && !errors.Is(err, goredis.Nil) {
		return stores.Meta{}, epochRead{}, s.fail(ctx, op, err)
	}
	read.store = raw
	store, err := counter(raw)
	if err != nil {
		return stores.Meta{}, epochRead{}, fmt.Errorf("%s: %w", op, err)
	}
	vals, err := s.client.HMGet(ctx, s.metaKey(collection), "n", "lost").Result()
	if err != nil {
		return stores.Meta{}, epochRead{}, s.fail(ctx, op, err)
	}
	var own [2]uint64
	for i, v := range vals {
		if v == nil {
			continue
		}
		str, _ := v.(string)
		if i == 0 {
			read.own = str
		}
		if own[i], err = strconv.ParseUint(str, 10, 64); err != nil {
			return stores.Meta{}, epochRead{}, fmt.Errorf("%s: unreadable epoch %q", op, str)
		}
	}
	return stores.MetaOf(store, own[0], own[1]), read, nil
}

// A bump raises a counter to stores.NextEpoch of its value and the clock
// (Options.Now), the rule that keeps a copy of the data put back from
// before a bump from starting an epoch again. The rule lives in Go only:
// a bump reads the counter, computes its next value, and a script sets it
// only if the counter is still the value read (compare and set; a missing
// counter is 0 and compared as ""), reading again as stores.BumpTries says.

// bumpScript sets a collection's own epoch counter (KEYS[1], the meta
// hash, field n) to ARGV[2] if it is still ARGV[1] ("" when missing) and,
// for a loss (ARGV[3] "1"), records it in field lost, and the bump's token
// ARGV[4] in field bt. It returns 1 when it set it, or when it had (bt is
// ARGV[4]: this is go-redis running it again), 0 when n was not ARGV[1].
var bumpScript = goredis.NewScript(`
if (redis.call('HGET', KEYS[1], 'n') or '') ~= ARGV[1] then
  if redis.call('HGET', KEYS[1], 'bt') == ARGV[4] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'n', ARGV[2], 'bt', ARGV[4])
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'lost', ARGV[2]) end
return 1`)

// setEpochScript sets the store-wide epoch (KEYS[1]) to ARGV[2] if it is
// still ARGV[1] ("" when missing), and the bump's token KEYS[2] to
// ARGV[3]. It returns 1 when it did, or when it had (KEYS[2] is ARGV[3]:
// this is go-redis running it again), else 0.
var setEpochScript = goredis.NewScript(`
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then
  if redis.call('GET', KEYS[2]) == ARGV[3] then return 1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1`)

// bumpToken returns a token no other bump writes: the scripts above keep
// it beside the counter, so that a run of theirs that go-redis makes again
// (Options.MaxRetries: the reply to the first was lost after Redis ran it)
// finds the bump its own, neither bumping twice nor taking it for
// another's.
func bumpToken() string {
	return strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}

// counter parses an epoch counter as a bump read it: raw is "" when the
// key or field is missing (0).
func counter(raw string) (uint64, error) {
	if raw == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("unreadable epoch %q", raw)
	}
	return n, nil
}

// BumpEpoch implements stores.Store: the collection's counter n (and for a
// loss lost) set to stores.NextEpoch of n, compared and set by a script.
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
	key := s.metaKey(collection)
	_, err := s.bump(ctx, "bump epoch of "+collection,
		func() *goredis.StringCmd { return s.client.HGet(ctx, key, "n") },
		nil,
		func(raw string, next uint64, token string) *goredis.Cmd {
			return bumpScript.Run(ctx, s.client, []string{key}, raw, next, lost, token)
		})
	if err != nil {
		return err
	}
	s.log.Warn("new epoch", "collection", collection, "cause", cause.String())
	s.announceBump(ctx)
	return nil
}

// BumpEpochs implements stores.Store: the store-wide epoch set to
// stores.NextEpoch of its value, compared and set by a script.
func (s *Store) BumpEpochs(ctx context.Context) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	_, err := s.bumpStore(ctx, nil)
	return err
}

// BumpEpochsFrom implements stores.EpochsBumperFrom: the store-wide epoch
// is read, compared with from, and set only if it is still the value
// read.
func (s *Store) BumpEpochsFrom(ctx context.Context, from uint64) (bool, error) {
	if err := s.begin(ctx); err != nil {
		return false, err
	}
	return s.bumpStore(ctx, func(cur uint64) bool { return stores.IsStoreEpoch(cur, from) })
}

// bumpStore raises the store-wide epoch when accept (nil: always) takes
// its value, and reports whether it did.
func (s *Store) bumpStore(ctx context.Context, accept func(cur uint64) bool) (bool, error) {
	key := s.storeEpochKey()
	bumped, err := s.bump(ctx, "bump epochs",
		func() *goredis.StringCmd { return s.client.Get(ctx, key) },
		accept,
		func(raw string, next uint64, token string) *goredis.Cmd {
			return setEpochScript.Run(ctx, s.client, []string{key, s.storeBumpKey()}, raw, next, token)
		})
	if err != nil || !bumped {
		return false, err
	}
	s.log.Warn("new epoch of every collection", "cause", stores.HistoryLost.String())
	s.announceBump(ctx)
	return true, nil
}

// bump is the compare-and-set loop of a bump: read reads the counter
// (redis.Nil: missing), accept (nil: always) decides from its value
// whether to bump at all, and set runs the script that sets it to next if
// it is still raw ("" when missing), returning 1 when it did (or, run again
// by go-redis, had: token, bumpToken). It reads again as stores.BumpTries
// says, and reports whether it bumped.
func (s *Store) bump(ctx context.Context, op string, read func() *goredis.StringCmd, accept func(cur uint64) bool, set func(raw string, next uint64, token string) *goredis.Cmd) (bool, error) {
	var st stores.BumpStalls
	for {
		raw, err := read().Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			return false, s.fail(ctx, op, err)
		}
		if st.Read(raw) {
			return false, fmt.Errorf("%s: %w: the counter keeps refusing the value read", op, stores.ErrUnavailable)
		}
		cur, err := counter(raw)
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		if accept != nil && !accept(cur) {
			return false, nil
		}
		done, err := set(raw, stores.NextEpoch(cur, s.now()), bumpToken()).Int()
		if err != nil {
			return false, s.fail(ctx, op, err)
		}
		if done == 1 {
			return true, nil
		}
	}
}

// announceBump tells local watchers and, through the notification
// channel, every other instance on the prefix, that epochs or the
// store's identity changed: a Resync.
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

// The record of the runs ends with their fsync policy as checked: the
// entry "fsync=always" when every master fsyncs always, else "fsync=no".
// A restart that finds the new runs fsyncing always cannot tell from them
// what the runs that ended lost: the policy recorded of those can. One
// entry after the masters' keeps the record readable by a version that
// did not record it (it takes the entry for a master no longer there).
const fsyncEntry = "fsync="

// runsRecord is the record of runs: their keys, sorted, and the policy.
func runsRecord(runs []run) string {
	keys := make([]string, len(runs))
	always := true
	for i, r := range runs {
		keys[i] = r.key()
		always = always && r.alwaysFsync
	}
	slices.Sort(keys)
	if always {
		return strings.Join(keys, ",") + "," + fsyncEntry + "always"
	}
	return strings.Join(keys, ",") + "," + fsyncEntry + "no"
}

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
		if infoField(info, "loading") == "1" {
			// A server loading its data after a restart says
			// aof_enabled:0 until it has loaded, whatever appendonly
			// says: read now, a restart under appendfsync always would
			// pass for one that may have lost writes, and start a new
			// epoch of every collection for nothing. The check is made
			// again once it serves (needCheck).
			return run{}, fmt.Errorf("%w: the server is still loading its data (INFO loading:1)", stores.ErrUnavailable)
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
// ARGV[1] and, when ARGV[3] is "1", sets the store-wide epoch (KEYS[2])
// to ARGV[5] if it is still ARGV[4] ("" when missing), with the bump's
// token ARGV[6] in KEYS[3] (bumpToken): the bump of a restart, computed in
// Go (stores.NextEpoch). It returns 1 when it did, or when it had (run
// again by go-redis: the token is its own), 0 when another instance
// recorded ARGV[2] already, -1 when the record or the epoch changed
// meanwhile.
var checkServerScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1]) or ''
if cur == ARGV[2] then
  if ARGV[3] == '1' and redis.call('GET', KEYS[3]) == ARGV[6] then return 1 end
  return 0
end
if cur ~= ARGV[1] then return -1 end
if ARGV[3] == '1' then
  if (redis.call('GET', KEYS[2]) or '') ~= ARGV[4] then return -1 end
  redis.call('SET', KEYS[2], ARGV[5])
  redis.call('SET', KEYS[3], ARGV[6])
end
redis.call('SET', KEYS[1], ARGV[2])
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
//     always (a restart then loses no acknowledged write), and ran so
//     when last checked: the policy of a run that ended is the one that
//     says what it lost, and the record keeps it (fsyncEntry).
//
// The first check of a database records its runs without a new epoch.
// It runs at Open, at every (re)subscription of the notification
// connection and of capture's keyspace connections (a restart or a
// failover of their master breaks them), when a merge call finds
// that a server lost the merge script (a restart or a failover of a
// master that may not hold the subscription, roundTrip), when a round
// trip goes to a node whose run this check did not find on a master
// (probeRun), and in Meta while a check is owed because the last one
// failed.
func (s *Store) checkRun(ctx context.Context) error {
	// The script refuses only when the record or the epoch moved since
	// they were read, that is when another check or bump landed: go on
	// while they move, as a bump does (stores.BumpStalls), up to checkRounds rounds
	// (instances that see different runs could otherwise take turns).
	var st stores.BumpStalls
	for range checkRounds {
		runs, err := s.runs(ctx)
		if err != nil {
			s.needCheck.Store(true)
			return s.fail(ctx, "read the server's run", err)
		}
		now := runsRecord(runs)
		old, err := s.client.Get(ctx, s.serverKey()).Result()
		if err != nil && !errors.Is(err, goredis.Nil) {
			s.needCheck.Store(true)
			return s.fail(ctx, "read the recorded run", err)
		}
		if old == now {
			s.noteRuns(runs)
			s.needCheck.Store(false)
			return nil
		}
		bump, why := false, ""
		if old != "" {
			bump, why = runChanged(strings.Split(old, ","), runs)
		}
		raw, next := "", uint64(0)
		if bump {
			raw, err = s.client.Get(ctx, s.storeEpochKey()).Result()
			if err != nil && !errors.Is(err, goredis.Nil) {
				s.needCheck.Store(true)
				return s.fail(ctx, "read the store's epoch", err)
			}
			cur, err := counter(raw)
			if err != nil {
				s.needCheck.Store(true)
				return fmt.Errorf("read the store's epoch: %w", err)
			}
			next = stores.NextEpoch(cur, s.now())
		}
		if st.Read(old + "\x00" + raw) {
			s.needCheck.Store(true)
			return errors.New("record the server's run: the record and the epoch keep refusing the values read")
		}
		res, err := checkServerScript.Run(ctx, s.client, []string{s.serverKey(), s.storeEpochKey(), s.storeBumpKey()}, old, now, map[bool]string{true: "1", false: "0"}[bump], raw, next, bumpToken()).Int()
		if err != nil {
			s.needCheck.Store(true)
			return s.fail(ctx, "record the server's run", err)
		}
		if res == -1 {
			continue
		}
		s.noteRuns(runs)
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
	return errors.New("record the server's run: the record or the epoch keeps changing")
}

// noteRuns remembers the masters' runs that a check found as they are
// recorded (probeRun compares nodes with them).
func (s *Store) noteRuns(runs []run) {
	known := make(map[string]bool, len(runs))
	for _, r := range runs {
		known[r.key()] = true
	}
	s.known.Store(&known)
}

// probeInterval is how often, at most, a round trip to a node compares
// the node's run with those of the last check (probeRun).
const probeInterval = time.Second

// probeRun compares the run of the node that serves collection coll (the
// server, or the master of its slot as the client knows it) with those of
// the last check of the servers' run, at most once per probeInterval per
// node, before a round trip of merge calls: a node whose run or
// replication id is not one of them restarted or was promoted since,
// and the servers' run is checked (checkRun) before anything is written.
//
// The NOSCRIPT of the merge script finds most of those, but not all: a
// node that was a master, and kept its script cache while a replica (a
// failover to its replica and back, without a restart), has the script
// when it is promoted again, and a store that made no check while the
// other node was master does not know that anything happened. Its new
// replication id says so.
//
// It returns the client that the round trip is to send its calls with:
// the node's own on a cluster (so that no redirect takes them on to a node
// not checked), else the store's. A failed probe is not an error: the
// round trip finds out whether the node answers.
func (s *Store) probeRun(ctx context.Context, coll string) (goredis.UniversalClient, error) {
	var node *goredis.Client
	switch c := s.client.(type) {
	case *goredis.ClusterClient:
		n, err := c.MasterForKey(ctx, s.seqKey(coll))
		if err != nil {
			return s.client, nil
		}
		node = n
	case *goredis.Client:
		node = c
	default:
		return s.client, nil
	}
	addr := node.Options().Addr
	now := time.Now()
	s.probeMu.Lock()
	last, ok := s.probed[addr]
	s.probeMu.Unlock()
	if ok && now.Sub(last) < probeInterval {
		return node, nil
	}
	info, err := node.Info(ctx, "server", "replication").Result()
	if err != nil {
		return node, nil
	}
	key := run{runID: infoField(info, "run_id"), replID: infoField(info, "master_replid")}.key()
	if known := s.known.Load(); known == nil || !(*known)[key] {
		if err := s.checkRun(ctx); err != nil {
			return nil, err
		}
	}
	s.probeMu.Lock()
	if s.probed == nil || len(s.probed) >= maxProbed {
		s.probed = map[string]time.Time{}
	}
	s.probed[addr] = now
	s.probeMu.Unlock()
	return node, nil
}

// maxProbed bounds the nodes whose last probe a store remembers.
const maxProbed = 1024

// checkRounds bounds the rounds of one run check.
const checkRounds = 100

// runChanged decides whether the masters' data may have gone back since
// the recorded runs (run_id/replid each), and says why.
func runChanged(recorded []string, runs []run) (bool, string) {
	known := map[string]bool{}
	replIDs := map[string]bool{}
	// always: the masters recorded fsynced always (where the record says:
	// fsyncEntry) and every master now does, so the runs that ended lost
	// nothing.
	always := true
	for _, k := range recorded {
		if policy, ok := strings.CutPrefix(k, fsyncEntry); ok {
			always = policy == "always"
			continue
		}
		known[k] = true
		if _, repl, ok := strings.Cut(k, "/"); ok && repl != "" {
			replIDs[repl] = true
		}
	}
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
