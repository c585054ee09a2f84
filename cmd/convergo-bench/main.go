// Command convergo-bench runs Convergo's benchmark scenarios and renders
// their report. scripts/bench.sh (make bench) drives it; each scenario
// subcommand prints one JSON sample per line (see sample), and report
// turns every sample file into one table, results/benchmarks.md and a
// chart.
//
// Usage:
//
//	convergo-bench b3 [-runs 4] [-warm 5]        crdt-benchmarks B3 on the Go core, fresh processes
//	convergo-bench apply [flags]                server apply throughput
//	convergo-bench fanout [flags]               WebSocket fan-out latency
//	convergo-bench scoped [flags]               fan-out to scoped subscriptions beside unscoped
//	convergo-bench conns [flags]                server memory per idle connection
//	convergo-bench report -in DIR -out DIR      aggregate samples into the report
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
)

// sample is one measurement of one run, the unit every driver (Go or JS)
// prints and report reads.
type sample struct {
	Scenario string  `json:"scenario"`
	Metric   string  `json:"metric"`
	Unit     string  `json:"unit"`
	Better   string  `json:"better"` // "lower" or "higher"
	Impl     string  `json:"impl"`
	Ours     bool    `json:"ours"`
	Limit    bool    `json:"limit,omitempty"` // a ceiling (the store alone), not a peer
	Run      int     `json:"run"`
	Value    float64 `json:"value"`
	Note     string  `json:"note,omitempty"`
}

func emit(s sample) {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	os.Stdout.Write(append(b, '\n'))
}

var commands = map[string]func(args []string) error{
	"b3":     runB3,
	"apply":  runApply,
	"serve":  runServe,
	"fanout": runFanout,
	"scoped": runScoped,
	"conns":  runConns,
	"report": runReport,
}

func main() {
	if len(os.Args) < 2 || commands[os.Args[1]] == nil {
		names := make([]string, 0, len(commands))
		for n := range commands {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(os.Stderr, "usage: convergo-bench %v [flags]\n", names)
		os.Exit(2)
	}
	// CONVERGO_BENCH_CPUPROFILE=file profiles the whole subcommand (for
	// apply, the in-process server and its load generators together).
	if path := os.Getenv("CONVERGO_BENCH_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer f.Close()
		defer pprof.StopCPUProfile()
	}
	if err := commands[os.Args[1]](os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "convergo-bench %s: %v\n", os.Args[1], err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}
