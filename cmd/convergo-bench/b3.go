package main

import (
	"flag"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/convergo/convergo/crdt"
)

// runB3 runs crdt-benchmarks' B3 map scenarios (dmonad/crdt-benchmarks,
// js-lib/b3.js) on the Go core: 20·⌊√6000⌋ = 1540 clients, each with its
// own clock, make one change to one record; each change is encoded as the
// record delta a client sends; the timed part decodes every update and
// merges it into client 1's record (crdt.DecodeRecord + Record.Merge). The
// JS driver (scripts/bench/js/b3.mjs) runs the same scenarios for the JS
// client and the peers.
func runB3(args []string) error {
	fs := flag.NewFlagSet("b3", flag.ExitOnError)
	runs := fs.Int("runs", 7, "measured runs per figure (after one warm-up)")
	fs.Parse(args)

	clients := int(math.Floor(math.Sqrt(6000))) * 20
	type scenario struct {
		title string
		key   func(i int) string
		value func(i int) any
	}
	scenarios := []scenario{
		{"B3.1 1540 clients set one key to a number", func(int) string { return "v" }, func(i int) any { return i }},
		{"B3.2 1540 clients set one key to an object", func(int) string { return "v" },
			func(i int) any { return map[string]any{"name": strconv.Itoa(i), "address": "here"} }},
		{"B3.3 1540 clients set one key to a long string", func(int) string { return "v" },
			func(i int) any { return strings.Repeat(strconv.Itoa(i), clients) }},
		{"B3.x 1540 clients set distinct keys", func(i int) string { return "k" + strconv.Itoa(i) }, func(i int) any { return i }},
	}
	const wall = 1_764_000_000_000
	for _, sc := range scenarios {
		updates := make([][]byte, clients)
		var own crdt.Record
		bytes := 0
		for i := range clients {
			clock, err := crdt.NewClock(crdt.ClockConfig{Replica: "c" + strconv.Itoa(i)})
			if err != nil {
				return err
			}
			s, err := clock.Now(wall) // one millisecond for all: the replica id decides
			if err != nil {
				return err
			}
			v, err := crdt.EncodeValue(sc.value(i))
			if err != nil {
				return err
			}
			r := crdt.SetField("doc", sc.key(i), v, s)
			if updates[i], err = crdt.EncodeRecord(r); err != nil {
				return err
			}
			bytes += len(updates[i])
			if i == 1 {
				own = r
			}
		}
		apply := func(ups [][]byte) (crdt.Record, error) {
			doc := own.Clone()
			for _, u := range ups {
				r, err := crdt.DecodeRecord(u)
				if err != nil {
					return crdt.Record{}, err
				}
				doc.Merge(r)
			}
			return doc, nil
		}
		// Convergence check: both orders give the same bytes.
		rev := make([][]byte, len(updates))
		for i, u := range updates {
			rev[len(updates)-1-i] = u
		}
		a, err := apply(updates)
		if err != nil {
			return err
		}
		b, err := apply(rev)
		if err != nil {
			return err
		}
		ab, _ := crdt.EncodeRecord(a)
		bb, _ := crdt.EncodeRecord(b)
		if string(ab) != string(bb) {
			return fmt.Errorf("%s: replicas diverge", sc.title)
		}
		for run := -1; run < *runs; run++ {
			start := time.Now()
			if _, err := apply(updates); err != nil {
				return err
			}
			d := time.Since(start)
			if run >= 0 {
				emit(sample{Scenario: sc.title, Metric: "apply all updates", Unit: "ms", Better: "lower",
					Impl: "Convergo Go core", Ours: true, Run: run, Value: float64(d.Nanoseconds()) / 1e6})
			}
		}
		emit(sample{Scenario: sc.title, Metric: "update bytes", Unit: "bytes", Better: "lower",
			Impl: "Convergo Go core", Ours: true, Value: float64(bytes)})
	}
	return nil
}
