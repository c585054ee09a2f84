package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/crdt/scope"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
)

// teamName is the value of the team field of seeded record i mod teams.
func teamName(t int) string { return fmt.Sprintf("t%02d", t) }

// runScoped measures scoped fan-out. One server (this program's serve,
// in-memory store) is seeded with records whose field team spreads them
// over -teams values. Subscriber i subscribes with the scope
// team == teamName(i mod teams), after pulling its scope up to the head
// the way a client's first sync does (one pull loop per scope; the
// subscribers of one scope share its cursor). One writer then pushes one
// change every interval over HTTP, each to a record not written before
// in the run, changing its title and, with probability -move, moving it
// to another team. Per push it measures:
//
//   - push→receipt of the record at the subscribers whose scope holds
//     the record after the change (and only there);
//   - push→receipt of the leave entry at the subscribers whose scope the
//     record left (a move);
//   - leave entries received in all, server CPU (user+system of the
//     server process over the write phase, as fanout measures it), store
//     reads (/bench/reads) and bytes received.
//
// A subscriber outside the record's new scope that receives the record,
// or one inside it that receives a leave for it, is a violation: the
// run's samples are printed and the command fails. The same server then
// serves the same run shape with every subscriber unscoped, interleaved
// run by run, for the figure beside it.
func runScoped(args []string) error {
	fs := flag.NewFlagSet("scoped", flag.ExitOnError)
	runs := fs.Int("runs", 3, "measured runs of each mode")
	records := fs.Int("records", 100_000, "records seeded into the store")
	teams := fs.Int("teams", 100, "values of the team field (scopes)")
	subs := fs.Int("subs", 1000, "subscribers (subscriber i has the scope team == t(i mod teams))")
	writes := fs.Int("writes", 100, "pushes per run")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between pushes (a schedule: push k starts at k×interval)")
	move := fs.Float64("move", 0.2, "share of pushes that also move the record to another team")
	modes := fs.String("modes", "scoped,unscoped", "scoped, unscoped or both, interleaved in each run")
	seed := fs.Uint64("seed", 1, "seed of the choice of records and moves")
	profile := fs.String("profile", "", "after the measured runs, one more run of each mode with a CPU profile of the server's write phase, written to DIR/<mode>.pprof")
	fs.Parse(args)
	raiseFileLimit()
	ctx := context.Background()
	if *teams < 1 || *teams > 100 || *subs < 1 || *writes < 1 || *records < *runs**writes*2 {
		return errors.New("scoped: need 1 ≤ teams ≤ 100, subs ≥ 1, writes ≥ 1 and records ≥ 2 × runs × writes")
	}
	var want []string
	for _, m := range strings.Split(*modes, ",") {
		if m != "scoped" && m != "unscoped" {
			return fmt.Errorf("scoped: unknown mode %q", m)
		}
		want = append(want, m)
	}

	t0 := time.Now()
	srv, err := startChild("-store", "memory", "-seed", strconv.Itoa(*records), "-teams", strconv.Itoa(*teams))
	if err != nil {
		return err
	}
	defer srv.stop()
	fmt.Fprintf(os.Stderr, "scoped: %d records seeded in %s\n", *records, time.Since(t0).Round(time.Millisecond))

	sc := &scopedBench{
		base: srv.url, srv: srv, teams: *teams, subs: *subs, writes: *writes, interval: *interval, move: *move,
		rng:     rand.New(rand.NewPCG(*seed, 0x5c0bed)),
		cursors: map[int][]byte{},
		client:  &http.Client{Timeout: time.Minute},
	}
	sc.perm = sc.rng.Perm(*records)
	for t := range *teams {
		p, err := scope.Parse(fmt.Sprintf("team == %q", teamName(t)))
		if err != nil {
			return err
		}
		sc.scopes = append(sc.scopes, p.Encode())
		enc, err := crdt.EncodeValue(teamName(t))
		if err != nil {
			return err
		}
		sc.teamValue = append(sc.teamValue, enc)
	}

	title := fmt.Sprintf("Scoped fan-out: %s records, %s subscribers in %d scopes, one push every %s, in-memory store, one server",
		groupThousands(strconv.Itoa(*records)), groupThousands(strconv.Itoa(*subs)), *teams, *interval)
	var failed error
	for run := range *runs {
		for _, mode := range want {
			scoped := mode == "scoped"
			t0, cpu0 := time.Now(), serversCPU([]*child{srv})
			sc.synced.pages.Store(0)
			sc.synced.records.Store(0)
			sc.synced.leaves.Store(0)
			sc.synced.bytes.Store(0)
			if err := sc.catchUp(ctx, scoped); err != nil {
				return fmt.Errorf("%s run %d: first sync: %w", mode, run, err)
			}
			fmt.Fprintf(os.Stderr, "scoped: %s run %d: cursors at the head in %s (server CPU %s): %d pulls, %d records, %d leave entries, %d bytes\n",
				mode, run, time.Since(t0).Round(time.Millisecond), serversCPU([]*child{srv})-cpu0,
				sc.synced.pages.Load(), sc.synced.records.Load(), sc.synced.leaves.Load(), sc.synced.bytes.Load())
			res, err := sc.run(ctx, scoped)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", mode, run, err)
			}
			res.emit(title, mode, run, *writes, *subs)
			if res.violations+res.wrongLeaves > 0 && failed == nil {
				failed = fmt.Errorf("%s run %d: %d records delivered outside their scope, %d leave entries delivered inside it",
					mode, run, res.violations, res.wrongLeaves)
			}
		}
		if failed != nil {
			return failed
		}
	}
	if *profile != "" {
		for _, mode := range want {
			scoped := mode == "scoped"
			if err := sc.catchUp(ctx, scoped); err != nil {
				return fmt.Errorf("%s profile run: first sync: %w", mode, err)
			}
			path, err := filepath.Abs(filepath.Join(*profile, mode+".pprof"))
			if err != nil {
				return err
			}
			sc.profile = path
			res, err := sc.run(ctx, scoped)
			sc.profile = ""
			if err != nil {
				return fmt.Errorf("%s profile run: %w", mode, err)
			}
			fmt.Fprintf(os.Stderr, "scoped: %s profile run (not measured): server CPU %s for %d pushes; profile %s\n",
				mode, res.cost.serverCPU, *writes, path)
		}
	}
	return nil
}

// benchGet GETs a /bench/ path of the server and fails unless it answers
// 200.
func (sc *scopedBench) benchGet(path string) error {
	resp, err := sc.client.Get(sc.base + path)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}

type scopedBench struct {
	base      string
	srv       *child
	teams     int
	subs      int
	writes    int
	interval  time.Duration
	move      float64
	rng       *rand.Rand
	perm      []int // record numbers in the order runs write them
	used      int
	scopes    [][]byte       // scope of team t, encoded
	teamValue [][]byte       // the team field's value of team t, encoded
	cursors   map[int][]byte // head cursor per team; -1 is the unscoped one
	client    *http.Client
	profile   string   // CPU profile of the server's write phase, when set
	synced    struct { // what catchUp's pulls received
		pages, records, leaves, bytes atomic.Int64
	}
}

// catchUp pulls every scope (or the unscoped collection) from its last
// cursor to the head, as a client's first sync does, so that the
// subscriptions start at the head. The first call pulls all the records.
func (sc *scopedBench) catchUp(ctx context.Context, scoped bool) error {
	if !scoped {
		c, err := sc.pullToHead(ctx, nil, sc.cursors[-1])
		sc.cursors[-1] = c
		return err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, sc.teams)
	sem := make(chan struct{}, 4)
	for t := range sc.teams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			mu.Lock()
			cur := sc.cursors[t]
			mu.Unlock()
			c, err := sc.pullToHead(ctx, sc.scopes[t], cur)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			sc.cursors[t] = c
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (sc *scopedBench) pullToHead(ctx context.Context, scopeBytes, cursor []byte) ([]byte, error) {
	for {
		// A client that holds nothing says so (key 7), as the clients do
		// on a first sync.
		body, err := proto.Encode(proto.PullRequest{Collection: transport.DemoCollection, Cursor: cursor, Scope: scopeBytes, Fresh: len(cursor) == 0})
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, sc.base+proto.PathPull, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", proto.ContentType)
		req.Header.Set(proto.HeaderProtocol, strconv.Itoa(proto.Version))
		resp, err := sc.client.Do(req)
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("pull: %s: %s", resp.Status, strings.TrimSpace(resp.Header.Get(proto.HeaderError)))
		}
		var pr proto.PullResponse
		if err := proto.Decode(data, &pr); err != nil {
			return nil, fmt.Errorf("pull answer: %w", err)
		}
		if pr.Reset != nil {
			return nil, fmt.Errorf("pull: reset %s", pr.Reset.Reason)
		}
		sc.synced.pages.Add(1)
		sc.synced.records.Add(int64(len(pr.Records)))
		sc.synced.leaves.Add(int64(len(pr.Leaves)))
		sc.synced.bytes.Add(int64(len(data)))
		cursor = pr.Next
		if !pr.More {
			return cursor, nil
		}
	}
}

// push is one write of a run: record id moved from team from to team to
// (equal when it stays).
type push struct {
	id       string
	from, to int
}

// plan picks the run's records (each written once in the whole command)
// and its moves.
func (sc *scopedBench) plan() []push {
	out := make([]push, sc.writes)
	for k := range out {
		n := sc.perm[sc.used]
		sc.used++
		from := n % sc.teams
		to := from
		if sc.teams > 1 && sc.rng.Float64() < sc.move {
			to = (from + 1 + sc.rng.IntN(sc.teams-1)) % sc.teams
		}
		out[k] = push{id: "todo-" + strconv.Itoa(n), from: from, to: to}
	}
	return out
}

type scopedResult struct {
	recLat, leaveLat           []float64 // ms: records in scope, leaves where the record left
	wantRecs, wantLeaves       int
	violations, wrongLeaves    int // records outside the scope, leaves inside it
	dups                       int
	leaves, recs, frames, wire int64
	moves                      int
	cost                       fanoutCost
	wall                       time.Duration
}

func (sc *scopedBench) run(ctx context.Context, scoped bool) (*scopedResult, error) {
	plan := sc.plan()
	byID := make(map[string]int, len(plan))
	byLeave := make(map[string]int, len(plan))
	for k, p := range plan {
		byID[p.id] = k
		byLeave[string(proto.LeaveDigest(transport.DemoCollection, p.id))] = k
	}
	res := &scopedResult{}
	perTeam := make([]int, sc.teams)
	for i := range sc.subs {
		perTeam[i%sc.teams]++
	}
	for _, p := range plan {
		if p.from != p.to {
			res.moves++
		}
		if !scoped {
			res.wantRecs += sc.subs
			continue
		}
		res.wantRecs += perTeam[p.to]
		if p.from != p.to {
			res.wantLeaves += perTeam[p.from]
		}
	}

	sent := make([]atomic.Int64, len(plan)) // unix ns
	var mu sync.Mutex
	seen := make([][]bool, sc.subs)
	var gotRecs, gotLeaves atomic.Int64 // the ones measured
	ready := make(chan error, sc.subs)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	dial := make(chan struct{}, 50)
	for i := range sc.subs {
		seen[i] = make([]bool, len(plan))
		team := i % sc.teams
		sub := proto.Sub{Collection: transport.DemoCollection, Cursor: sc.cursors[-1]}
		if scoped {
			sub = proto.Sub{Collection: transport.DemoCollection, Cursor: sc.cursors[team], Scope: sc.scopes[team]}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			dial <- struct{}{}
			c, err := dialLive(runCtx, sc.base, fmt.Sprintf("sub-%d-%s", i, randomSuffix()))
			if err == nil {
				err = c.send(runCtx, sub)
			}
			<-dial
			if err != nil {
				ready <- err
				return
			}
			defer c.c.CloseNow()
			caughtUp := false
			for {
				_, b, err := c.c.Read(runCtx)
				if err != nil {
					if !caughtUp {
						ready <- err
					}
					return
				}
				now := time.Now().UnixNano()
				m, err := proto.DecodeServerMessage(b)
				if err != nil {
					continue
				}
				ch, ok := m.(proto.Changes)
				if !ok {
					if !caughtUp {
						ready <- fmt.Errorf("subscriber %d: got %T before its first changes", i, m)
						return
					}
					fmt.Fprintf(os.Stderr, "scoped: subscriber %d: unexpected %T %+v\n", i, m, m)
					continue
				}
				atomic.AddInt64(&res.frames, 1)
				atomic.AddInt64(&res.wire, int64(len(b)))
				atomic.AddInt64(&res.leaves, int64(len(ch.Leaves)))
				atomic.AddInt64(&res.recs, int64(len(ch.Records)))
				mu.Lock()
				for _, r := range ch.Records {
					k, ok := byID[r.ID]
					if !ok {
						continue
					}
					if scoped && (team != plan[k].to || !bytes.Equal(r.Fields["team"].Value, sc.teamValue[team])) {
						res.violations++
						continue
					}
					if seen[i][k] {
						res.dups++
						continue
					}
					seen[i][k] = true
					res.recLat = append(res.recLat, float64(now-sent[k].Load())/1e6)
					gotRecs.Add(1)
				}
				for _, l := range ch.Leaves {
					k, ok := byLeave[string(l)]
					if !ok {
						continue
					}
					switch {
					case team == plan[k].to:
						res.wrongLeaves++
					case team == plan[k].from && plan[k].from != plan[k].to:
						if seen[i][k] {
							res.dups++
							continue
						}
						seen[i][k] = true
						res.leaveLat = append(res.leaveLat, float64(now-sent[k].Load())/1e6)
						gotLeaves.Add(1)
					}
				}
				mu.Unlock()
				if !caughtUp && !ch.More {
					caughtUp = true
					ready <- nil
				}
			}
		}()
	}
	for range sc.subs {
		if err := <-ready; err != nil {
			return nil, fmt.Errorf("subscriber: %w", err)
		}
	}
	time.Sleep(500 * time.Millisecond) // let the subscriptions settle
	atomic.StoreInt64(&res.frames, 0)
	atomic.StoreInt64(&res.wire, 0)
	atomic.StoreInt64(&res.leaves, 0)
	atomic.StoreInt64(&res.recs, 0)
	servers := []*child{sc.srv}
	if sc.profile != "" {
		if err := sc.benchGet("/bench/profile/start?file=" + url.QueryEscape(sc.profile)); err != nil {
			return nil, err
		}
	}
	cpu0, reads0, gen0 := serversCPU(servers), serversReads(servers), selfCPU()

	w := newWriter(0)
	start := time.Now()
	for k, p := range plan {
		time.Sleep(time.Until(start.Add(time.Duration(k) * sc.interval)))
		s, err := w.clock.Now(time.Now().UnixMilli())
		if err != nil {
			return nil, err
		}
		title, err := crdt.EncodeValue("write " + strconv.Itoa(k) + " of the scoped fan-out run")
		if err != nil {
			return nil, err
		}
		rec := crdt.Record{ID: p.id, Fields: map[string]crdt.Field{"title": {Stamp: s, Value: title}}}
		if p.to != p.from {
			rec.Fields["team"] = crdt.Field{Stamp: s, Value: sc.teamValue[p.to]}
		}
		sent[k].Store(time.Now().UnixNano())
		if _, err := httpPush(ctx, sc.client, sc.base, w.replica, []crdt.Change{{Collection: transport.DemoCollection, Record: rec}}); err != nil {
			return nil, err
		}
	}
	// Wait for every measured delivery, then for the frames to stop (the
	// leave entries of subscribers the record never was in).
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && (gotRecs.Load() < int64(res.wantRecs) || gotLeaves.Load() < int64(res.wantLeaves)) {
		time.Sleep(20 * time.Millisecond)
	}
	for last := int64(-1); time.Now().Before(deadline); {
		n := atomic.LoadInt64(&res.frames)
		if n == last {
			break
		}
		last = n
		time.Sleep(300 * time.Millisecond)
	}
	res.wall = time.Since(start)
	res.cost.serverCPU = serversCPU(servers) - cpu0
	if sc.profile != "" {
		if err := sc.benchGet("/bench/profile/stop"); err != nil {
			return nil, err
		}
	}
	res.cost.genCPU = selfCPU() - gen0
	res.cost.reads = -1
	if r := serversReads(servers); r >= 0 && reads0 >= 0 {
		res.cost.reads = r - reads0
	}
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(res.recLat)
	slices.Sort(res.leaveLat)
	return res, nil
}

// quantile returns the q quantile (0 to 1, 1 the maximum) of sorted, or 0
// when it is empty.
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func (r *scopedResult) emit(title, mode string, run, writes, subs int) {
	impl := "Convergo server, " + mode + " subscriptions"
	missRecs := r.wantRecs - len(r.recLat)
	missLeaves := r.wantLeaves - len(r.leaveLat)
	note := fmt.Sprintf("%d pushes, %d moves; %d records in scope delivered of %d; %d leave entries where the record left of %d; %d violations, %d leaves in scope, %d duplicates; %d frames",
		writes, r.moves, len(r.recLat), r.wantRecs, len(r.leaveLat), r.wantLeaves, r.violations, r.wrongLeaves, r.dups, r.frames)
	if missRecs > 0 || missLeaves > 0 {
		note += fmt.Sprintf("; %d records and %d leaves MISSING", missRecs, missLeaves)
	}
	fmt.Fprintf(os.Stderr, "scoped: %s run %d: %s\n", mode, run, note)
	s := func(metric, unit string, v float64) {
		emit(sample{Scenario: title, Metric: metric, Unit: unit, Better: "lower", Impl: impl, Ours: true, Run: run, Value: v, Note: note})
	}
	for _, q := range []struct {
		name string
		p    float64
	}{{"p50", 0.50}, {"p99", 0.99}, {"max", 1}} {
		if len(r.recLat) > 0 {
			s(q.name+" push→receipt of the record, subscribers in scope", "ms", quantile(r.recLat, q.p))
		}
		if len(r.leaveLat) > 0 {
			s(q.name+" push→receipt of the leave, subscribers the record left", "ms", quantile(r.leaveLat, q.p))
		}
	}
	s("server CPU per push", "ms", r.cost.serverCPU.Seconds()*1e3/float64(writes))
	if r.frames > 0 {
		s("server CPU per frame", "µs", r.cost.serverCPU.Seconds()*1e6/float64(r.frames))
	}
	s("server CPU per push × subscriber", "µs", r.cost.serverCPU.Seconds()*1e6/float64(writes*subs))
	s("generator CPU per push", "ms", r.cost.genCPU.Seconds()*1e3/float64(writes))
	if r.cost.reads >= 0 {
		s("store reads per push", "reads", float64(r.cost.reads)/float64(writes))
	}
	s("records delivered per push", "records", float64(r.recs)/float64(writes))
	s("leave entries delivered per push", "leaves", float64(r.leaves)/float64(writes))
	s("frames per push", "frames", float64(r.frames)/float64(writes))
	s("bytes received per push", "bytes", float64(r.wire)/float64(writes))
	s("isolation violations", "count", float64(r.violations+r.wrongLeaves))
}
