package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/jsclient"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
)

// seedRecords writes n todo records (title, done, order) into the demo
// collection through the engine, 1,000 per batch. The browser scenarios
// build the same records for their IndexedDB baseline. With teams > 0
// each record also holds a field team, teamName(i mod teams), which the
// scoped fan-out scenario subscribes by.
func seedRecords(ctx context.Context, srv *benchServer, n, teams int) error {
	clock, err := crdt.NewClock(crdt.ClockConfig{Replica: proto.ReplicaFor("", "seed")})
	if err != nil {
		return err
	}
	for start := 0; start < n; start += 1000 {
		batch := make([]crdt.Change, 0, 1000)
		for i := start; i < min(n, start+1000); i++ {
			s, err := clock.Now(time.Now().UnixMilli())
			if err != nil {
				return err
			}
			rec := crdt.Record{ID: "todo-" + strconv.Itoa(i), Fields: map[string]crdt.Field{}}
			values := map[string]any{"title": "todo number " + strconv.Itoa(i), "done": i%3 == 0, "order": i}
			if teams > 0 {
				values["team"] = teamName(i % teams)
			}
			for name, v := range values {
				b, err := crdt.EncodeValue(v)
				if err != nil {
					return err
				}
				rec.Fields[name] = crdt.Field{Stamp: s, Value: b}
			}
			batch = append(batch, crdt.Change{Collection: transport.DemoCollection, Record: rec})
		}
		res, err := srv.engine.Apply(ctx, batch)
		if err != nil {
			return fmt.Errorf("seed: %w", err)
		}
		for _, r := range res {
			if r.Err != nil {
				return fmt.Errorf("seed: %w", r.Err)
			}
		}
	}
	return nil
}

// runServe is the server process the fan-out and memory scenarios start:
// a transport.Server over an engine on store (memory, or redis with the
// given key prefix so two processes share one deployment), or "bare": a
// WebSocket server that only accepts and reads, the floor a connection
// costs in this stack. It prints "LISTEN <url>" and serves until its
// standard input closes.
func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	kind := fs.String("store", "memory", "memory, redis or bare")
	prefix := fs.String("prefix", "", "Redis key prefix (shared by the instances of one deployment)")
	seed := fs.Int("seed", 0, "records to write into the demo collection before serving")
	teams := fs.Int("teams", 0, "give the seeded records a field team spread over this many values (t00, t01, ...)")
	lib := fs.Bool("lib", false, "also serve the JS client at /convergo/ and a blank page at /bench")
	fs.Parse(args)
	ctx := context.Background()
	raiseFileLimit()

	var handler http.Handler
	var closeAll func()
	if *kind == "bare" {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for {
				if _, _, err := c.Read(r.Context()); err != nil {
					return
				}
			}
		})
		closeAll = func() {}
		mux := http.NewServeMux()
		mux.Handle("/bench/mem", serveMem())
		mux.Handle("/", handler)
		handler = mux
	} else {
		inner, cleanup, err := openStoreWith(ctx, *kind, *prefix)
		if err != nil {
			return err
		}
		st := &readCounter{Store: inner}
		srv, err := startServer(st, "bench-srv-"+randomSuffix())
		if err != nil {
			return err
		}
		srv.srv.Close() // startServer's listener is not used: serve below
		if err := seedRecords(ctx, srv, *seed, *teams); err != nil {
			return err
		}
		if *lib {
			srv.ts.Handle("/convergo/", http.StripPrefix("/convergo/", http.FileServerFS(jsclient.Library())))
			srv.ts.Handle("/bench", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				io.WriteString(w, "<!doctype html><title>convergo bench</title><body>bench</body>")
			}))
		}
		srv.ts.Handle("/bench/reads", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprint(w, st.pulls.Load())
		}))
		srv.ts.Handle("/bench/profile/", serveProfile())
		srv.ts.Handle("/bench/mem", serveMem())
		handler = srv.srv.Handler
		closeAll = func() { srv.Close(); cleanup() }
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: transport.ReadHeaderTimeout, MaxHeaderBytes: transport.MaxHeaderBytes}
	go hs.Serve(ln)
	fmt.Printf("LISTEN http://%s\n", ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	select {
	case <-done:
	case <-sig:
	}
	hs.Close()
	closeAll()
	return nil
}

// serveProfile answers /bench/profile/start?file=PATH, which starts a CPU
// profile of the server process into PATH, and /bench/profile/stop, which
// ends it: a harness profiles its measured phase alone.
func serveProfile() http.Handler {
	var mu sync.Mutex
	var f *os.File
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/bench/profile/start":
			if f != nil {
				http.Error(w, "a profile is running", http.StatusConflict)
				return
			}
			out, err := os.Create(r.URL.Query().Get("file"))
			if err == nil {
				if err = pprof.StartCPUProfile(out); err != nil {
					out.Close()
				}
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			f = out
		case "/bench/profile/stop":
			if f == nil {
				http.Error(w, "no profile is running", http.StatusConflict)
				return
			}
			pprof.StopCPUProfile()
			f.Close()
			f = nil
		default:
			http.NotFound(w, r)
		}
	})
}

// memStats is how the server process's memory splits, from runtime/metrics
// after a collection: live heap objects, goroutine stacks and goroutines.
type memStats struct {
	HeapObjects uint64 `json:"heap_objects"` // /memory/classes/heap/objects:bytes
	Stacks      uint64 `json:"stacks"`       // /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes
	Goroutines  uint64 `json:"goroutines"`   // /sched/goroutines:goroutines
}

// serveMem answers /bench/mem with the process's memStats (JSON), after a
// garbage collection so that the heap figure is what is live.
func serveMem() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		ms := []metrics.Sample{
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/heap/stacks:bytes"},
			{Name: "/memory/classes/os-stacks:bytes"},
			{Name: "/sched/goroutines:goroutines"},
		}
		metrics.Read(ms)
		v := func(i int) uint64 {
			if ms[i].Value.Kind() != metrics.KindUint64 {
				return 0
			}
			return ms[i].Value.Uint64()
		}
		json.NewEncoder(w).Encode(memStats{HeapObjects: v(0), Stacks: v(1) + v(2), Goroutines: v(3)})
	})
}

// childMem reads the memStats of a server started with runServe.
func childMem(c *child) (memStats, error) {
	var m memStats
	resp, err := http.Get(c.url + "/bench/mem")
	if err != nil {
		return m, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return m, fmt.Errorf("/bench/mem: %s", resp.Status)
	}
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

// child is a server process started with runServe.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	url   string
	real  bool // the server command, stopped with SIGTERM
}

func startChild(args ...string) (*child, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := pinned(self, append([]string{"serve"}, args...)...)
	cmd.Stderr = os.Stderr
	// The parent's whole-process profile is the parent's: a child would
	// write over the same file (its own profile is -cpuprofile's).
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONVERGO_BENCH_CPUPROFILE=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTEN ") {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("server process did not start: %q %v", line, err)
	}
	return &child{cmd: cmd, stdin: stdin, url: strings.TrimSpace(strings.TrimPrefix(line, "LISTEN "))}, nil
}

func (c *child) stop() {
	c.stdin.Close()
	if c.real {
		c.cmd.Process.Signal(syscall.SIGTERM)
	}
	done := make(chan struct{})
	go func() { c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		c.cmd.Process.Kill()
		<-done
	}
}

// rss returns the resident set size of pid in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// runFanout measures scenario 3: one writer pushes records one at a time
// over HTTP; subs WebSocket subscribers receive them; the latency is from
// just before the push to the subscriber's receipt of the record. On Redis
// two server processes share one deployment and the subscribers are split
// between them, so half of every fan-out crosses Redis pub/sub.
func runFanout(args []string) error {
	fs := flag.NewFlagSet("fanout", flag.ExitOnError)
	runs := fs.Int("runs", 3, "measured runs")
	subs := fs.Int("subs", 1000, "subscribers")
	writes := fs.Int("writes", 50, "writes per run")
	interval := fs.Duration("interval", 100*time.Millisecond, "time between writes")
	kinds := fs.String("stores", "memory,redis", "deployments to measure")
	bin := fs.String("server", "", "the server command (cmd/convergo) to measure; empty runs this program's serve")
	profDir := fs.String("cpuprofile", "", "write a CPU profile of each server process over each run's write phase into this directory (not with -server)")
	receiver := fs.String("receiver", "epoll", "how the generator reads its subscribers: epoll (one goroutine for all) or goroutines (one each)")
	fs.Parse(args)
	if *profDir != "" {
		if *bin != "" {
			return errors.New("-cpuprofile needs the bench's own server (no -server)")
		}
		if err := os.MkdirAll(*profDir, 0o755); err != nil {
			return err
		}
	}
	raiseFileLimit()
	ctx := context.Background()

	// The p99 of the single server in this invocation: the 2-servers-on-
	// Redis target is twice it.
	var singleP99 []float64
	for _, kind := range strings.Split(*kinds, ",") {
		title := "Fan-out to 1,000 WebSocket subscribers, in-memory store, one server"
		if *bin != "" {
			title = "Fan-out to 1,000 WebSocket subscribers, embedded (bbolt) store, one server"
		}
		if kind == "redis" {
			if os.Getenv("CONVERGO_REDIS_ADDR") == "" {
				fmt.Fprintln(os.Stderr, "fanout: redis skipped: CONVERGO_REDIS_ADDR is not set")
				continue
			}
			title = "Fan-out to 1,000 WebSocket subscribers, Redis store, two servers"
		}
		title = strings.Replace(title, "1,000", groupThousands(strconv.Itoa(*subs)), 1)
		rate := float64(time.Second) / float64(*interval)
		title += ", " + strconv.FormatFloat(rate, 'g', 3, 64) + " pushes/s" + loopbackNote()
		var p99s []float64
		for run := range *runs {
			name := fmt.Sprintf("%s-%dsubs-run%d", kind, *subs, run)
			lat, host, missing, cost, err := fanoutRun(ctx, *bin, kind, *subs, *writes, *interval, *profDir, name, *receiver)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", kind, run, err)
			}
			slices.Sort(lat)
			slices.Sort(host)
			note := fmt.Sprintf("%d writes %s apart; %d deliveries", *writes, *interval, len(lat))
			if len(lat) > 0 {
				// The generator's row is "ours" so that the table prints it:
				// it says what the latency figures include.
				emit(sample{Scenario: title, Metric: "server CPU per delivery", Unit: "µs", Better: "lower", Impl: "Convergo server",
					Ours: true, Run: run, Value: cost.serverCPU.Seconds() * 1e6 / float64(len(lat)), Note: note})
				emit(sample{Scenario: title, Metric: "generator CPU per delivery", Unit: "µs", Better: "lower", Impl: "load generator (not the server)",
					Ours: true, Run: run, Value: cost.genCPU.Seconds() * 1e6 / float64(len(lat)), Note: note})
			}
			if cost.reads >= 0 {
				emit(sample{Scenario: title, Metric: "store reads per push", Unit: "reads", Better: "lower", Impl: "Convergo server",
					Ours: true, Run: run, Value: float64(cost.reads) / float64(*writes), Note: note})
				// One read per push on each server (two on Redis).
				emit(sample{Scenario: title, Metric: "store reads per push", Unit: "reads", Better: "lower", Impl: targetImpl,
					Limit: true, Run: run, Value: float64(fanoutServers(kind))})
			}
			if missing > 0 {
				note += fmt.Sprintf(", %d MISSING", missing)
			}
			for _, t := range slices.Sorted(maps.Keys(cost.others)) {
				note += fmt.Sprintf(", %d %s messages", cost.others[t], t)
			}
			// A subscriber the server closed gets nothing more: its
			// missing deliveries are not a gap in what was sent to it.
			for _, why := range slices.Sorted(maps.Keys(cost.ended)) {
				note += fmt.Sprintf(", %d subscribers' connections ENDED (%s)", cost.ended[why], why)
			}
			// Two clocks for one delivery: "receipt" is the generator's read,
			// "arrival" the kernel's receive timestamp (fanoutRun). Each is
			// printed beside the target.
			for _, q := range []struct {
				name string
				lat  []float64
				p    float64
			}{
				{"p50 push→receipt", lat, 0.50}, {"p99 push→receipt", lat, 0.99}, {"max push→receipt", lat, 1},
				{"p50 push→arrival", host, 0.50}, {"p99 push→arrival", host, 0.99}, {"max push→arrival", host, 1},
			} {
				if len(q.lat) == 0 {
					continue
				}
				v := quantile(q.lat, q.p)
				emit(sample{Scenario: title, Metric: q.name, Unit: "ms", Better: "lower", Impl: "Convergo server",
					Ours: true, Run: run, Value: v, Note: note})
				if q.p == 0.99 {
					if q.name == "p99 push→receipt" {
						p99s = append(p99s, v)
					}
					if t := fanoutTarget(kind, *subs, *interval, singleP99); t > 0 {
						emit(sample{Scenario: title, Metric: q.name, Unit: "ms", Better: "lower", Impl: targetImpl,
							Limit: true, Run: run, Value: t})
					}
				}
			}
			if *profDir != "" {
				fmt.Fprintf(os.Stderr, "fanout: %s: server CPU profiles in %s/%s-srv*.pprof\n", name, *profDir, name)
			}
		}
		if kind != "redis" && len(p99s) > 0 {
			slices.Sort(p99s)
			singleP99 = p99s
		}
	}
	return nil
}

// targetImpl names the targets in the report, where they stand as
// the limit each figure is compared with.
const targetImpl = "target (issue 17)"

// fanoutTarget is the p99 push→receipt target of a fan-out: 20 ms for
// 1,000 subscribers at 10 pushes/s, 100 ms for 10,000 at 5 pushes/s on one
// server, and for two servers on Redis twice the single server's median
// p99 measured in the same invocation (single, sorted; none: no target).
func fanoutTarget(kind string, subs int, interval time.Duration, single []float64) float64 {
	if kind == "redis" {
		if len(single) == 0 {
			return 0
		}
		return 2 * median(single)
	}
	switch {
	case subs == 1000 && interval == 100*time.Millisecond:
		return 20
	case subs == 10000 && interval == 200*time.Millisecond:
		return 100
	}
	return 0
}

// fanoutCost is what a fan-out run cost: server CPU (user and system, all
// server processes), the generator's own CPU, and store reads (-1 when the
// server cannot count them: the server command).
type fanoutCost struct {
	serverCPU, genCPU time.Duration
	reads             int64
	others            map[string]int // messages other than changes, by type
	ended             map[string]int // subscribers whose connection ended during the run, by why
}

// fanoutRun runs one measured run. With profileDir set, every server
// process writes a CPU profile of the write phase (from the first push
// until the last delivery or the wait's end) to
// profileDir/profileName-srvI.pprof.
//
// lat holds each delivery's latency from its push to the generator's read
// that completed it, host the same to its arrival at the host (the
// kernel's receive timestamp; empty where the receiver has none): the
// first includes the generator's own backlog, one core reading every
// subscriber, which a fleet of real clients does not share.
func fanoutRun(ctx context.Context, bin, kind string, subs, writes int, interval time.Duration, profileDir, profileName, receiver string) (lat, host []float64, missing int, cost fanoutCost, err error) {
	var servers []*child
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	n := fanoutServers(kind)
	if bin != "" {
		store := kind
		if kind == "memory" {
			store = "bolt" // the server command's embedded store
		}
		url, clean, err := storeURL(store)
		if err != nil {
			return nil, nil, 0, cost, err
		}
		defer clean()
		for range n {
			s, err := startReal(bin, url)
			if err != nil {
				return nil, nil, 0, cost, err
			}
			servers = append(servers, s)
		}
	} else {
		prefix := ""
		if kind == "redis" {
			prefix = "bench-" + randomSuffix() + ":"
			defer dropRedisPrefix(os.Getenv("CONVERGO_REDIS_ADDR"), prefix)
		}
		for range n {
			s, err := startChild("-store", kind, "-prefix", prefix)
			if err != nil {
				return nil, nil, 0, cost, err
			}
			servers = append(servers, s)
		}
	}

	// sent[k] is when write k was pushed, in nanoseconds of the monotonic
	// clock since base; each subscriber keeps its own latencies, so the
	// receiving side takes no lock.
	base := time.Now()
	sent := make([]atomic.Int64, writes)
	perSub := make([][]float64, subs)
	var delivered atomic.Int64
	conns := make([]*rawSub, subs)
	closeAll := func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}
	defer closeAll()
	errs := make(chan error, subs)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50) // dial 50 at a time
	for i := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
			defer dcancel()
			c, err := dialRaw(dctx, servers[i%len(servers)].url, fmt.Sprintf("sub-%d", i))
			if err == nil {
				conns[i] = c
				err = c.send(proto.Sub{Collection: transport.DemoCollection})
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, nil, 0, cost, fmt.Errorf("subscriber: %w", err)
	}
	hostSub := make([][]float64, subs) // the same, at the kernel's receive timestamps
	for i := range perSub {
		perSub[i] = make([]float64, 0, writes)
		hostSub[i] = make([]float64, 0, writes)
	}
	var othersMu sync.Mutex
	others := map[string]int{} // messages other than changes, by type
	ended := map[string]int{}  // subscribers whose connection ended, by why
	receive := receiveEpoll
	if receiver == "goroutines" {
		receive = receiveEach
	}
	stopSubs, err := receive(conns, base, func(i int, msg []byte, at arrival) {
		// at is the arrival of the complete message that holds the change.
		changes, _ := recordIDs(msg, func(id []byte) {
			k, ok := writeIndex(id)
			if !ok || k >= writes {
				return
			}
			if t0 := sent[k].Load(); t0 > 0 {
				perSub[i] = append(perSub[i], float64(at.read-t0)/1e6)
				if at.host >= 0 {
					hostSub[i] = append(hostSub[i], float64(at.host-t0)/1e6)
				}
				delivered.Add(1)
			}
		})
		if !changes { // resync, reset, error: counted for the report
			t, err := proto.PeekType(msg)
			if err != nil {
				t = "undecodable"
			}
			othersMu.Lock()
			others[t]++
			othersMu.Unlock()
		}
	}, func(i int, err error) {
		othersMu.Lock()
		ended[err.Error()]++
		othersMu.Unlock()
	})
	if err != nil {
		return nil, nil, 0, cost, err
	}
	defer stopSubs()                   // before closeAll: the receiver reads their descriptors
	time.Sleep(500 * time.Millisecond) // let the subscriptions settle
	if profileDir != "" {
		if err := profileServers(servers, "start", profileDir, profileName); err != nil {
			return nil, nil, 0, cost, err
		}
	}
	cpu0, reads0 := serversCPU(servers), serversReads(servers)
	gen0 := selfCPU()
	w := newWriter(0)
	client := &http.Client{Timeout: 30 * time.Second}
	for k := range writes {
		ch, err := fanoutChange(w, k)
		if err != nil {
			return nil, nil, 0, cost, err
		}
		sent[k].Store(time.Since(base).Nanoseconds())
		if _, err := httpPush(ctx, client, servers[0].url, w.replica, []crdt.Change{ch}); err != nil {
			return nil, nil, 0, cost, err
		}
		time.Sleep(interval)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && delivered.Load() < int64(subs*writes) {
		time.Sleep(20 * time.Millisecond)
	}
	cost.serverCPU = serversCPU(servers) - cpu0
	cost.genCPU = selfCPU() - gen0
	cost.reads = -1
	if r := serversReads(servers); r >= 0 && reads0 >= 0 {
		cost.reads = r - reads0
	}
	if profileDir != "" {
		if err := profileServers(servers, "stop", "", ""); err != nil {
			return nil, nil, 0, cost, err
		}
	}
	stopSubs() // perSub is the receiver's until it has stopped
	for i, l := range perSub {
		lat = append(lat, l...)
		host = append(host, hostSub[i]...)
	}
	cost.others, cost.ended = others, ended
	return lat, host, subs*writes - len(lat), cost, nil
}

// fanoutChange is the fan-out writer's write k: record "w<k>" (writeIndex)
// of the demo collection, its title set to benchValue.
func fanoutChange(w *writer, k int) (crdt.Change, error) {
	s, err := w.clock.Now(time.Now().UnixMilli())
	if err != nil {
		return crdt.Change{}, err
	}
	return crdt.Change{Collection: transport.DemoCollection, Record: crdt.SetField("w"+strconv.Itoa(k), "title", benchValue, s)}, nil
}

// fanoutFrame measures the WebSocket frame a subscriber of the fan-out
// scenario receives for its write k (fanoutChange), header included: a
// server of this program's engine and transport on a bolt store, the
// server command's, with one subscriber (dialRaw), and the write pushed as
// the scenario pushes it. The size grows by a byte with each digit of k
// ("w9", "w10"); the server command sends the same frames. fanfloor sends
// frames of this size.
func fanoutFrame(ctx context.Context, k int) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	store, clean, err := openStore(ctx, "bolt")
	if err != nil {
		return 0, err
	}
	defer clean()
	srv, err := startServer(store, "srv-frame")
	if err != nil {
		return 0, err
	}
	defer srv.Close()
	sub, err := dialRaw(ctx, srv.url, "sub-frame")
	if err != nil {
		return 0, err
	}
	defer sub.Close()
	if err := sub.send(proto.Sub{Collection: transport.DemoCollection}); err != nil {
		return 0, err
	}
	dl, _ := ctx.Deadline()
	sub.conn.SetDeadline(dl)
	w := newWriter(0)
	ch, err := fanoutChange(w, k)
	if err != nil {
		return 0, err
	}
	if _, err := httpPush(ctx, &http.Client{}, srv.url, w.replica, []crdt.Change{ch}); err != nil {
		return 0, err
	}
	for {
		msg, err := sub.next()
		if err != nil {
			return 0, fmt.Errorf("fan-out frame: %w", err)
		}
		found := false
		if _, err := recordIDs(msg, func(id []byte) { found = found || string(id) == "w"+strconv.Itoa(k) }); err != nil {
			return 0, fmt.Errorf("fan-out frame: %w", err)
		}
		if found {
			return wsHeaderBytes(len(msg)) + len(msg), nil
		}
	}
}

// wsHeaderBytes is the header of an unmasked WebSocket frame (a server's)
// of n payload bytes (RFC 6455, section 5.2).
func wsHeaderBytes(n int) int {
	switch {
	case n < 126:
		return 2
	case n < 1<<16:
		return 4
	}
	return 10
}

// fanoutServers is how many server processes a fan-out on kind runs: two
// instances of one deployment on Redis, one otherwise.
func fanoutServers(kind string) int {
	if kind == "redis" {
		return 2
	}
	return 1
}

// writeIndex parses a record id "w<k>" of the fan-out writer.
func writeIndex(id []byte) (int, bool) {
	if len(id) < 2 || id[0] != 'w' {
		return 0, false
	}
	k := 0
	for _, c := range id[1:] {
		if c < '0' || c > '9' || k > 1<<30 {
			return 0, false
		}
		k = k*10 + int(c-'0')
	}
	return k, true
}

// profileServers starts ("start") or stops ("stop") a CPU profile in every
// server process through serveProfile; started profiles go to
// dir/name-srvI.pprof.
func profileServers(servers []*child, op, dir, name string) error {
	for i, s := range servers {
		u := s.url + "/bench/profile/" + op
		if op == "start" {
			path, err := filepath.Abs(filepath.Join(dir, fmt.Sprintf("%s-srv%d.pprof", name, i)))
			if err != nil {
				return err
			}
			u += "?file=" + url.QueryEscape(path)
		}
		resp, err := http.Get(u)
		if err != nil {
			return fmt.Errorf("profile %s: %w", op, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("profile %s: %s: %s", op, resp.Status, strings.TrimSpace(string(b)))
		}
	}
	return nil
}

// readCounter counts the store reads (Pull calls) of the bench's own
// server, for the store-reads-per-push figure.
type readCounter struct {
	stores.Store
	pulls atomic.Int64
}

func (s *readCounter) Pull(ctx context.Context, coll string, after uint64, limit stores.PageLimit) (stores.Page, error) {
	s.pulls.Add(1)
	return s.Store.Pull(ctx, coll, after, limit)
}

// serversReads sums the store reads the servers counted, -1 if one cannot.
func serversReads(servers []*child) int64 {
	var n int64
	for _, s := range servers {
		resp, err := http.Get(s.url + "/bench/reads")
		if err != nil {
			return -1
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if resp.StatusCode != http.StatusOK || err != nil {
			return -1
		}
		n += v
	}
	return n
}

// serversCPU sums the user and system CPU time of the server processes.
func serversCPU(servers []*child) time.Duration {
	var d time.Duration
	for _, s := range servers {
		d += procCPU(s.cmd.Process.Pid)
	}
	return d
}

// procCPU returns utime+stime of pid (/proc/pid/stat, clock ticks of 10 ms).
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pinned makes a server command, under taskset -c $BENCH_SERVER_CPUS when
// that is set, so that the server and the load generator (pinned by
// scripts/bench.sh to other cores) do not share a core.
func pinned(name string, args ...string) *exec.Cmd {
	if cpus := os.Getenv("BENCH_SERVER_CPUS"); cpus != "" {
		if ts, err := exec.LookPath("taskset"); err == nil {
			return exec.Command(ts, append([]string{"-c", cpus, name}, args...)...)
		}
	}
	return exec.Command(name, args...)
}
