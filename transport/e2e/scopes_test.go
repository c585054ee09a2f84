package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/stores/storetest"
	"github.com/convergo/convergo/stores/storeurl"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/client"
	"github.com/convergo/convergo/transport/proto"
)

// The scoped-sync scenario of TestScopesAcrossStores: one collection whose
// read (and so write) scope is the server rule `team in $claims.teams`.
const (
	scopeColl  = "tasks"
	scopeRule  = "team in $claims.teams"
	scopeRules = `{"tasks": {"scope": "team in $claims.teams"}}`
	// scopeTasks is how many tasks of each team the admin writes.
	scopeTasks = 5
)

// scopeEnv is two server instances on one store.
type scopeEnv struct {
	urlA, urlB string
	jwt        *transport.JWT
	// eng is the test's own engine on the store: it reads the server's
	// records (unscoped) to compare the clients with.
	eng *engine.Engine
	// deny puts subject on the store's deny list from outside both
	// instances' request paths (the CLI, or transport.Deny).
	deny func(t *testing.T, subject string)
	// wait bounds how long a change may take to reach a live client.
	wait time.Duration
}

// TestScopesAcrossStores runs scoped sync on every store with two server
// instances sharing it, each with the rules file: Alice (teams [red]) is
// live on instance A, Bob (teams [blue]) on B, and an admin whose teams
// cover every team writes through B.
//
//  1. Each client ends up holding exactly the server's records its scope
//     matches, and no page or live frame it received, over HTTP or the
//     WebSocket, held a record outside its scope (the test reads the
//     clients' wire traffic, not their replicas).
//  2. A task the admin moves red→blue leaves Alice's replica live, through
//     A, by a leave entry, and arrives at Bob's.
//  3. Alice's create of a blue task and move of a red task to blue are
//     refused out_of_scope (her rejected changes); her red edits apply.
//  4. Bob's subject put on the deny list from outside the instances ends
//     his live session on B with revoked within seconds (B learns it from
//     the store's notifications), purges his replica, and instance A
//     refuses him too; Alice goes on syncing.
//
// bolt cannot be shared by two processes: there the two instances are two
// transport.Servers in this process on one engine. On Redis, a Redis
// Cluster and DynamoDB Local they are two `convergo serve --rules`
// processes, and the deny record comes from `convergo deny --store`; under
// -short only bolt runs.
func TestScopesAcrossStores(t *testing.T) {
	var (
		binOnce sync.Once
		bin     string
		binErr  error
	)
	dir := t.TempDir()
	binary := func(t *testing.T) string {
		if testing.Short() {
			t.Skip("builds and runs the convergo binary")
		}
		binOnce.Do(func() { bin, binErr = buildConvergoIn(dir) })
		if binErr != nil {
			t.Fatal(binErr)
		}
		return bin
	}
	cases := []struct {
		name  string
		setup func(t *testing.T) *scopeEnv
	}{
		{"bolt", inProcessScopeEnv},
		{"redis", func(t *testing.T) *scopeEnv {
			addr := storetest.Endpoint(t, "CONVERGO_REDIS_ADDR")
			return processScopeEnv(t, binary(t), "redis://"+addr+"?prefix=e2e-scopes-"+randomSuffix(t)+":", 5*time.Second)
		}},
		{"redis-cluster", func(t *testing.T) *scopeEnv {
			addrs := storetest.Endpoint(t, "CONVERGO_REDIS_CLUSTER_ADDRS")
			return processScopeEnv(t, binary(t), "redis-cluster://"+addrs+"?prefix=e2e-scopes-"+randomSuffix(t)+":", 5*time.Second)
		}},
		{"dynamodb", func(t *testing.T) *scopeEnv {
			ep := storetest.Endpoint(t, "CONVERGO_DYNAMODB_ENDPOINT")
			return processScopeEnv(t, binary(t), "dynamodb://e2e-scopes-"+randomSuffix(t)+"?region=us-east-1&create=1&poll=200ms&endpoint="+ep, 20*time.Second)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			env := tc.setup(t)
			t.Logf("%s: two instances up in %v", tc.name, time.Since(start).Round(time.Millisecond))
			runScopes(t, env)
			t.Logf("%s: done in %v", tc.name, time.Since(start).Round(time.Millisecond))
		})
	}
}

// buildConvergoIn builds cmd/convergo into dir.
func buildConvergoIn(dir string) (string, error) {
	bin := filepath.Join(dir, "convergo")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/convergo")
	cmd.Dir = filepath.Join("..", "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/convergo: %v\n%s", err, out)
	}
	return bin, nil
}

// inProcessScopeEnv serves one bolt store through one engine (with the
// rules) and two transport.Servers, each following the deny list on its
// own.
func inProcessScopeEnv(t *testing.T) *scopeEnv {
	st := openEmbedded(t)
	rules, err := engine.ParseRules([]byte(scopeRules))
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.Open(engine.Config{Store: st, Rules: rules, PollInterval: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	jwt, err := transport.NewJWT(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	sealKey := []byte("e2e-scopes-seal-key-0123456789ab")
	serve := func() string {
		srv, err := transport.New(transport.Config{Engine: eng, Authorizer: jwt, SealKey: sealKey, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(srv)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			hs.CloseClientConnections()
			hs.Close()
		})
		return hs.URL
	}
	return &scopeEnv{
		urlA: serve(), urlB: serve(), jwt: jwt, eng: eng, wait: 5 * time.Second,
		deny: func(t *testing.T, subject string) {
			if err := transport.Deny(t.Context(), eng, transport.DenyEntry{ID: transport.DenySubject + subject, Reason: "e2e", By: "e2e"}); err != nil {
				t.Fatal(err)
			}
		},
	}
}

// processScopeEnv runs two `convergo serve --rules` processes on store
// (started one after the other, so that a store that creates its table
// does so once) and opens the test's own handle on it.
func processScopeEnv(t *testing.T, bin, store string, wait time.Duration) *scopeEnv {
	rulesFile := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(rulesFile, []byte(scopeRules), 0o600); err != nil {
		t.Fatal(err)
	}
	serve := func(name string) string {
		addr := freeAddr(t)
		p := startProcess(t, name, bin, "serve", "--addr", addr, "--store", store, "--rules", rulesFile,
			"--secret", string(secret), "--demo=false", "--log-level", "warn")
		waitHTTP(t, p, "http://"+addr+"/readyz")
		return "http://" + addr
	}
	urlA := serve("convergo serve A")
	urlB := serve("convergo serve B")

	spec, err := storeurl.Parse(store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err := spec.Open(ctx, storeurl.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("open %s: %v", storeurl.Redact(store), err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := engine.Open(engine.Config{Store: st, PollInterval: -1, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	jwt, err := transport.NewJWT(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &scopeEnv{
		urlA: urlA, urlB: urlB, jwt: jwt, eng: eng, wait: wait,
		deny: func(t *testing.T, subject string) {
			out, err := exec.Command(bin, "deny", "--store", store, "--subject", subject, "--reason", "e2e", "--by", "e2e").CombinedOutput()
			if err != nil {
				t.Fatalf("convergo deny: %v\n%s", err, out)
			}
		},
	}
}

// scopeUser is one principal's replica, with what it saw on the wire.
type scopeUser struct {
	name  string
	rep   *client.Replica
	pred  *scope.Pred // the principal's read scope, bound
	watch *wireWatch

	mu   sync.Mutex
	left []string // ids OnLeave reported

	liveDone chan error
}

func (u *scopeUser) leftIDs() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.left)
}

// newScopeUser returns a replica of tasks for subject with teams, through
// url; live starts a live session on it.
func newScopeUser(t *testing.T, env *scopeEnv, url, subject string, teams ...string) *scopeUser {
	t.Helper()
	claimTeams := make([]any, len(teams))
	for i, team := range teams {
		claimTeams[i] = team
	}
	tok, err := env.jwt.IssueToken(transport.TokenSpec{Subject: subject, Read: []string{scopeColl}, Write: []string{scopeColl},
		TTL: time.Hour, Claims: map[string]any{"teams": claimTeams}})
	if err != nil {
		t.Fatal(err)
	}
	rule, err := scope.Parse(scopeRule)
	if err != nil {
		t.Fatal(err)
	}
	pred, err := rule.Bind(scope.Params{"sub": subject, "claims": map[string]any{"teams": claimTeams}})
	if err != nil {
		t.Fatal(err)
	}
	u := &scopeUser{name: subject, pred: pred, watch: &wireWatch{name: subject, pred: pred, liveLeaves: map[string]bool{}}}
	next := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(next.CloseIdleConnections)
	c := newClient(t, url, tok, subject+"-"+randomSuffix(t), &http.Client{Transport: &watchTransport{next: next, w: u.watch}})
	u.rep, err = client.NewReplica(c, client.ReplicaConfig{
		Collections: []string{scopeColl},
		OnLeave: func(_, id string) {
			u.mu.Lock()
			u.left = append(u.left, id)
			u.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (u *scopeUser) live(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	u.liveDone = make(chan error, 1)
	go func() { u.liveDone <- u.rep.Live(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-u.liveDone:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Live did not return after its context ended", u.name)
		}
	})
}

func runScopes(t *testing.T, env *scopeEnv) {
	ctx := t.Context()
	step := time.Now()
	lap := func(what string) {
		t.Logf("%s: %v", what, time.Since(step).Round(time.Millisecond))
		step = time.Now()
	}

	admin := newScopeUser(t, env, env.urlB, "admin", "red", "blue", "green")
	alice := newScopeUser(t, env, env.urlA, "alice", "red")
	bob := newScopeUser(t, env, env.urlB, "bob", "blue")
	// Alice's phone pulls through B and is never live: the HTTP path.
	phone := newScopeUser(t, env, env.urlB, "alice", "red")
	phone.name, phone.watch.name = "alice's phone", "alice's phone"
	users := []*scopeUser{admin, alice, bob, phone}
	defer func() {
		for _, u := range users {
			u.watch.check(t)
		}
	}()
	for _, u := range []*scopeUser{alice, bob} {
		if err := u.rep.Sync(ctx); err != nil {
			t.Fatalf("%s: first sync: %v", u.name, err)
		}
		u.live(t)
	}

	// 1. The admin writes every team's tasks through B.
	set := func(u *scopeUser, id string, fields ...any) {
		t.Helper()
		for i := 0; i < len(fields); i += 2 {
			if err := u.rep.Set(scopeColl, id, fields[i].(string), fields[i+1]); err != nil {
				t.Fatalf("%s: set %s: %v", u.name, id, err)
			}
		}
	}
	flush := func(u *scopeUser) {
		t.Helper()
		if err := u.rep.Flush(ctx); err != nil {
			t.Fatalf("%s: flush: %v", u.name, err)
		}
	}
	for i := range scopeTasks {
		set(admin, fmt.Sprint("red-", i), "team", "red", "title", fmt.Sprint("red task ", i))
		set(admin, fmt.Sprint("blue-", i), "team", "blue", "title", fmt.Sprint("blue task ", i))
	}
	set(admin, "green-0", "team", "green", "title", "nobody's")
	flush(admin)
	if rej := admin.rep.Rejected(); len(rej) != 0 {
		t.Fatalf("the admin's writes were refused: %+v", rej)
	}
	server := func() map[string]crdt.Record { return engineSnapshot(t, ctx, env.eng, scopeColl) }
	if n := len(server()); n != 2*scopeTasks+1 {
		t.Fatalf("the store holds %d tasks, want %d", n, 2*scopeTasks+1)
	}
	waitScoped(t, env.wait, server, alice, bob)
	lap("1. the admin's tasks reached Alice (A) and Bob (B), each their team's, live")
	if err := phone.rep.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if d := diffRecords(phone.rep.Records(scopeColl), scopedRecords(server(), phone.pred)); d != "" {
		t.Fatalf("alice's phone after a pull through B differs from the server's red tasks:\n%s", d)
	}
	if n := len(alice.rep.Records(scopeColl)); n != scopeTasks {
		t.Fatalf("alice holds %d tasks, want %d", n, scopeTasks)
	}
	for _, u := range []*scopeUser{alice, bob} {
		if s := u.watch.stats(); s.records == 0 || s.leaves == 0 {
			t.Fatalf("%s: the wire watch saw %d records and %d leave entries: it does not see the traffic", u.name, s.records, s.leaves)
		}
	}
	// The phone's first sync started from nothing (pull key 7): its
	// records, and no leave entry for the other teams' tasks.
	if s := phone.watch.stats(); s.records == 0 || s.leaves != 0 {
		t.Fatalf("alice's phone: the wire watch saw %d records and %d leave entries on a first sync; want some and none", s.records, s.leaves)
	}
	if s := alice.watch.stats(); s.liveRecords == 0 {
		t.Fatalf("alice received no record in a live frame (%+v)", s)
	}
	if s := phone.watch.stats(); s.pullRecords == 0 {
		t.Fatalf("alice's phone received no record in a pull page (%+v)", s)
	}

	// 2. The admin moves red-0 to blue through B: it leaves Alice's replica,
	// live through A, and arrives at Bob's.
	set(admin, "red-0", "team", "blue")
	flush(admin)
	waitFor(t, env.wait, "red-0 to leave alice and reach bob", func() string {
		if _, ok := alice.rep.Get(scopeColl, "red-0"); ok {
			return "alice still holds red-0"
		}
		// The replica calls OnLeave after it has dropped the record.
		if left := alice.leftIDs(); !slices.Contains(left, "red-0") {
			return fmt.Sprintf("alice's OnLeave did not report red-0 (reported %v)", left)
		}
		r, ok := bob.rep.Get(scopeColl, "red-0")
		if !ok {
			return "bob does not hold red-0"
		}
		if team := fieldString(r, "team"); team != "blue" {
			return "bob's red-0 has team " + team
		}
		return ""
	})
	if !alice.watch.sawLiveLeave(scopeColl, "red-0") {
		t.Error("red-0 left alice without a leave entry in a live frame")
	}
	waitScoped(t, env.wait, server, alice, bob)
	lap("2. red-0 moved to blue: left alice live, reached bob")

	// 3. Write rules: Alice may neither create a blue task nor move a red
	// one to blue; her red edits apply.
	set(alice, "alice-blue", "team", "blue")
	set(alice, "red-1", "team", "blue")
	set(alice, "red-2", "title", "edited by alice")
	set(alice, "alice-red", "team", "red", "title", "alice's own")
	flush(alice)
	rejected := map[string]string{}
	for _, j := range alice.rep.Rejected() {
		rejected[j.RecordID] = j.Code
		if !errors.Is(j.Err(), client.ErrOutOfScope) {
			t.Errorf("alice's rejected change of %s: %v, want ErrOutOfScope", j.RecordID, j.Err())
		}
	}
	if want := map[string]string{"alice-blue": proto.CodeOutOfScope, "red-1": proto.CodeOutOfScope}; fmt.Sprint(rejected) != fmt.Sprint(want) {
		t.Fatalf("alice's rejected changes: %v, want %v", rejected, want)
	}
	if r, ok := alice.rep.Get(scopeColl, "red-1"); !ok || fieldString(r, "team") != "red" {
		t.Errorf("alice's red-1 after the refused move: %v (held %v), want team red", formatRecord(r), ok)
	}
	if _, ok := alice.rep.Get(scopeColl, "alice-blue"); ok {
		t.Error("alice still holds the refused alice-blue")
	}
	srv := server()
	if _, ok := srv["alice-blue"]; ok {
		t.Error("the store holds alice-blue")
	}
	if got := fieldString(srv["red-1"], "team"); got != "red" {
		t.Errorf("the store's red-1 has team %q, want red", got)
	}
	if got := fieldString(srv["red-2"], "title"); got != "edited by alice" {
		t.Errorf("the store's red-2 has title %q, want alice's edit", got)
	}
	if got := fieldString(srv["alice-red"], "team"); got != "red" {
		t.Errorf("the store's alice-red has team %q, want red", got)
	}
	waitScoped(t, env.wait, server, alice, bob)
	lap("3. write rules: alice's blue create and red→blue move refused out_of_scope, her red edits applied")

	// 4. Bob's subject goes on the deny list from outside both instances:
	// his live session on B ends with revoked and his replica is purged.
	held := slices.Sorted(maps.Keys(bob.rep.Records(scopeColl)))
	if len(held) == 0 {
		t.Fatal("bob holds nothing before the deny")
	}
	denied := time.Now()
	env.deny(t, "bob")
	wrote := time.Since(denied)
	select {
	case err := <-bob.liveDone:
		bob.liveDone <- err // for the cleanup
		if !errors.Is(err, client.ErrRevoked) {
			t.Fatalf("bob's live session ended with %v, want revoked", err)
		}
	case <-time.After(env.wait):
		t.Fatalf("bob's live session on B still runs %v after the deny", env.wait)
	}
	t.Logf("4. deny written in %v; bob's live session on B ended with revoked %v after the deny began",
		wrote.Round(time.Millisecond), time.Since(denied).Round(time.Millisecond))
	if !bob.watch.sawLiveError(proto.CodeRevoked) {
		t.Error("bob's live session ended without an error revoked frame")
	}
	if err := bob.rep.Revoked(); !errors.Is(err, client.ErrRevoked) {
		t.Errorf("bob's replica: Revoked() = %v", err)
	}
	if n := len(bob.rep.Records(scopeColl)); n != 0 {
		t.Errorf("bob's replica holds %d tasks after the revocation, want none", n)
	}
	if left := slices.Compact(slices.Sorted(slices.Values(bob.leftIDs()))); !isSubset(held, left) {
		t.Errorf("bob's OnLeave reported %v, want every task he held: %v", left, held)
	}
	// Instance A refuses him too; Alice goes on, live through A.
	waitFor(t, env.wait, "instance A to refuse bob", func() string {
		c, err := client.New(client.Config{URL: env.urlA, Token: bobToken(t, env), Device: "bob-late"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hello(ctx); !errors.Is(err, client.ErrRevoked) {
			return fmt.Sprintf("hello through A: %v", err)
		}
		return ""
	})
	set(admin, "red-late", "team", "red", "title", "after the deny")
	flush(admin)
	waitScoped(t, env.wait, server, alice)
	lap("4. bob denied: revoked on B, purged, refused by A; alice still live")
}

func bobToken(t *testing.T, env *scopeEnv) string {
	tok, err := env.jwt.IssueToken(transport.TokenSpec{Subject: "bob", Read: []string{scopeColl}, Write: []string{scopeColl},
		TTL: time.Hour, Claims: map[string]any{"teams": []any{"blue"}}})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// waitScoped waits until each user holds exactly the server's records its
// scope matches.
func waitScoped(t *testing.T, d time.Duration, server func() map[string]crdt.Record, users ...*scopeUser) {
	t.Helper()
	for _, u := range users {
		waitFor(t, d, u.name+" to hold exactly its scope of the server's records", func() string {
			return diffRecords(u.rep.Records(scopeColl), scopedRecords(server(), u.pred))
		})
	}
}

// waitFor polls cond until it returns "" or d passes, then fails with its
// last answer.
func waitFor(t *testing.T, d time.Duration, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s:\n%s", d, what, msg)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// engineSnapshot reads every record of collection through eng, unscoped,
// tombstones included.
func engineSnapshot(t *testing.T, ctx context.Context, eng *engine.Engine, collection string) map[string]crdt.Record {
	t.Helper()
	out := map[string]crdt.Record{}
	var cur engine.Cursor
	for {
		p, err := eng.Pull(ctx, collection, cur, engine.PageLimit{Records: stores.MaxPage})
		if err != nil {
			t.Fatalf("pull %s from the store: %v", collection, err)
		}
		for _, e := range p.Entries {
			out[e.Record.ID] = e.Record
		}
		cur = p.Next
		if !p.More {
			return out
		}
	}
}

// scopedRecords returns the records of all that p matches.
func scopedRecords(all map[string]crdt.Record, p *scope.Pred) map[string]crdt.Record {
	out := map[string]crdt.Record{}
	for id, r := range all {
		if p.Match(r) {
			out[id] = r
		}
	}
	return out
}

func fieldString(r crdt.Record, name string) string {
	f, ok := r.Fields[name]
	if !ok || f.Value == nil {
		return ""
	}
	var s string
	if err := crdt.DecodeValue(f.Value, &s); err != nil {
		return fmt.Sprintf("<%x>", f.Value)
	}
	return s
}

func isSubset(sub, of []string) bool {
	for _, s := range sub {
		if !slices.Contains(of, s) {
			return false
		}
	}
	return true
}

// wireWatch checks every page and live frame one client received: each
// record must be of the watched collection and match pred.
type wireWatch struct {
	name string
	pred *scope.Pred

	mu          sync.Mutex
	pullRecords int
	liveRecords int
	leaves      int
	liveLeaves  map[string]bool // hex of the leave entries of live frames
	liveErrors  []string        // codes of live error messages
	bad         []string
}

type wireStats struct{ records, pullRecords, liveRecords, leaves int }

func (w *wireWatch) stats() wireStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return wireStats{w.pullRecords + w.liveRecords, w.pullRecords, w.liveRecords, w.leaves}
}

func (w *wireWatch) saw(via, collection string, records []crdt.Record, leaves [][]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range records {
		if collection != scopeColl || !w.pred.Match(r) {
			w.bad = append(w.bad, fmt.Sprintf("%s %s/%s %s", via, collection, r.ID, formatRecord(r)))
		}
	}
	w.leaves += len(leaves)
	if via == "live" {
		w.liveRecords += len(records)
		for _, l := range leaves {
			w.liveLeaves[hex.EncodeToString(l)] = true
		}
	} else {
		w.pullRecords += len(records)
	}
}

func (w *wireWatch) failf(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bad = append(w.bad, fmt.Sprintf(format, args...))
}

func (w *wireWatch) sawLiveLeave(collection, id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.liveLeaves[hex.EncodeToString(proto.LeaveDigest(collection, id))]
}

func (w *wireWatch) sawLiveError(code string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Contains(w.liveErrors, code)
}

// check fails t for every record the client received outside its scope.
func (w *wireWatch) check(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.bad) > 0 {
		sort.Strings(w.bad)
		t.Errorf("%s (scope %s) received what it may not see:\n  %s", w.name, w.pred, strings.Join(w.bad, "\n  "))
	}
}

// watchTransport hands the answers of pulls and the frames of live
// sessions that pass through it to a wireWatch, untouched.
type watchTransport struct {
	next http.RoundTripper
	w    *wireWatch
}

func (wt *watchTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var collection string
	if r.URL.Path == proto.PathPull {
		if r.GetBody == nil {
			wt.w.failf("a pull request without GetBody: the watch cannot read it")
		} else if body, err := r.GetBody(); err == nil {
			b, _ := io.ReadAll(body)
			body.Close()
			var req proto.PullRequest
			if err := proto.Decode(b, &req); err != nil {
				wt.w.failf("pull request: %v", err)
			}
			collection = req.Collection
		}
	}
	resp, err := wt.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols:
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			wt.w.failf("a WebSocket answer whose body is a %T: the watch cannot read it", resp.Body)
			return resp, nil
		}
		resp.Body = &frameTap{ReadWriteCloser: rwc, w: wt.w}
	case r.URL.Path == proto.PathPull && resp.StatusCode == http.StatusOK:
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		var a proto.PullResponse
		if err := proto.Decode(b, &a); err != nil {
			wt.w.failf("pull answer: %v", err)
		} else {
			wt.w.saw("pull", collection, a.Records, a.Leaves)
		}
	}
	return resp, nil
}

// frameTap reads the server's WebSocket frames as the client reads them
// (RFC 6455, section 5.2; the server's frames are not masked, and the
// client offers no compression) and hands each message to its watch.
type frameTap struct {
	io.ReadWriteCloser
	w   *wireWatch
	buf []byte // bytes of a frame not complete yet
	msg []byte // the data of a fragmented message so far
}

func (f *frameTap) Read(p []byte) (int, error) {
	n, err := f.ReadWriteCloser.Read(p)
	if n > 0 {
		f.buf = append(f.buf, p[:n]...)
		f.frames()
	}
	return n, err
}

func (f *frameTap) frames() {
	for {
		b := f.buf
		if len(b) < 2 {
			return
		}
		fin, rsv, op := b[0]&0x80 != 0, b[0]&0x70, b[0]&0x0f
		size, h := uint64(b[1]&0x7f), 2
		switch size {
		case 126:
			if len(b) < 4 {
				return
			}
			size, h = uint64(binary.BigEndian.Uint16(b[2:])), 4
		case 127:
			if len(b) < 10 {
				return
			}
			size, h = binary.BigEndian.Uint64(b[2:]), 10
		}
		var key []byte
		if b[1]&0x80 != 0 {
			if len(b) < h+4 {
				return
			}
			key, h = b[h:h+4], h+4
		}
		if uint64(len(b)-h) < size {
			return
		}
		payload := bytes.Clone(b[h : h+int(size)])
		for i := range payload {
			if key != nil {
				payload[i] ^= key[i%4]
			}
		}
		f.buf = bytes.Clone(b[h+int(size):])
		if rsv != 0 {
			f.w.failf("a WebSocket frame with RSV bits %x: compressed, the watch cannot read it", rsv)
			continue
		}
		if op >= 8 { // close, ping, pong
			continue
		}
		f.msg = append(f.msg, payload...)
		if !fin {
			continue
		}
		data := f.msg
		f.msg = nil
		m, err := proto.DecodeServerMessage(data)
		if err != nil {
			f.w.failf("live message: %v", err)
			continue
		}
		switch m := m.(type) {
		case proto.Changes:
			f.w.saw("live", m.Collection, m.Records, m.Leaves)
		case proto.ErrorMessage:
			f.w.mu.Lock()
			f.w.liveErrors = append(f.w.liveErrors, m.Code)
			f.w.mu.Unlock()
		}
	}
}
