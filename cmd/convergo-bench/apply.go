package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsddb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport"
	"github.com/convergo/convergo/transport/proto"
)

// runApply measures scenario 2: how many field changes per second the sync
// server applies, pushed over HTTP (the protocol's only push) by concurrent
// clients, on each store, beside the store's own ceiling measured in the
// same run: redis-benchmark's pipelined SET on the same Redis, a raw
// BatchWriteItem loop on the same DynamoDB Local, and for the in-memory
// store its Apply called directly.
//
// Each change sets one field of a record picked at random among 100,000, so
// one field change is one record write, comparable with one SET or one
// item.
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
		base, stopServer, err := applyServer(ctx, *bin, kind)
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
		for run := range nruns {
			rate, err := l.http(ctx)
			if err != nil {
				// Keep what was measured and still measure the ceiling.
				fmt.Fprintf(os.Stderr, "apply: %s http run %d: %v\n", kind, run, err)
				break
			}
			emit(sample{Scenario: title, Metric: "field changes/s", Unit: "/s", Better: "higher",
				Impl: "Convergo server, HTTP push", Ours: true, Run: run, Value: rate,
				Note: fmt.Sprintf("%d clients, %d changes per push", l.conc, l.batch)})
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
				impl, note = "redis-benchmark SET -P 16", "same Redis, 50 clients"
				rate, err = redisCeiling(os.Getenv("CONVERGO_REDIS_ADDR"))
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
// process. It returns the base URL and a func that stops the server and
// deletes the store.
func applyServer(ctx context.Context, bin, kind string) (string, func(), error) {
	if bin != "" {
		url, clean, err := storeURL(kind)
		if err != nil {
			return "", nil, err
		}
		c, err := startReal(bin, url)
		if err != nil {
			clean()
			return "", nil, err
		}
		return c.url, func() { c.stop(); clean() }, nil
	}
	st, cleanup, err := openStore(ctx, kind)
	if err != nil {
		return "", nil, err
	}
	srv, err := startServer(st, "bench-srv")
	if err != nil {
		cleanup()
		return "", nil, err
	}
	return srv.url, func() { srv.Close(); cleanup() }, nil
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

// each runs f on conc goroutines until the run's time is up and returns
// the total it counted per second.
func (l load) each(ctx context.Context, f func(ctx context.Context, w *writer, deadline time.Time, count *atomic.Int64) error) (float64, error) {
	var count atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, l.conc)
	start := time.Now()
	deadline := start.Add(l.dur)
	for i := range l.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx, newWriter(i), deadline, &count); err != nil {
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

func (l load) http(ctx context.Context) (float64, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: l.conc, MaxConnsPerHost: l.conc}, Timeout: time.Minute}
	defer client.CloseIdleConnections()
	return l.each(ctx, func(ctx context.Context, w *writer, deadline time.Time, count *atomic.Int64) error {
		for time.Now().Before(deadline) {
			n, err := httpPush(ctx, client, l.base, w.replica, w.changes(l.batch))
			if err != nil {
				return err
			}
			count.Add(int64(n))
		}
		return nil
	})
}

// storeAlone applies the same batches straight to the store.
func storeAlone(ctx context.Context, st stores.Store, conc, batch int, dur time.Duration) (float64, error) {
	l := load{conc: conc, batch: batch, dur: dur}
	return l.each(ctx, func(ctx context.Context, w *writer, deadline time.Time, count *atomic.Int64) error {
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

var rpsRE = regexp.MustCompile(`SET: ([0-9.]+) requests per second`)

// redisCeiling runs redis-benchmark's pipelined SET against addr.
func redisCeiling(addr string) (float64, error) {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return 0, fmt.Errorf("redis address %q has no port", addr)
	}
	out, err := exec.Command("redis-benchmark", "-h", host, "-p", port, "-P", "16", "-t", "set",
		"-n", "500000", "-r", "100000", "-q").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("redis-benchmark: %v: %s", err, out)
	}
	// redis-benchmark -q redraws its progress with \r; the last SET line holds the result.
	m := rpsRE.FindAllStringSubmatch(string(out), -1)
	if m == nil {
		return 0, fmt.Errorf("redis-benchmark output not understood: %q", out)
	}
	return strconv.ParseFloat(m[len(m)-1][1], 64)
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
	return l.each(ctx, func(ctx context.Context, w *writer, deadline time.Time, count *atomic.Int64) error {
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
