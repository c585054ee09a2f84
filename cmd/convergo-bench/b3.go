package main

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/convergo/convergo/crdt"
	"github.com/convergo/convergo/transport/proto"
)

// The B3 metrics, the one definition of their names: the JS drivers
// (scripts/bench/js/b3.mjs, its rowNames) read them from
// `convergo-bench b3 -rows` (b3Rows), so the report puts the Go core's
// figures beside the JS client's and the peers' in the same rows.
const (
	b3Cold = "apply all updates, cold (one timed run per fresh process, as crdt-benchmarks publishes)"
	b3Warm = "apply all updates, warm (median of %d runs after the cold one, per process)"
	// The update bytes of Convergo's clients, in three rows: the live push
	// message a client sends over an open session whose welcome came 1 s
	// before the write (the row of the target, and of the peers' bytes)
	// or 3 h before, and the HTTP push body.
	b3Bytes      = "update bytes (all clients)"
	b3BytesHours = "update bytes (all clients), Convergo client: live push, session opened 3 h before the writes"
	b3BytesHTTP  = "update bytes (all clients), Convergo client: HTTP push body"
	b3Impl       = "Convergo Go core: decode push body + Record.Merge in memory"
)

// b3RowNames are the names of the B3 report's rows for runs of warm warm
// runs each: the metric of each figure, and the scenario title of each
// scenario id (the report matches samples by scenario and metric). It is
// what `convergo-bench b3 -rows -warm N` prints, as JSON, for the JS
// drivers: scripts/bench.sh hands it to scripts/bench/js/b3.mjs as
// CONVERGO_B3_ROWS.
type b3RowNames struct {
	WarmRuns   int               `json:"warmRuns"`
	Cold       string            `json:"cold"`
	Warm       string            `json:"warm"`
	Bytes      string            `json:"bytes"`
	BytesHours string            `json:"bytesHours"`
	BytesHTTP  string            `json:"bytesHTTP"`
	Scenarios  map[string]string `json:"scenarios"`
}

// b3Rows returns the row names for runs of warm warm runs.
func b3Rows(warm int) b3RowNames {
	r := b3RowNames{WarmRuns: warm, Cold: b3Cold, Warm: fmt.Sprintf(b3Warm, warm), Bytes: b3Bytes, BytesHours: b3BytesHours, BytesHTTP: b3BytesHTTP,
		Scenarios: map[string]string{}}
	for _, sc := range b3Scenarios() {
		r.Scenarios[sc.id] = sc.title
	}
	return r
}

// metrics returns the metrics of the rows, cold first.
func (r b3RowNames) metrics() []string {
	return []string{r.Cold, r.Warm, r.Bytes, r.BytesHours, r.BytesHTTP}
}

// b3SessionAge is how long before a write the session it is pushed over
// opened, for the live push rows, in milliseconds: 1 s (b3Bytes) and 3 h
// (b3BytesHours). It is the definition the JS client's rows use too:
// scripts/bench.sh hands it to scripts/bench/js (its sessionAge) as
// CONVERGO_B3_SESSION_AGE, the output of `convergo-bench b3 -session-age`.
var b3SessionAge = b3Ages{Recent: 1_000, Hours: 3 * 3_600_000}

// b3Ages is a value of each live push row, in milliseconds.
type b3Ages struct {
	Recent int64 `json:"recent"`
	Hours  int64 `json:"hours"`
}

// b3Sizes are the bytes of one client's update in each form.
type b3Sizes struct{ recent, hours, http int }

// b3Encode returns the HTTP push body of a client's change (replica named
// by its device part, as sent with the anonymous principal's token) and
// the sizes of that body and of the live push message the Go client sends
// for the same change over an open session (proto.PushLive, from a
// session base b3SessionAge before the change's wall).
func b3Encode(replica, prefix string, ch crdt.Change, wall int64) ([]byte, b3Sizes, error) {
	body, err := proto.Encode(proto.PushRequest{Replica: replica, Prefix: prefix, Changes: []crdt.Change{ch}})
	if err != nil {
		return nil, b3Sizes{}, err
	}
	live := func(age int64) (int, error) {
		m, err := proto.EncodeMessage(proto.PushLive{Changes: []crdt.Change{ch}, Session: proto.Session{Replica: replica, Base: wall - age}})
		return len(m), err
	}
	out := b3Sizes{http: len(body)}
	if out.recent, err = live(b3SessionAge.Recent); err != nil {
		return nil, b3Sizes{}, err
	}
	if out.hours, err = live(b3SessionAge.Hours); err != nil {
		return nil, b3Sizes{}, err
	}
	return body, out, nil
}

type b3Scenario struct {
	id, title string
	clients   int
	key       func(i int) string
	value     func(i int) any
}

func b3Scenarios() []b3Scenario {
	clients := int(math.Floor(math.Sqrt(6000))) * 20 // 1540
	return []b3Scenario{
		{"B3.1", "B3.1 1540 clients set one key to a number", clients, func(int) string { return "v" }, func(i int) any { return i }},
		{"B3.2", "B3.2 1540 clients set one key to an object", clients, func(int) string { return "v" },
			func(i int) any { return map[string]any{"name": strconv.Itoa(i), "address": "here"} }},
		{"B3.3", "B3.3 1540 clients set one key to a long string", clients, func(int) string { return "v" },
			func(i int) any { return strings.Repeat(strconv.Itoa(i), clients) }},
		// Within the 1,024 fields a record may hold.
		{"B3.x", "B3.x 1000 clients set distinct keys (not in crdt-benchmarks)", 1000,
			func(i int) string { return "k" + strconv.Itoa(i) }, func(i int) any { return i }},
	}
}

// runB3 runs crdt-benchmarks' B3 map scenarios (dmonad/crdt-benchmarks,
// js-lib/b3.js) on the Go core, each run of each scenario in a fresh
// process (this command again with -one), as scripts/bench/js/b3.mjs does
// for the JS client and the peers.
//
// One run follows crdt-benchmarks' template: every client is a replica
// with the id a JS client makes (the anonymous subject's prefix, the
// separator, 22 random characters) and its own clock at the current time;
// client i sets one field of record "doc" and its update is the push body a
// client sends for that change (proto.PushRequest); client 0 applies every
// update (untimed reference), then client 1, holding its own change,
// applies them all, timed once (cold); then clients 2… apply them, timed
// each (warm). Applying an update is what the server does with a push
// body: proto.DecodePush with the principal's prefix, then Record.Merge of
// each change, in memory (no store). Every result must equal client 0's, also in reverse order.
func runB3(args []string) error {
	fs := flag.NewFlagSet("b3", flag.ExitOnError)
	runs := fs.Int("runs", 4, "runs, each scenario in a fresh process")
	warm := fs.Int("warm", 5, "warm runs per process, after the cold one")
	one := fs.String("one", "", "run this scenario once in this process (used by -runs)")
	run := fs.Int("run", 0, "the run number to report (with -one)")
	sessionAge := fs.Bool("session-age", false, "print b3SessionAge as JSON, for scripts/bench/js, and exit")
	rows := fs.Bool("rows", false, "print the row names (b3Rows) for -warm as JSON, for scripts/bench/js, and exit")
	fs.Parse(args)

	if *sessionAge || *rows {
		var v any = b3SessionAge
		if *rows {
			v = b3Rows(*warm)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_, err = fmt.Printf("%s\n", b)
		return err
	}

	if *one != "" {
		for _, sc := range b3Scenarios() {
			if sc.id == *one {
				return b3Once(sc, *run, *warm)
			}
		}
		return fmt.Errorf("b3: no scenario %q", *one)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for r := range *runs {
		for _, sc := range b3Scenarios() {
			cmd := exec.Command(self, "b3", "-one", sc.id, "-run", strconv.Itoa(r), "-warm", strconv.Itoa(*warm))
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("b3 %s run %d: %w", sc.id, r, err)
			}
		}
	}
	return nil
}

// b3Updates makes the scenario's clients, each with the replica id a JS
// client makes and its own clock, and their writes: the documents holding
// each client's own change, the HTTP push bodies (the updates applied),
// and the bytes of all updates in each form.
func b3Updates(sc b3Scenario) (updates [][]byte, docs []crdt.Record, size b3Sizes, err error) {
	prefix := proto.ReplicaPrefix("")
	updates = make([][]byte, sc.clients)
	docs = make([]crdt.Record, sc.clients)
	for i := range sc.clients {
		replica := prefix + string(proto.ReplicaSeparator) + b3Device()
		clock, err := crdt.NewClock(crdt.ClockConfig{Replica: replica})
		if err != nil {
			return nil, nil, b3Sizes{}, err
		}
		s, err := clock.Now(time.Now().UnixMilli())
		if err != nil {
			return nil, nil, b3Sizes{}, err
		}
		v, err := crdt.EncodeValue(sc.value(i))
		if err != nil {
			return nil, nil, b3Sizes{}, err
		}
		docs[i] = crdt.SetField("doc", sc.key(i), v, s)
		body, n, err := b3Encode(replica, prefix, crdt.Change{Collection: "b3", Record: docs[i]}, s.Wall)
		if err != nil {
			return nil, nil, b3Sizes{}, err
		}
		updates[i] = body
		size.recent, size.hours, size.http = size.recent+n.recent, size.hours+n.hours, size.http+n.http
	}
	return updates, docs, size, nil
}

func b3Once(sc b3Scenario, run, warm int) error {
	if sc.clients < warm+3 {
		return fmt.Errorf("b3: %d clients for %d warm runs", sc.clients, warm)
	}
	prefix := proto.ReplicaPrefix("")
	updates, docs, size, err := b3Updates(sc)
	if err != nil {
		return err
	}
	apply := func(doc *crdt.Record, ups [][]byte) (time.Duration, error) {
		start := time.Now()
		for _, u := range ups {
			p, err := proto.DecodePush(u, prefix)
			if err != nil {
				return 0, err
			}
			if p.Refused != nil {
				return 0, fmt.Errorf("b3: %v", p.Refused)
			}
			for _, c := range p.Changes {
				doc.Merge(c.Record)
			}
		}
		return time.Since(start), nil
	}
	if _, err := apply(&docs[0], updates); err != nil {
		return err
	}
	ref, err := crdt.EncodeRecord(docs[0])
	if err != nil {
		return err
	}
	same := func(i int) error {
		got, err := crdt.EncodeRecord(docs[i])
		if err != nil {
			return err
		}
		if !bytes.Equal(got, ref) {
			return fmt.Errorf("b3 %s: client %d diverges from client 0", sc.id, i)
		}
		return nil
	}
	cold, err := apply(&docs[1], updates)
	if err != nil {
		return err
	}
	if err := same(1); err != nil {
		return err
	}
	warms := make([]float64, warm)
	for w := range warm {
		d, err := apply(&docs[2+w], updates)
		if err != nil {
			return err
		}
		if err := same(2 + w); err != nil {
			return err
		}
		warms[w] = float64(d.Nanoseconds()) / 1e6
	}
	rev := slices.Clone(updates)
	slices.Reverse(rev)
	if _, err := apply(&docs[2+warm], rev); err != nil {
		return err
	}
	if err := same(2 + warm); err != nil {
		return err
	}
	slices.Sort(warms)
	med := warms[len(warms)/2]
	if len(warms)%2 == 0 {
		med = (warms[len(warms)/2-1] + warms[len(warms)/2]) / 2
	}
	rows := b3Rows(warm)
	out := func(metric, unit string, v float64) {
		emit(sample{Scenario: rows.Scenarios[sc.id], Metric: metric, Unit: unit, Better: "lower", Impl: b3Impl, Ours: true, Run: run, Value: v})
	}
	out(rows.Cold, "ms", float64(cold.Nanoseconds())/1e6)
	out(rows.Warm, "ms", med)
	out(rows.Bytes, "bytes", float64(size.recent))
	out(rows.BytesHours, "bytes", float64(size.hours))
	out(rows.BytesHTTP, "bytes", float64(size.http))
	return nil
}

// b3Device is a device part as the JS client makes one (newReplicaId in
// jsclient/src/hlc.js): 22 characters of [A-Za-z0-9_-].
func b3Device() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, 22)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[b[i]&63]
	}
	return string(b)
}
