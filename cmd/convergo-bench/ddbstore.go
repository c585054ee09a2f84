package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	awsddb "github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/stores/dynamodb"
)

// ddbstore measures the DynamoDB store's Apply (in process, no server)
// against raw TransactWriteItems of the same shape on the same DynamoDB
// Local, in the same run, with the same stream setting on both tables:
//
//	convergo-bench ddbstore [-pushers 1,8] [-collections 1,8] [-batches 1,10,100] [-shards 1,4] [-dur 5s] [-stream] [-turn 200ms] [-side both|store|raw] [-warmup 2s] [-debug]
//
// Run it against a private, freshly started emulator
// (scripts/ddb-private.sh): DynamoDB Local's cost per streamed write grows
// with its stream history, so with -stream the side measured second, and
// every later row, pays for what was written before it. -side measures
// one side only, so that a driver (scripts/bench.sh, scenario 6) can give
// each side of each row an emulator of its own; -warmup first runs the
// measured side's shape for that long on a table without a stream and
// throws the figure away (the emulator's first seconds are its JIT's, and
// a table without a stream adds no stream history). Pushers are spread over two store instances (two
// servers on one table) when there are more than one; each push is one
// Apply of -batch new records (a 36-byte title and a client stamp). The raw
// side runs as many workers, each committing transactions of the store's
// shape (a head put and, per change, a conditional record put and a log
// put, min(batch, 49) changes per transaction) on a head of its own, so it
// never conflicts: the emulator's ceiling for that shape. Items written
// count the record and log items on both sides (not heads). -shards
// gives each collection K log shards (dynamodb.Config.DefaultShards); the
// raw side is the same whatever K. -turn sets the instances' commit turns
// (dynamodb.Config.CommitTurn; negative: none, the instances race on the
// head), -debug logs every cancelled transaction's reasons, each turn wait
// and yield, and each instance's requests with their times. Beside each
// store row: the share of the time with a request in flight and with two
// or more (DynamoDB Local serialises requests, and pays for overlapping
// ones), and, on a private emulator, its CPU time per item written.
func init() { commands["ddbstore"] = runDDBStore }

func runDDBStore(args []string) error {
	fs := flag.NewFlagSet("ddbstore", flag.ExitOnError)
	pushers := fs.String("pushers", "1,8", "concurrent pushers")
	colls := fs.String("collections", "1,8", "collections written")
	batches := fs.String("batches", "1,10,100", "changes per push")
	dur := fs.Duration("dur", 5*time.Second, "time per measurement")
	stream := fs.Bool("stream", false, "tables with a stream (NEW_AND_OLD_IMAGES) on both sides")
	runs := fs.Int("runs", 1, "runs per figure")
	shardList := fs.String("shards", "1", "log shards per collection (K)")
	turnList := fs.String("turn", "0", "dynamodb.Config.CommitTurn, a list (e.g. 0,-1): 0 the store's default, negative no turns")
	side := fs.String("side", "both", "what to measure: both, store (the store's Apply only) or raw (the raw ceiling only)")
	warmup := fs.Duration("warmup", 0, "before the first row, run the measured side(s) this long on a table without a stream, unrecorded")
	debug := fs.Bool("debug", false, "the store's debug log (each cancelled transaction's reasons) to stderr")
	fs.Parse(args)
	var logger *slog.Logger
	if *debug {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	doStore, doRaw := *side == "both" || *side == "store", *side == "both" || *side == "raw"
	if !doStore && !doRaw {
		return fmt.Errorf("-side %q: want both, store or raw", *side)
	}
	ep := os.Getenv("CONVERGO_DYNAMODB_ENDPOINT")
	if ep == "" {
		return errors.New("CONVERGO_DYNAMODB_ENDPOINT is not set (scripts/ddb-private.sh start)")
	}
	ctx := context.Background()
	counts := &reqCounter{n: map[string]*atomic.Int64{}}
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion("us-east-1"))
	if err != nil {
		return err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	client := awsddb.NewFromConfig(cfg, func(o *awsddb.Options) {
		o.BaseEndpoint = aws.String(ep)
		o.HTTPClient = &http.Client{Transport: countingTransport{tr, counts}}
		// DynamoDB Local's x-amz-crc32 does not match some responses; the
		// SDK then logs and drops the connection, so every such request
		// would pay a new TCP connection.
		o.DisableValidateResponseChecksum = true
	})
	streamNote := "streams off"
	if *stream {
		streamNote = "streams on"
	}
	fmt.Fprintf(os.Stderr, "%-5s %-3s %-8s %-5s %-5s | %12s %12s %8s %8s %11s %9s %8s %9s | %12s %8s | %6s | %s\n", "turn", "K", "pushers", "colls", "batch", "store ch/s", "items/s", "tx ok", "tx lost", "waits/yield", "busy/2+", "items/cpu", "cpu emu/go", "raw items/s", "/cpu", "ratio", "requests per change (store)")
	var turns []time.Duration
	for _, f := range strings.Split(*turnList, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("-turn: %w", err)
		}
		turns = append(turns, d)
	}
	warm := *warmup > 0
	for run := 1; run <= *runs; run++ {
		for _, turnLen := range turns {
			for _, k := range ints(*shardList) {
				for _, p := range ints(*pushers) {
					for _, nc := range ints(*colls) {
						for _, b := range ints(*batches) {
							// With streams, every write costs the emulator more
							// the more stream records it keeps: the side measured
							// second pays for the first's. Odd runs measure the
							// store first, even runs the raw ceiling.
							if warm {
								warm = false
								if doStore {
									if _, err := measureStore(ctx, client, counts, nil, turnLen, p, nc, b, k, *warmup, false); err != nil {
										return fmt.Errorf("warm-up: %w", err)
									}
								}
								if doRaw {
									if _, err := measureRaw(ctx, client, p, b, *warmup, false); err != nil {
										return fmt.Errorf("warm-up: %w", err)
									}
								}
							}
							var raw rawFigure
							var st storeFigure
							if doRaw && run%2 == 0 {
								if raw, err = measureRaw(ctx, client, p, b, *dur, *stream); err != nil {
									return err
								}
							}
							if doStore {
								if st, err = measureStore(ctx, client, counts, logger, turnLen, p, nc, b, k, *dur, *stream); err != nil {
									return err
								}
							}
							perChange := counts.per(st.changes)
							if doRaw && run%2 == 1 {
								if raw, err = measureRaw(ctx, client, p, b, *dur, *stream); err != nil {
									return err
								}
							}
							storeItems := 2 * st.rate
							ratio := storeItems / raw.rate
							fmt.Fprintf(os.Stderr, "%-5s %-3d %-8d %-5d %-5d | %12.0f %12.0f %8d %8d %5d/%-5d %4.2f/%-4.2f %8.0f %4.2f/%-4.2f | %12.0f %8.0f | %6.2f | %s\n", turnName(turnLen), k, p, nc, b, st.rate, storeItems, st.committed, st.cancelled, st.waits, st.yields, st.busy, st.overlap, 2*st.perCPU, st.emuShare, st.selfShare, raw.rate, raw.perCPU, ratio, perChange)
							scen := fmt.Sprintf("DynamoDB store Apply, %d pushers, %d collections, batch %d, %s", p, nc, b, streamNote)
							if k > 1 {
								scen = fmt.Sprintf("DynamoDB store Apply, K=%d shards, %d pushers, %d collections, batch %d, %s", k, p, nc, b, streamNote)
							}
							if turnLen < 0 {
								scen += ", no commit turns"
							}
							if doStore {
								emit(sample{Scenario: scen, Metric: "items written/s", Unit: "/s", Better: "higher", Impl: "dynamodb store Apply", Ours: true, Run: run, Value: storeItems,
									Note: fmt.Sprintf("%.0f changes/s; %d transactions committed, %d cancelled; %d turn waits, %d yields; requests per change: %s", st.rate, st.committed, st.cancelled, st.waits, st.yields, perChange)})
								emit(scaleSample(p, nc, b, k, turnLen, streamNote, run, st.rate))
							}
							if doRaw {
								emit(sample{Scenario: scen, Metric: "items written/s", Unit: "/s", Better: "higher", Impl: "raw TransactWriteItems, same shape", Limit: true, Run: run, Value: raw.rate})
							}
						}
					}
				}
			}
		}
	}
	return nil
}

// scaleSample is the store's rate beside the same row with one pusher:
// the "8 pushers over 2 instances reach ≥ 0.9× one pusher". One
// pusher is the reference (Limit); any other count is ours, so the report
// prints their ratio when both were measured, in one invocation or in
// several (scripts/bench.sh gives each its own emulator).
func scaleSample(pushers, colls, batch, shards int, turnLen time.Duration, streamNote string, run int, rate float64) sample {
	scen := fmt.Sprintf("DynamoDB store Apply, pushers over 2 instances against 1 pusher, %d collections, batch %d, K=%d, %s", colls, batch, shards, streamNote)
	if turnLen < 0 {
		scen += ", no commit turns"
	}
	s := sample{Scenario: scen, Metric: "changes/s", Unit: "/s", Better: "higher", Run: run, Value: rate, Ours: true,
		Impl: fmt.Sprintf("%d pushers over %d instances", pushers, min(pushers, 2))}
	if pushers == 1 {
		s.Impl, s.Ours, s.Limit = "1 pusher, 1 instance", false, true
	}
	return s
}

func turnName(d time.Duration) string {
	switch {
	case d < 0:
		return "off"
	case d == 0:
		return "on"
	}
	return d.String()
}

func ints(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// benchTable creates a table of the store's key schema, with or without a
// stream, and returns a function that deletes it.
func benchTable(ctx context.Context, c *awsddb.Client, stream bool) (string, func(), error) {
	name := "bench-ddb-" + randomSuffix()
	in := &awsddb.CreateTableInput{
		TableName:   aws.String(name),
		BillingMode: types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: types.ScalarAttributeTypeN},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: types.KeyTypeRange},
		},
	}
	if stream {
		in.StreamSpecification = &types.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages}
	}
	if _, err := c.CreateTable(ctx, in); err != nil {
		return "", nil, fmt.Errorf("create table: %w", err)
	}
	w := awsddb.NewTableExistsWaiter(c)
	if err := w.Wait(ctx, &awsddb.DescribeTableInput{TableName: aws.String(name)}, time.Minute); err != nil {
		return "", nil, err
	}
	return name, func() {
		c.DeleteTable(context.Background(), &awsddb.DeleteTableInput{TableName: aws.String(name)})
	}, nil
}

var ddbTitle, _ = crdt.EncodeValue("buy oat milk and a loaf of rye bread")

type storeFigure struct {
	rate                 float64 // changes/s
	changes              int64
	committed, cancelled int64
	waits, yields        int64   // commit turns (dynamodb.Store.TurnStats)
	busy, overlap        float64 // share of the time with a request in flight, with two or more
	perCPU               float64 // changes per second of the emulator's CPU time (0: not known)
	emuShare, selfShare  float64 // CPU seconds per second: the emulator's, this process's
}

func measureStore(ctx context.Context, c *awsddb.Client, counts *reqCounter, logger *slog.Logger, turnLen time.Duration, pushers, colls, batch, shards int, dur time.Duration, stream bool) (storeFigure, error) {
	table, drop, err := benchTable(ctx, c, stream)
	if err != nil {
		return storeFigure{}, err
	}
	defer drop()
	ninst := min(pushers, 2)
	inst := make([]*dynamodb.Store, ninst)
	for i := range inst {
		lg, ic := logger, c
		if lg != nil {
			// -debug: each instance's requests are logged with their
			// times, beside the store's own debug lines.
			lg = lg.With("instance", i)
			opts := c.Options()
			opts.HTTPClient = &http.Client{Transport: tracingTransport{opts.HTTPClient.(*http.Client).Transport, lg}}
			ic = awsddb.New(opts)
		}
		if inst[i], err = dynamodb.New(ctx, dynamodb.Config{Client: ic, Table: table, DefaultShards: shards, Logger: lg, CommitTurn: turnLen}); err != nil {
			return storeFigure{}, err
		}
		defer inst[i].Close()
	}
	var changes atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	counts.reset()
	cpu0, cpuOK := emulatorCPU()
	self0 := selfCPU()
	start := time.Now()
	deadline := start.Add(dur)
	for p := range pushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newWriter(p)
			s := inst[p%ninst]
			for k := 0; time.Now().Before(deadline); k++ {
				coll := "todos-" + strconv.Itoa((p+k)%colls)
				cs := make([]crdt.Change, batch)
				for i := range cs {
					stamp, _ := w.clock.Now(time.Now().UnixMilli())
					id := fmt.Sprintf("%s-%d-%d", randomSuffix()+randomSuffix(), k, i)
					cs[i] = crdt.Change{Collection: coll, Record: crdt.SetField(id, "title", ddbTitle, stamp)}
				}
				if _, err := s.Apply(ctx, cs); err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				changes.Add(int64(batch))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	busy, overlap := counts.busyTime()
	f := storeFigure{rate: float64(changes.Load()) / el, changes: changes.Load(), busy: busy.Seconds() / el, overlap: overlap.Seconds() / el}
	if cpu1, ok := emulatorCPU(); ok && cpuOK && cpu1 > cpu0 {
		f.perCPU = float64(changes.Load()) / (cpu1 - cpu0).Seconds()
		f.emuShare = (cpu1 - cpu0).Seconds() / el
	}
	f.selfShare = (selfCPU() - self0).Seconds() / el
	for _, s := range inst {
		a, b := s.TxStats()
		f.committed += a
		f.cancelled += b
		w, y := s.TurnStats()
		f.waits += w
		f.yields += y
	}
	return f, firstErr
}

// measureRaw commits transactions of the store's shape from workers, each
// on a head of its own, and returns record and log items written per
// second.
func measureRaw(ctx context.Context, c *awsddb.Client, workers, batch int, dur time.Duration, stream bool) (rawFigure, error) {
	table, drop, err := benchTable(ctx, c, stream)
	if err != nil {
		return rawFigure{}, err
	}
	defer drop()
	per := min(batch, 49)
	rec := crdt.AppendRecord(nil, crdt.SetField("abcdefgh12345678-0-0", "title", ddbTitle, crdt.Stamp{Wall: time.Now().UnixMilli(), Replica: "abcdefghijklmnop_bench-0"}))
	var items atomic.Int64
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	cpu0, cpuOK := emulatorCPU()
	start := time.Now()
	deadline := start.Add(dur)
	for wk := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			coll := "todos-" + strconv.Itoa(wk)
			seq := 0
			for time.Now().Before(deadline) {
				acts := []types.TransactWriteItem{{Put: &types.Put{TableName: aws.String(table), Item: map[string]types.AttributeValue{
					"pk": &types.AttributeValueMemberS{Value: "~h#" + coll}, "sk": &types.AttributeValueMemberN{Value: "0"},
					"head": &types.AttributeValueMemberN{Value: strconv.Itoa(seq + per)}, "cvg": &types.AttributeValueMemberN{Value: "1"},
				}}}}
				for range per {
					seq++
					id := randomSuffix() + randomSuffix() + "-" + strconv.Itoa(seq)
					acts = append(acts,
						types.TransactWriteItem{Put: &types.Put{TableName: aws.String(table),
							Item: map[string]types.AttributeValue{
								"pk": &types.AttributeValueMemberS{Value: "~r#" + coll + "#" + id}, "sk": &types.AttributeValueMemberN{Value: "0"},
								"rec": &types.AttributeValueMemberB{Value: rec}, "seq": &types.AttributeValueMemberN{Value: strconv.Itoa(seq)},
								"cvg": &types.AttributeValueMemberN{Value: "1"},
							},
							ConditionExpression:      aws.String("attribute_not_exists(#k)"),
							ExpressionAttributeNames: map[string]string{"#k": "pk"},
						}},
						types.TransactWriteItem{Put: &types.Put{TableName: aws.String(table),
							Item: map[string]types.AttributeValue{
								"pk": &types.AttributeValueMemberS{Value: "~l#" + coll}, "sk": &types.AttributeValueMemberN{Value: strconv.Itoa(seq)},
								"id": &types.AttributeValueMemberS{Value: id}, "rec": &types.AttributeValueMemberB{Value: rec},
								"cvg": &types.AttributeValueMemberN{Value: "1"},
							},
							ConditionExpression:      aws.String("attribute_not_exists(#k)"),
							ExpressionAttributeNames: map[string]string{"#k": "pk"},
						}})
				}
				if _, err := c.TransactWriteItems(ctx, &awsddb.TransactWriteItemsInput{TransactItems: acts}); err != nil {
					mu.Lock()
					firstErr = errors.Join(firstErr, err)
					mu.Unlock()
					return
				}
				items.Add(int64(2 * per))
			}
		}()
	}
	wg.Wait()
	f := rawFigure{rate: float64(items.Load()) / time.Since(start).Seconds()}
	if cpu1, ok := emulatorCPU(); ok && cpuOK && cpu1 > cpu0 {
		f.perCPU = float64(items.Load()) / (cpu1 - cpu0).Seconds()
	}
	return f, firstErr
}

// rawFigure is the raw ceiling: items written per second, and per second
// of the emulator's CPU time (0: not known).
type rawFigure struct{ rate, perCPU float64 }

// reqCounter counts requests by DynamoDB operation (X-Amz-Target), and the
// time at least one request was in flight: DynamoDB Local serialises
// requests, so that is the time the emulator worked for the store, and the
// rest is time the store left it idle (waits, pauses, work in Go).
type reqCounter struct {
	mu sync.Mutex
	n  map[string]*atomic.Int64

	bmu      sync.Mutex
	inflight int
	since    time.Time     // when inflight last went from 0 to 1
	busy     time.Duration // total time with inflight > 0
	since2   time.Time     // when inflight last went from 1 to 2
	overlap  time.Duration // total time with inflight > 1
}

// begin and end bracket one request.
func (r *reqCounter) begin() {
	r.bmu.Lock()
	if r.inflight == 0 {
		r.since = time.Now()
	}
	if r.inflight == 1 {
		r.since2 = time.Now()
	}
	r.inflight++
	r.bmu.Unlock()
}

func (r *reqCounter) end() {
	r.bmu.Lock()
	r.inflight--
	if r.inflight == 0 {
		r.busy += time.Since(r.since)
	}
	if r.inflight == 1 {
		r.overlap += time.Since(r.since2)
	}
	r.bmu.Unlock()
}

// busyTime returns the time with a request in flight since the last
// reset, and the time with more than one.
func (r *reqCounter) busyTime() (busy, overlap time.Duration) {
	r.bmu.Lock()
	defer r.bmu.Unlock()
	busy, overlap = r.busy, r.overlap
	if r.inflight > 0 {
		busy += time.Since(r.since)
	}
	if r.inflight > 1 {
		overlap += time.Since(r.since2)
	}
	return busy, overlap
}

func (r *reqCounter) add(op string) {
	r.mu.Lock()
	c := r.n[op]
	if c == nil {
		c = new(atomic.Int64)
		r.n[op] = c
	}
	r.mu.Unlock()
	c.Add(1)
}

func (r *reqCounter) reset() {
	r.mu.Lock()
	r.n = map[string]*atomic.Int64{}
	r.mu.Unlock()
	r.bmu.Lock()
	r.busy, r.overlap, r.since, r.since2 = 0, 0, time.Now(), time.Now()
	r.bmu.Unlock()
}

// per snapshots the counts divided by changes, e.g. "BatchGetItem 0.10 TransactWriteItems 0.12".
func (r *reqCounter) per(changes int64) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, op := range []string{"BatchGetItem", "TransactWriteItems", "GetItem", "Query", "DescribeTable"} {
		if c := r.n[op]; c != nil && changes > 0 && op != "DescribeTable" {
			parts = append(parts, fmt.Sprintf("%s %.3f", op, float64(c.Load())/float64(changes)))
		}
	}
	return strings.Join(parts, " ")
}

type countingTransport struct {
	next http.RoundTripper
	c    *reqCounter
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if target := r.Header.Get("X-Amz-Target"); target != "" {
		t.c.add(target[strings.LastIndexByte(target, '.')+1:])
	}
	t.c.begin()
	defer t.c.end()
	return t.next.RoundTrip(r)
}

// emulatorCPU returns the CPU time the private emulator
// (CONVERGO_DDB_PRIVATE_PID, scripts/ddb-private.sh) has used; false when
// there is none to read. On a machine shared with other work a rate moves
// with the load, while the emulator's CPU time per change written mostly
// does not: it tells a store that makes the emulator work more per change
// from one that met a busier machine.
func emulatorCPU() (time.Duration, bool) {
	pid, err := strconv.Atoi(os.Getenv("CONVERGO_DDB_PRIVATE_PID"))
	if err != nil {
		return 0, false
	}
	d := procCPU(pid)
	return d, d > 0
}

// tracingTransport logs each request's operation and duration (-debug).
type tracingTransport struct {
	next http.RoundTripper
	log  *slog.Logger
}

func (t tracingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	target := r.Header.Get("X-Amz-Target")
	began := time.Now()
	resp, err := t.next.RoundTrip(r)
	t.log.Debug("request", "op", target[strings.LastIndexByte(target, '.')+1:], "began", began.Format("15:04:05.000"), "took", time.Since(began).Round(100*time.Microsecond))
	return resp, err
}
