package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
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
		handler = srv.srv.Handler
		closeAll = func() { srv.Close(); cleanup() }
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
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
	fs.Parse(args)
	raiseFileLimit()
	ctx := context.Background()

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
		for run := range *runs {
			lat, missing, cost, err := fanoutRun(ctx, *bin, kind, *subs, *writes, *interval)
			if err != nil {
				return fmt.Errorf("%s run %d: %w", kind, run, err)
			}
			slices.Sort(lat)
			note := fmt.Sprintf("%d writes %s apart; %d deliveries", *writes, *interval, len(lat))
			if len(lat) > 0 {
				emit(sample{Scenario: title, Metric: "server CPU per delivery", Unit: "µs", Better: "lower", Impl: "Convergo server",
					Ours: true, Run: run, Value: cost.serverCPU.Seconds() * 1e6 / float64(len(lat)), Note: note})
				emit(sample{Scenario: title, Metric: "generator CPU per delivery", Unit: "µs", Better: "lower", Impl: "load generator (not the server)",
					Run: run, Value: cost.genCPU.Seconds() * 1e6 / float64(len(lat)), Note: note})
			}
			if cost.reads >= 0 {
				emit(sample{Scenario: title, Metric: "store reads per push", Unit: "reads", Better: "lower", Impl: "Convergo server",
					Ours: true, Run: run, Value: float64(cost.reads) / float64(*writes), Note: note})
			}
			if missing > 0 {
				note += fmt.Sprintf(", %d MISSING", missing)
			}
			for _, q := range []struct {
				name string
				p    float64
			}{{"p50 push→receipt", 0.50}, {"p99 push→receipt", 0.99}, {"max push→receipt", 1}} {
				emit(sample{Scenario: title, Metric: q.name, Unit: "ms", Better: "lower", Impl: "Convergo server",
					Ours: true, Run: run, Value: quantile(lat, q.p), Note: note})
			}
		}
	}
	return nil
}

// fanoutCost is what a fan-out run cost: server CPU (user and system, all
// server processes), the generator's own CPU, and store reads (-1 when the
// server cannot count them: the server command).
type fanoutCost struct {
	serverCPU, genCPU time.Duration
	reads             int64
}

func fanoutRun(ctx context.Context, bin, kind string, subs, writes int, interval time.Duration) (lat []float64, missing int, cost fanoutCost, err error) {
	var servers []*child
	defer func() {
		for _, s := range servers {
			s.stop()
		}
	}()
	n := 1
	if kind == "redis" {
		n = 2 // two instances of one deployment
	}
	if bin != "" {
		store := kind
		if kind == "memory" {
			store = "bolt" // the server command's embedded store
		}
		url, clean, err := storeURL(store)
		if err != nil {
			return nil, 0, cost, err
		}
		defer clean()
		for range n {
			s, err := startReal(bin, url)
			if err != nil {
				return nil, 0, cost, err
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
				return nil, 0, cost, err
			}
			servers = append(servers, s)
		}
	}

	sent := make([]time.Time, writes)
	var sentMu sync.RWMutex
	var mu sync.Mutex
	got := make([]int, subs)
	ready := make(chan error, subs)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50) // dial 50 at a time
	for i := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			c, err := dialLive(runCtx, servers[i%len(servers)].url, fmt.Sprintf("sub-%d", i))
			if err == nil {
				err = c.send(runCtx, proto.Sub{Collection: transport.DemoCollection})
			}
			<-sem
			ready <- err
			if err != nil {
				return
			}
			defer c.c.CloseNow()
			for {
				_, b, err := c.c.Read(runCtx)
				if err != nil {
					return
				}
				now := time.Now()
				ids, err := changeIDs(b)
				if err != nil {
					continue
				}
				for _, id := range ids {
					k, err := strconv.Atoi(strings.TrimPrefix(id, "w"))
					if err != nil || k < 0 || k >= writes {
						continue
					}
					sentMu.RLock()
					t0 := sent[k]
					sentMu.RUnlock()
					mu.Lock()
					lat = append(lat, float64(now.Sub(t0).Microseconds())/1000)
					got[i]++
					mu.Unlock()
				}
			}
		}()
	}
	for range subs {
		if err := <-ready; err != nil {
			return nil, 0, cost, fmt.Errorf("subscriber: %w", err)
		}
	}
	time.Sleep(500 * time.Millisecond) // let the subscriptions settle
	cpu0, reads0 := serversCPU(servers), serversReads(servers)
	gen0 := selfCPU()
	w := newWriter(0)
	client := &http.Client{Timeout: 30 * time.Second}
	for k := range writes {
		s, err := w.clock.Now(time.Now().UnixMilli())
		if err != nil {
			return nil, 0, cost, err
		}
		ch := crdt.Change{Collection: transport.DemoCollection, Record: crdt.SetField("w"+strconv.Itoa(k), "title", benchValue, s)}
		sentMu.Lock()
		sent[k] = time.Now()
		sentMu.Unlock()
		if _, err := httpPush(ctx, client, servers[0].url, w.replica, []crdt.Change{ch}); err != nil {
			return nil, 0, cost, err
		}
		time.Sleep(interval)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(lat)
		mu.Unlock()
		if n >= subs*writes {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	cost.serverCPU = serversCPU(servers) - cpu0
	cost.genCPU = selfCPU() - gen0
	cost.reads = -1
	if r := serversReads(servers); r >= 0 && reads0 >= 0 {
		cost.reads = r - reads0
	}
	cancel()
	wg.Wait()
	return lat, subs*writes - len(lat), cost, nil
}

// changeIDs returns the record ids of a "changes" message, nil for others.
func changeIDs(b []byte) ([]string, error) {
	m, err := proto.DecodeServerMessage(b)
	if err != nil {
		return nil, err
	}
	ch, ok := m.(proto.Changes)
	if !ok {
		return nil, nil
	}
	ids := make([]string, len(ch.Records))
	for i, r := range ch.Records {
		ids[i] = r.ID
	}
	return ids, nil
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
