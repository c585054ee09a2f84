package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsddb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	goredis "github.com/redis/go-redis/v9"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
)

// runApply measures scenario 2: how many field changes per second the sync
// server applies, pushed over HTTP by concurrent
// clients, on each store, beside the store's own ceiling measured in the
// same run: on the same Redis, redis-benchmark -P 16 running EVALSHA of a
// script of the merge script's shape (shapeScript, as many records per
// call as changes per push) and pipelined SET; a raw BatchWriteItem loop on
// the same DynamoDB Local; and for the in-memory store its Apply called
// directly. With the server command (-server) it also reports the server
// process's CPU per field change, and on Redis the Redis server's CPU per
// field change (INFO cpu) on both sides.
//
// Each change sets one field of a record picked at random among 100,000, so
// one field change is one record write, comparable with one SET, one
// record of the script or one item.
func runApply(args []string) error {
	fs := flag.NewFlagSet("apply", flag.ExitOnError)
	runs := fs.Int("runs", 5, "measured runs per figure")
	dur := fs.Duration("duration", 3*time.Second, "length of one run")
	conc := fs.Int("conc", 8, "concurrent clients")
	batch := fs.Int("batch", 100, "changes per push")
	kinds := fs.String("stores", "bolt,redis,dynamodb", "stores to measure: memory, bolt, redis, dynamodb")
	bin := fs.String("server", "", "the server command (cmd/convergo) to measure; empty runs its engine and transport in this process")
	fs.Parse(args)
	ctx := context.Background()

	for _, kind := range strings.Split(*kinds, ",") {
		base, stopServer, serverCPU, serverPID, err := applyServer(ctx, *bin, kind)
		if err != nil {
			fmt.Fprintf(os.Stderr, "apply: %s skipped: %v\n", kind, err)
			continue
		}
		title := map[string]string{
			"memory":   "Apply throughput, in-memory store",
			"bolt":     "Apply throughput, embedded (bbolt) store",
			"redis":    "Apply throughput, Redis store",
			"dynamodb": "Apply throughput, DynamoDB Local store",
		}[kind]
		l := load{base: base, conc: *conc, batch: *batch, dur: *dur}
		if kind == "dynamodb" {
			// DynamoDB Local (Java, in memory) commits a transaction in
			// milliseconds: smaller pushes keep each under the client timeout.
			// It also serialises transactions on the collection's counter, so
			// more than two pushers only add conflicts and retries.
			l.batch, l.conc = min(l.batch, 10), min(l.conc, 2)
		}
		nruns := *runs
		if kind == "dynamodb" {
			nruns = min(nruns, 3) // a run there takes tens of seconds: keep make bench within its budget
		}
		redisAddr := os.Getenv("CONVERGO_REDIS_ADDR")
		if serverPID != 0 {
			fmt.Fprintf(os.Stderr, "apply: %s: %s\n", kind, placement(serverPID, kind, redisAddr))
		}
		// Bodies encoded ahead per client: 1.5 times the best run so far
		// (150,000 changes/s before the first) for the run's length.
		best := 100_000.0
		for run := range nruns {
			ahead := int(1.5 * best * l.dur.Seconds() / float64(l.conc))
			var cpu0, rcpu0 time.Duration
			rate, n, genCPU, made, err := l.http(ctx, ahead, func() {
				if serverCPU != nil {
					cpu0 = serverCPU()
				}
				if kind == "redis" {
					rcpu0, _ = redisCPU(ctx, redisAddr)
				}
			})
			if err != nil {
				// Keep what was measured and still measure the ceiling.
				fmt.Fprintf(os.Stderr, "apply: %s http run %d: %v\n", kind, run, err)
				break
			}
			best = max(best, rate)
			if made > 0 {
				fmt.Fprintf(os.Stderr, "apply: %s run %d: %d push bodies encoded during the run\n", kind, run, made)
			}
			if n > 0 {
				emit(sample{Scenario: title, Metric: "load generator CPU per field change", Unit: "µs", Better: "lower",
					Impl: "convergo-bench, HTTP clients", Ours: false, Run: run, Value: float64(genCPU) / float64(time.Microsecond) / n,
					Note: "bodies encoded before the run"})
			}
			emit(sample{Scenario: title, Metric: "field changes/s", Unit: "/s", Better: "higher",
				Impl: "Convergo server, HTTP push", Ours: true, Run: run, Value: rate,
				Note: fmt.Sprintf("%d clients, %d changes per push", l.conc, l.batch)})
			if serverCPU != nil && n > 0 {
				emit(sample{Scenario: title, Metric: "server CPU per field change", Unit: "µs", Better: "lower",
					Impl: "Convergo server process", Ours: true, Run: run, Value: float64(serverCPU()-cpu0) / float64(time.Microsecond) / n})
			}
			if kind == "redis" && n > 0 {
				if rcpu, err := redisCPU(ctx, redisAddr); err == nil {
					emit(sample{Scenario: title, Metric: "Redis CPU per field change", Unit: "µs", Better: "lower",
						Impl: "Convergo's merge script", Ours: true, Run: run, Value: float64(rcpu-rcpu0) / float64(time.Microsecond) / n})
				}
			}
		}
		stopServer()
		for run := range nruns {
			var rate float64
			var impl, note string
			switch kind {
			case "memory", "bolt":
				impl, note = kind+" store Apply, no server", "same batches, called in process"
				rate, err = storeAloneFresh(ctx, kind, l.conc, l.batch, *dur)
			case "redis":
				// Two ceilings, one after the other in each run: the
				// script of the same shape, then SET.
				for _, c := range []struct {
					impl, note string
					measure    func() (float64, float64, error)
				}{
					{"redis-benchmark EVALSHA -P 16, same-shape script", fmt.Sprintf("same Redis, 50 clients, %d records per call", l.batch),
						func() (float64, float64, error) { return redisScriptCeiling(ctx, redisAddr, l.batch) }},
					{"redis-benchmark SET -P 16", "same Redis, 50 clients",
						func() (float64, float64, error) { return redisCeiling(ctx, redisAddr) }},
				} {
					rate, cpuPer, err := c.measure()
					if err != nil {
						fmt.Fprintf(os.Stderr, "apply: redis ceiling %s: %v\n", c.impl, err)
						continue
					}
					emit(sample{Scenario: title, Metric: "field changes/s", Unit: "/s", Better: "higher",
						Impl: c.impl, Limit: true, Run: run, Value: rate, Note: c.note})
					emit(sample{Scenario: title, Metric: "Redis CPU per field change", Unit: "µs", Better: "lower",
						Impl: c.impl, Limit: true, Run: run, Value: cpuPer})
				}
				continue
			case "dynamodb":
				impl, note = "raw BatchWriteItem loop", fmt.Sprintf("same DynamoDB Local, %d workers, 25 items per call", l.conc)
				rate, err = dynamoCeiling(ctx, os.Getenv("CONVERGO_DYNAMODB_ENDPOINT"), l.conc, *dur)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "apply: %s ceiling: %v\n", kind, err)
				break
			}
			emit(sample{Scenario: title, Metric: "field changes/s", Unit: "/s", Better: "higher",
				Impl: impl, Limit: true, Run: run, Value: rate, Note: note})
		}
	}
	return nil
}

// applyServer starts the server under test on a fresh store of kind: the
// server command when bin is set, else its engine and transport in this
// process. It returns the base URL, a func that stops the server and
// deletes the store, and for the server command a func that reads its CPU
// time and its process id (nil and 0 in process, where the load generator
// shares the process).
func applyServer(ctx context.Context, bin, kind string) (string, func(), func() time.Duration, int, error) {
	if bin != "" {
		url, clean, err := storeURL(kind)
		if err != nil {
			return "", nil, nil, 0, err
		}
		c, err := startReal(bin, url)
		if err != nil {
			clean()
			return "", nil, nil, 0, err
		}
		pid := c.cmd.Process.Pid
		return c.url, func() { c.stop(); clean() }, func() time.Duration { return procCPU(pid) }, pid, nil
	}
	st, cleanup, err := openStore(ctx, kind)
	if err != nil {
		return "", nil, nil, 0, err
	}
	srv, err := startServer(st, "bench-srv")
	if err != nil {
		cleanup()
		return "", nil, nil, 0, err
	}
	return srv.url, func() { srv.Close(); cleanup() }, nil, 0, nil
}

// placement says on which CPUs each side of the apply figures runs: the
// server (pid), this process (the load generator), redis-benchmark (the
// ceilings' client, pinned like the server: BENCH_SERVER_CPUS) and, on
// Redis, the Redis server when it runs on this machine. Like with like
// means Redis shares its CPUs with none of the others in both the apply
// runs and the ceilings: the server and the load generator on one side,
// redis-benchmark on the same CPUs, Redis alone on the rest.
func placement(pid int, kind, redisAddr string) string {
	client := os.Getenv("BENCH_SERVER_CPUS")
	if client == "" {
		client = "any"
	}
	out := fmt.Sprintf("CPUs of the server %s, the load generator %s, redis-benchmark %s", cpusOf(pid), cpusOf(os.Getpid()), client)
	if host, _, _ := strings.Cut(redisAddr, ":"); kind == "redis" && (host == "127.0.0.1" || host == "localhost") {
		rpid := 0
		c := goredis.NewClient(&goredis.Options{Addr: redisAddr})
		if info, err := c.Info(context.Background(), "server").Result(); err == nil {
			if m := regexp.MustCompile(`process_id:(\d+)`).FindStringSubmatch(info); m != nil {
				rpid, _ = strconv.Atoi(m[1])
			}
		}
		c.Close()
		out += ", Redis " + cpusOf(rpid)
	}
	return out
}

// cpusOf is the CPU list process pid may run on (Cpus_allowed_list), or
// "unknown".
func cpusOf(pid int) string {
	if pid <= 0 {
		return "unknown"
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// storeAloneFresh measures storeAlone on a fresh store of kind.
func storeAloneFresh(ctx context.Context, kind string, conc, batch int, dur time.Duration) (float64, error) {
	st, cleanup, err := openStore(ctx, kind)
	if err != nil {
		return 0, err
	}
	defer cleanup()
	return storeAlone(ctx, st, conc, batch, dur)
}

// load generates pushes from conc clients, each with its own clock and
// replica id.
type load struct {
	base  string
	conc  int
	batch int
	dur   time.Duration
}

type writer struct {
	replica string
	clock   *crdt.Clock
	rng     *rand.Rand
}

var benchValue, _ = crdt.EncodeValue("buy oat milk and a loaf of rye bread")

func newWriter(i int) *writer {
	replica := proto.ReplicaFor("", fmt.Sprintf("bench-%d-%s", i, randomSuffix())) // the demo's anonymous writers own these ids
	c, err := crdt.NewClock(crdt.ClockConfig{Replica: replica})
	if err != nil {
		panic(err)
	}
	return &writer{replica: replica, clock: c, rng: rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))}
}

func (w *writer) changes(n int) []crdt.Change {
	out := make([]crdt.Change, n)
	for i := range out {
		s, err := w.clock.Now(time.Now().UnixMilli())
		if err != nil {
			panic(err)
		}
		id := "todo-" + strconv.Itoa(w.rng.IntN(100_000))
		out[i] = crdt.Change{Collection: transport.DemoCollection, Record: crdt.SetField(id, "title", benchValue, s)}
	}
	return out
}

// each runs f on conc goroutines (i is the goroutine's number, 0 to
// conc-1) until the run's time is up and returns the total it counted per
// second.
func (l load) each(ctx context.Context, f func(ctx context.Context, i int, deadline time.Time, count *atomic.Int64) error) (float64, error) {
	var count atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, l.conc)
	start := time.Now()
	deadline := start.Add(l.dur)
	for i := range l.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx, i, deadline, &count); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(count.Load()) / time.Since(start).Seconds(), nil
}

// http pushes from conc clients for the run's length and returns the field
// changes per second the server acknowledged. Each client's push bodies
// are encoded before the run starts, ahead changes of them (its stamps
// a little in the past, which LWW takes as any other), so that during the
// run the load generator only sends bytes and reads answers, as
// redis-benchmark does for the Redis ceilings: its own CPU per change
// (genCPU, the process's CPU time during the run) is then small beside the
// server's. A client that uses up its bodies encodes the rest as it goes;
// made counts those bodies. started, when not nil, is called once the
// bodies are ready, right before the run; n is the number of changes
// acknowledged in the run.
func (l load) http(ctx context.Context, ahead int, started func()) (rate, n float64, genCPU time.Duration, made int64, err error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: l.conc, MaxConnsPerHost: l.conc}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	writers := make([]*writer, l.conc)
	bodies := make([][][]byte, l.conc)
	for i := range writers {
		w := newWriter(i)
		writers[i] = w
		for range (ahead + l.batch - 1) / l.batch {
			b, err := pushBody(w.replica, w.changes(l.batch))
			if err != nil {
				return 0, 0, 0, 0, err
			}
			bodies[i] = append(bodies[i], b)
		}
	}
	var onTheFly atomic.Int64
	if started != nil {
		started()
	}
	cpu0, start := selfCPU(), time.Now()
	rate, err = l.each(ctx, func(ctx context.Context, i int, deadline time.Time, count *atomic.Int64) error {
		w, mine := writers[i], bodies[i]
		for time.Now().Before(deadline) {
			var body []byte
			if len(mine) > 0 {
				body, mine = mine[0], mine[1:]
			} else {
				onTheFly.Add(1)
				if body, err = pushBody(w.replica, w.changes(l.batch)); err != nil {
					return err
				}
			}
			n, err := httpPushBody(ctx, client, l.base, body)
			if err != nil {
				return err
			}
			count.Add(int64(n))
		}
		return nil
	})
	return rate, rate * time.Since(start).Seconds(), selfCPU() - cpu0, onTheFly.Load(), err
}

// storeAlone applies the same batches straight to the store.
func storeAlone(ctx context.Context, st stores.Store, conc, batch int, dur time.Duration) (float64, error) {
	l := load{conc: conc, batch: batch, dur: dur}
	return l.each(ctx, func(ctx context.Context, i int, deadline time.Time, count *atomic.Int64) error {
		w := newWriter(i)
		for time.Now().Before(deadline) {
			res, err := st.Apply(ctx, w.changes(batch))
			if err != nil {
				return err
			}
			count.Add(int64(len(res)))
		}
		return nil
	})
}

var rpsRE = regexp.MustCompile(`([0-9.]+) requests per second`)

// redisBenchmark runs redis-benchmark -q with args against addr (pinned
// like the server under test: the load generator's place) and returns the
// requests per second it reports and the Redis server's CPU time per
// request (INFO cpu, main thread, around the run).
func redisBenchmark(ctx context.Context, addr string, requests int, args ...string) (float64, time.Duration, error) {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return 0, 0, fmt.Errorf("redis address %q has no port", addr)
	}
	cpu0, err := redisCPU(ctx, addr)
	if err != nil {
		return 0, 0, err
	}
	all := append([]string{"-h", host, "-p", port, "-q", "-n", strconv.Itoa(requests)}, args...)
	out, err := pinned("redis-benchmark", all...).CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("redis-benchmark: %v: %s", err, out)
	}
	cpu1, err := redisCPU(ctx, addr)
	if err != nil {
		return 0, 0, err
	}
	// redis-benchmark -q redraws its progress with \r; the last line holds the result.
	m := rpsRE.FindAllStringSubmatch(string(out), -1)
	if m == nil {
		return 0, 0, fmt.Errorf("redis-benchmark output not understood: %q", out)
	}
	rps, err := strconv.ParseFloat(m[len(m)-1][1], 64)
	return rps, (cpu1 - cpu0) / time.Duration(requests), err
}

// redisCeiling runs redis-benchmark's pipelined SET against addr and
// returns SETs per second and Redis's CPU per SET in µs.
func redisCeiling(ctx context.Context, addr string) (float64, float64, error) {
	const requests = 200_000
	rps, cpu, err := redisBenchmark(ctx, addr, requests, "-P", "16", "-t", "set", "-r", "100000")
	return rps, float64(cpu) / float64(time.Microsecond), err
}

// shapeScript has the shape of the store's merge script (stores/redis
// merge.lua) without its merging: it reads the head, reads each record from
// the hash, writes them all back with one HSET, appends them to the log
// with one ZADD scored by new sequence numbers, sets the head and
// publishes once. Its ARGV are pairs of record id and record bytes.
const shapeScript = `
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local hargs, zargs = {}, {}
for i = 1, #ARGV, 2 do
  local old = redis.call('HGET', KEYS[3], ARGV[i])
  head = head + 1
  hargs[#hargs + 1] = ARGV[i]
  hargs[#hargs + 1] = ARGV[i + 1]
  zargs[#zargs + 1] = head
  zargs[#zargs + 1] = ARGV[i]
end
redis.call('HSET', KEYS[3], unpack(hargs))
redis.call('ZADD', KEYS[2], unpack(zargs))
redis.call('SET', KEYS[1], head)
redis.call('PUBLISH', KEYS[1], head)
return head
`

// shapeRecord stands for a record: as long as the store's record blob of
// one benchmark change (a "title" field with benchValue, stamped by a
// bench replica id of 33 bytes: 118 bytes), in printable bytes
// (redis-benchmark takes its arguments from the command line).
var shapeRecord = strings.Repeat("r", 118)

// redisScriptCeiling runs redis-benchmark -P 16 of EVALSHA of shapeScript
// with batch records per call, ids among 100,000, under a fresh key
// prefix, and returns records per second and Redis's CPU per record in µs.
func redisScriptCeiling(ctx context.Context, addr string, batch int) (float64, float64, error) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	sha, err := c.ScriptLoad(ctx, shapeScript).Result()
	if err != nil {
		return 0, 0, fmt.Errorf("load the script: %w", err)
	}
	prefix := "bench-ceil-" + randomSuffix() + ":"
	defer dropRedisPrefix(addr, prefix)
	args := []string{"-P", "16", "-r", "100000", "EVALSHA", sha, "3", prefix + "{todos}:seq", prefix + "{todos}:log", prefix + "{todos}:r"}
	for range batch {
		args = append(args, "todo-__rand_int__", shapeRecord)
	}
	calls := max(200_000/batch, 100)
	rps, cpu, err := redisBenchmark(ctx, addr, calls, args...)
	return rps * float64(batch), float64(cpu) / float64(time.Microsecond) / float64(batch), err
}

// redisCPU is the Redis main thread's CPU time so far (INFO cpu).
func redisCPU(ctx context.Context, addr string) (time.Duration, error) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	info, err := c.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, f := range []string{"used_cpu_user_main_thread", "used_cpu_sys_main_thread"} {
		re := regexp.MustCompile(f + `:([0-9.]+)`)
		m := re.FindStringSubmatch(info)
		if m == nil {
			return 0, fmt.Errorf("INFO cpu has no %s", f)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		total += v
	}
	return time.Duration(total * float64(time.Second)), nil
}

// dynamoCeiling writes items of about our records' size with BatchWriteItem
// (25 per call) from conc workers into a fresh table.
func dynamoCeiling(ctx context.Context, endpoint string, conc int, dur time.Duration) (float64, error) {
	c, err := ddbClient(ctx, endpoint)
	if err != nil {
		return 0, err
	}
	table := "bench-raw-" + randomSuffix()
	_, err = c.CreateTable(ctx, &awsddb.CreateTableInput{
		TableName:            aws.String(table),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
	})
	if err != nil {
		return 0, fmt.Errorf("create table: %w", err)
	}
	defer dropTable(endpoint, table)
	blob := make([]byte, 80)
	l := load{conc: conc, dur: dur}
	return l.each(ctx, func(ctx context.Context, i int, deadline time.Time, count *atomic.Int64) error {
		w := newWriter(i)
		for time.Now().Before(deadline) {
			reqs := make([]types.WriteRequest, 25)
			for i := range reqs {
				reqs[i] = types.WriteRequest{PutRequest: &types.PutRequest{Item: map[string]types.AttributeValue{
					"pk": &types.AttributeValueMemberS{Value: "todo-" + strconv.Itoa(w.rng.IntN(100_000))},
					"r":  &types.AttributeValueMemberB{Value: blob},
				}}}
			}
			out, err := c.BatchWriteItem(ctx, &awsddb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{table: reqs}})
			if err != nil {
				return err
			}
			count.Add(int64(len(reqs) - len(out.UnprocessedItems[table])))
		}
		return nil
	})
}
