package redis

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
)

// The commands an ACL user of the store needs, as ACL rules: aclCore for
// every store, what a deployment other than a single node on database 0
// adds to it, and what each optional feature adds. They are the one
// definition: docs/redis.md ("ACL users") quotes each list as it is here
// (and says which optional commands are left out, and why),
// TestACLDocs fails when it does not, and TestRestrictedUser runs every
// feature on every deployment as a user allowed exactly the core, the
// deployment's list and that feature's list.
var (
	// aclCore keeps +hello, which go-redis can do without (it falls back
	// to AUTH and RESP2), so the users run as most deployments do.
	aclCore = []string{
		"+eval", "+evalsha", "+get", "+set", "+hget", "+hset", "+hmget", "+zadd", "+zrange", "+type", "+publish",
		"+subscribe", "+ping", "+info", "+client|setname", "+hello", "+time",
	}
	// aclDB is what a DB other than 0 adds: go-redis selects it on every
	// connection.
	aclDB = []string{"+select"}
	// aclCluster is what a cluster adds: the cluster client's discovery
	// of the slots, and the command table it routes by (refused, it asks
	// again with every command).
	aclCluster = []string{"+cluster|slots", "+command"}
	// aclOptional are the commands the store or go-redis sends that a
	// user may be refused: they do without them, as docs/redis.md says.
	// The restricted-user tests fail on any other refusal.
	aclOptional = []string{"+client|setinfo", "+script|load", "+config|get"}
	aclUsage    = []string{"+hscan"}
	aclPurge    = []string{"+zscore", "+zrem", "+hdel", "+hexists"}
	aclRepair   = []string{"+del", "+hdel", "+hscan"}
	aclCapture  = []string{"+hgetall", "+hdel", "+scan", "+psubscribe"}
	// aclCaptureConfig lets the store turn keyspace notifications on
	// itself; without it the operator sets notify-keyspace-events.
	aclCaptureConfig = []string{"+config|get", "+config|set"}
)

// aclRules is how docs/redis.md writes a list: the rules in order,
// separated by spaces.
func aclRules(rules []string) string { return strings.Join(rules, " ") }

// TestACLDocs checks that docs/redis.md quotes every command list the
// restricted-user tests run with.
func TestACLDocs(t *testing.T) {
	raw, err := os.ReadFile("../../docs/redis.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Join(strings.Fields(string(raw)), " ") // lines wrap anywhere
	for _, tc := range []struct {
		name  string
		rules []string
	}{
		{"core", aclCore}, {"DB other than 0", aclDB}, {"cluster", aclCluster}, {"optional", aclOptional},
		{"usage", aclUsage}, {"purge", aclPurge}, {"repair", aclRepair},
		{"capture", aclCapture}, {"capture config", aclCaptureConfig},
	} {
		if want := "`" + aclRules(tc.rules) + "`"; !strings.Contains(doc, want) {
			t.Errorf("docs/redis.md does not quote the %s commands: want %s", tc.name, want)
		}
	}
}

// restricted is a deployment the restricted-user tests run on; addUser
// adds its ACL user.
type restricted struct {
	addrs    []string
	cluster  bool
	db       int
	user     string
	password string
	// prefix is the store's key prefix; app the prefix of the app's own
	// keys, which capture reads and mirrors into.
	prefix, app string
	// rules are the commands the deployment adds to aclCore.
	rules []string
	// admin is the default user's client, on the user's database.
	admin goredis.UniversalClient
}

// deployments are a private single node on database 0 and on another
// database (ACL users and CONFIG SET are not for a shared one), and the
// shared cluster, where the user gets a name and key prefix of its own.
var deployments = []struct {
	name  string
	start func(t *testing.T) restricted
}{
	{"single", func(t *testing.T) restricted { return restrictedServer(t, 0) }},
	{"db", func(t *testing.T) restricted { return restrictedServer(t, 3) }},
	{"cluster", restrictedCluster},
}

// restrictedServer starts a private Redis for the user "app", password
// "secret", on database db, with the key prefix "app:" and the app's
// keys under "todo:".
func restrictedServer(t *testing.T, db int) restricted {
	t.Helper()
	srv := startServer(t)
	r := restricted{addrs: []string{srv.Addr()}, db: db, user: "app", password: "secret", prefix: "app:", app: "todo:"}
	if db != 0 {
		r.rules = aclDB
	}
	r.admin = goredis.NewClient(&goredis.Options{Addr: srv.Addr(), DB: db})
	t.Cleanup(func() { r.admin.Close() })
	return r
}

// restrictedCluster is the shared cluster, for a user with a name, key
// prefix and app keys of its own; the keys are deleted when the test ends.
func restrictedCluster(t *testing.T) restricted {
	t.Helper()
	tg := clusterTarget(t)
	id := uniquePrefix()
	r := restricted{
		addrs: tg.addrs, cluster: true, rules: aclCluster,
		user: strings.ReplaceAll(strings.TrimSuffix(id, ":"), ":", "-"), password: "secret",
		prefix: id, app: uniquePrefix() + "todo:",
	}
	r.admin = goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: tg.addrs})
	t.Cleanup(func() { r.admin.Close() })
	cleanupPrefix(t, tg, r.prefix)
	cleanupPrefix(t, tg, r.app)
	return r
}

// addUser adds r's user on the server, or on every master of the cluster
// (ACL users are per node), and deletes it when the test ends. The user
// is limited to the keys and channels under r's prefix, the extra key
// and channel patterns given, and the commands of aclCore, r's rules and
// the features'.
func (r restricted) addUser(t *testing.T, patterns []string, features ...[]string) {
	t.Helper()
	args := []any{"ACL", "SETUSER", r.user, "on", ">" + r.password,
		"resetkeys", "~" + globEscape(r.prefix) + "*", "resetchannels", "&" + globEscape(r.prefix) + "*", "-@all"}
	for _, x := range slices.Concat(append([][]string{patterns, aclCore, r.rules}, features...)...) {
		args = append(args, x)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := r.masters(ctx, func(ctx context.Context, n *goredis.Client) error {
			return n.Do(ctx, "ACL", "DELUSER", r.user).Err()
		})
		if err != nil {
			t.Errorf("ACL DELUSER %s: %v", r.user, err)
		}
	})
	err := r.masters(testContext(t), func(ctx context.Context, n *goredis.Client) error {
		return n.Do(ctx, args...).Err()
	})
	if err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
}

// checkRefusals fails the test unless the server, or every master of the
// cluster, refused r's user nothing but commands of aclOptional and the
// refusals want lists, each its reason and object as ACL LOG gives them.
func (r restricted) checkRefusals(t *testing.T, want ...string) {
	t.Helper()
	optional := map[string]bool{}
	for _, c := range aclOptional {
		optional[strings.TrimPrefix(c, "+")] = true
	}
	var mu sync.Mutex
	var got []string
	err := r.masters(testContext(t), func(ctx context.Context, n *goredis.Client) error {
		log, err := n.ACLLog(ctx, 1000).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for _, e := range log {
			if e.Username != r.user || e.Reason == "command" && optional[e.Object] {
				continue
			}
			if x := e.Reason + " " + e.Object; !slices.Contains(got, x) {
				got = append(got, x)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ACL LOG: %v", err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("refused the restricted user: got %q, want %q (ACL LOG, beside %s)", got, want, aclRules(aclOptional))
	}
}

// masters calls fn on the server, or on every master of the cluster, as
// the admin.
func (r restricted) masters(ctx context.Context, fn func(ctx context.Context, n *goredis.Client) error) error {
	if c, ok := r.admin.(*goredis.ClusterClient); ok {
		return c.ForEachMaster(ctx, fn)
	}
	return fn(ctx, r.admin.(*goredis.Client))
}

// openRestricted opens a store on r as its user, with its key prefix.
func openRestricted(t *testing.T, r restricted, opts Options) *Store {
	t.Helper()
	opts.Addrs, opts.Cluster, opts.DB = r.addrs, r.cluster, r.db
	opts.Username, opts.Password, opts.KeyPrefix = r.user, r.password, r.prefix
	s, err := Open(testContext(t), opts)
	if err != nil {
		t.Fatalf("open as the restricted user: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// oneRecordAs opens a store as a user allowed the core and features,
// and writes one record r to collection c through it.
func oneRecordAs(t *testing.T, start func(t *testing.T) restricted, features ...[]string) (restricted, *Store, context.Context) {
	t.Helper()
	r := start(t)
	r.addUser(t, nil, features...)
	s := openRestricted(t, r, Options{})
	apply(t, s, crdt.SetField("r", "f", mustValue(t, 1), crdt.Stamp{Wall: 1, Replica: "a"}))
	return r, s, testContext(t)
}

// TestRestrictedUser opens the store, on each deployment, as an ACL user
// allowed exactly the commands of aclCore and the deployment's list
// (docs/redis.md), on its key prefix and channels, without SCRIPT LOAD:
// Open succeeds, the scripts load through the EVAL fallback, and every
// call of the core works; then each optional feature runs as a user
// allowed those and that feature's commands.
func TestRestrictedUser(t *testing.T) {
	for _, d := range deployments {
		t.Run(d.name, func(t *testing.T) { testRestrictedUser(t, d.start) })
	}
}

func testRestrictedUser(t *testing.T, start func(t *testing.T) restricted) {
	t.Run("core", func(t *testing.T) {
		r := start(t)
		r.addUser(t, nil)
		s := openRestricted(t, r, Options{})
		ctx := testContext(t)
		if _, err := s.Identity(ctx); err != nil {
			t.Fatalf("identity of a new database as the restricted user: %v", err)
		}
		rec := newRecorder()
		defer s.Watch(rec.notify)()
		rec.waitFor(t, "the first subscription", func(n int, _ map[string]uint64) bool { return n >= 1 })
		res, err := s.Apply(ctx, []crdt.Change{{Collection: "c", Record: crdt.SetField("r", "f", mustValue(t, 1), crdt.Stamp{Wall: 1, Replica: "a"})}})
		if err != nil || !res[0].Changed {
			t.Fatalf("apply as the restricted user: got %+v, %v", res, err)
		}
		if page, err := s.Pull(ctx, "c", 0, page10); err != nil || len(page.Entries) != 1 {
			t.Fatalf("pull as the restricted user: got %+v, %v", page, err)
		}
		rec.waitFor(t, "the change", func(_ int, h map[string]uint64) bool { return h["c"] == 1 })
		if _, err := s.Get(ctx, "c", "r"); err != nil {
			t.Fatalf("get as the restricted user: %v", err)
		}
		if head, err := s.Head(ctx, "c"); err != nil || head != 1 {
			t.Fatalf("head as the restricted user: got %d, %v; want 1", head, err)
		}
		if _, err := s.Meta(ctx, "c"); err != nil {
			t.Fatalf("meta as the restricted user: %v", err)
		}
		// The engine's check of the server clock (engine.StoreClock).
		if _, _, err := s.StoreTime(ctx); err != nil {
			t.Fatalf("the store's clock as the restricted user: %v", err)
		}
		// Epoch bumps run only those commands too.
		if err := s.BumpEpoch(ctx, "c", stores.HistoryLost); err != nil {
			t.Fatalf("bump the epoch as the restricted user: %v", err)
		}
		if err := s.BumpEpochs(ctx); err != nil {
			t.Fatalf("bump every epoch as the restricted user: %v", err)
		}
		if ok, err := s.BumpEpochsFrom(ctx, 0); err != nil || ok {
			t.Fatalf("bump every epoch from 0 (gone by) as the restricted user: %v, %v; want false, nil", ok, err)
		}
		// The records are in the user's database.
		if n, err := r.admin.Exists(ctx, s.recKey("c")).Result(); err != nil || n != 1 {
			t.Fatalf("the records in database %d: EXISTS got %d, %v; want 1", r.db, n, err)
		}
		// Keys outside the prefix stay out of reach.
		other, err := New(s.client, Options{KeyPrefix: "other:"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := other.Head(ctx, "c"); err == nil || !strings.Contains(err.Error(), "NOPERM") {
			t.Fatalf("head outside the prefix: got %v, want NOPERM", err)
		}
		r.checkRefusals(t, "key "+other.seqKey("c"))
	})

	t.Run("usage", func(t *testing.T) {
		r, s, ctx := oneRecordAs(t, start, aclUsage)
		// Without its usage hash (a collection written before usage was
		// kept) the collection is counted.
		if err := r.admin.Del(ctx, s.usageKey("c")).Err(); err != nil {
			t.Fatal(err)
		}
		if u, err := s.Usage(ctx, "c"); err != nil || u.Records != 1 {
			t.Fatalf("usage as the restricted user: got %+v, %v; want 1 record", u, err)
		}
		r.checkRefusals(t)
	})

	t.Run("purge", func(t *testing.T) {
		r, s, ctx := oneRecordAs(t, start, aclPurge)
		apply(t, s, crdt.DeleteRecord("r", crdt.Stamp{Wall: 2, Replica: "a"}))
		m, err := s.Meta(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Purge(ctx, "c", stores.Horizon{Epoch: m.Epoch, Read: []uint64{2}, Wall: 10}, stores.PurgeScan{})
		if err != nil || res.Records != 1 {
			t.Fatalf("purge as the restricted user: got %+v, %v; want 1 record removed", res, err)
		}
		if u, err := s.Usage(ctx, "c"); err != nil || u.Records != 0 {
			t.Fatalf("usage after the purge: got %+v, %v; want 0 records", u, err)
		}
		r.checkRefusals(t)
	})

	t.Run("repair", func(t *testing.T) {
		r, s, ctx := oneRecordAs(t, start, aclRepair)
		// An unreadable record, which Repair drops, and a head of the
		// wrong type, which it deletes.
		if err := r.admin.HSet(ctx, s.recKey("c"), "bad", "not a record").Err(); err != nil {
			t.Fatal(err)
		}
		if err := r.admin.Del(ctx, s.seqKey("c")).Err(); err != nil {
			t.Fatal(err)
		}
		if err := r.admin.RPush(ctx, s.seqKey("c"), "x").Err(); err != nil {
			t.Fatal(err)
		}
		rep, err := s.Repair(ctx, "c")
		if err != nil || rep.Records != 1 || rep.Lost != 1 {
			t.Fatalf("repair as the restricted user: got %+v, %v; want 1 record kept, 1 lost", rep, err)
		}
		r.checkRefusals(t)
	})

	// Capture of the app's hashes (todo:<id> on a private server), outside
	// the prefix: the user needs the keys and, for keyspace
	// notifications, the channel of the pattern as it is (PSUBSCRIBE is
	// checked against it literally), with the database's number.
	for _, tc := range []struct {
		name     string
		features [][]string
	}{
		{"capture", [][]string{aclCapture}},
		{"capture with config", [][]string{aclCapture, aclCaptureConfig}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := start(t)
			pattern := r.app + "*"
			r.addUser(t, []string{"~" + pattern, fmt.Sprintf("&__keyspace@%d__:%s", r.db, pattern)}, tc.features...)
			ctx := testContext(t)
			config := len(tc.features) > 1
			if !config {
				// Where the user may not, the operator turns them on.
				err := r.masters(ctx, func(ctx context.Context, n *goredis.Client) error {
					cur, err := n.ConfigGet(ctx, "notify-keyspace-events").Result()
					if err != nil {
						return err
					}
					return n.ConfigSet(ctx, "notify-keyspace-events", cur["notify-keyspace-events"]+keyspaceFlags).Err()
				})
				if err != nil {
					t.Fatal(err)
				}
			}
			// Reconciliation runs at the start and after the subscription
			// only: later writes reach the store by notification alone.
			s := openRestricted(t, r, Options{
				Capture:         []CaptureRule{{Collection: "todos", KeyPattern: pattern, Mirror: true}},
				CaptureInterval: time.Hour,
			})
			sink := func(ctx context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
				if _, err := s.Apply(ctx, changes); err != nil {
					return nil, err
				}
				return make([]stores.CaptureResult, len(changes)), nil
			}
			// A hash written before capture starts is found by
			// reconciliation (SCAN).
			if err := r.admin.HSet(ctx, r.app+"1", "title", "milk").Err(); err != nil {
				t.Fatal(err)
			}
			defer s.Capture(stores.CaptureSink{Apply: sink})()
			eventually(t, "the keyspace subscription on every master", func() (bool, string) {
				return r.everyMaster(ctx, func(ctx context.Context, n *goredis.Client) (bool, string) {
					list, err := n.ClientList(ctx).Result()
					if err != nil {
						return false, err.Error()
					}
					for l := range strings.Lines(list) {
						f := strings.Fields(l)
						if slices.Contains(f, "user="+r.user) && !slices.Contains(f, "psub=0") && slices.ContainsFunc(f, func(x string) bool { return strings.HasPrefix(x, "psub=") }) {
							return true, ""
						}
					}
					return false, "CLIENT LIST:\n" + list
				})
			})
			if config {
				eventually(t, "notifications turned on by the store on every master", func() (bool, string) {
					return r.everyMaster(ctx, func(ctx context.Context, n *goredis.Client) (bool, string) {
						cur, err := n.ConfigGet(ctx, "notify-keyspace-events").Result()
						flags := cur["notify-keyspace-events"]
						for _, f := range keyspaceFlags {
							if err != nil || !strings.ContainsRune(flags, f) {
								return false, fmt.Sprintf("notify-keyspace-events %s, %v", flags, err)
							}
						}
						return true, ""
					})
				})
			}
			captured := func(id string, want map[string]string) func() (bool, string) {
				return func() (bool, string) {
					got := recordView(t, s, id)
					return maps.Equal(got, want), fmt.Sprintf("record %s: %v", id, got)
				}
			}
			eventually(t, "the hash written before", captured("1", map[string]string{"title": "milk"}))
			// A hash written now reaches the store by notification.
			if err := r.admin.HSet(ctx, r.app+"2", "title", "eggs").Err(); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the hash written after", captured("2", map[string]string{"title": "eggs"}))
			// Mirror: a record written through the store, and a field
			// unset, reach the hashes.
			apply(t, s, crdt.SetField("3", "title", mustValue(t, "tea"), crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "a"}))
			eventually(t, "the mirrored record", func() (bool, string) {
				h := hashView(t, r.admin, r.app+"3")
				return maps.Equal(h, map[string]string{"title": "tea"}), fmt.Sprintf("%s3: %v", r.app, h)
			})
			apply(t, s, crdt.UnsetField("2", "title", crdt.Stamp{Wall: time.Now().UnixMilli() + 1000, Replica: "a"}))
			eventually(t, "the mirrored unset", func() (bool, string) {
				h := hashView(t, r.admin, r.app+"2")
				return len(h) == 0, fmt.Sprintf("%s2: %v", r.app, h)
			})
			if st := s.Stats(); st.CaptureSkipped != 0 || st.CaptureRefused != 0 {
				t.Fatalf("capture stats: %+v", st)
			}
			r.checkRefusals(t)
		})
	}
}

// everyMaster reports whether cond holds on the server, or on every master
// of the cluster, and if not, what it saw.
func (r restricted) everyMaster(ctx context.Context, cond func(ctx context.Context, n *goredis.Client) (bool, string)) (bool, string) {
	var mu sync.Mutex
	var why []string
	err := r.masters(ctx, func(ctx context.Context, n *goredis.Client) error {
		ok, w := cond(ctx, n)
		if !ok {
			mu.Lock()
			why = append(why, n.Options().Addr+": "+w)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return false, err.Error()
	}
	return len(why) == 0, strings.Join(why, "\n")
}

// apply applies rec to collection "c" ("todos" in a store with capture
// rules) and fails the test unless it succeeds.
func apply(t *testing.T, s *Store, rec crdt.Record) {
	t.Helper()
	coll := "c"
	if s.capture != nil {
		coll = "todos"
	}
	if _, err := s.Apply(testContext(t), []crdt.Change{{Collection: coll, Record: rec}}); err != nil {
		t.Fatalf("apply %s/%s as the restricted user: %v", coll, rec.ID, err)
	}
}

// TestCaptureSaysWhenKeyspaceIsRefused: a user allowed the capture's
// commands but not the keyspace channel of its pattern (PSUBSCRIBE is
// checked against it literally) gets no notifications; the store must
// say so, not leave captured writes waiting for reconciliation unseen.
func TestCaptureSaysWhenKeyspaceIsRefused(t *testing.T) {
	r := restrictedServer(t, 0)
	r.addUser(t, []string{"~todo:*", "&__keyspace@0__:*"}, aclCapture)
	ctx := testContext(t)
	if err := r.admin.ConfigSet(ctx, "notify-keyspace-events", keyspaceFlags).Err(); err != nil {
		t.Fatal(err)
	}
	var logs storetest.LogBuffer
	s := openRestricted(t, r, Options{
		Capture:         []CaptureRule{{Collection: "todos", KeyPattern: "todo:*"}},
		CaptureInterval: time.Hour,
		Logger:          slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	sink := func(ctx context.Context, changes []crdt.Change) ([]stores.CaptureResult, error) {
		return make([]stores.CaptureResult, len(changes)), nil
	}
	defer s.Capture(stores.CaptureSink{Apply: sink})()
	eventually(t, "a warning that the keyspace subscription was refused", func() (bool, string) {
		out := logs.String()
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "subscri") && strings.Contains(l, "NOPERM") {
				return true, ""
			}
		}
		return false, out
	})
}
