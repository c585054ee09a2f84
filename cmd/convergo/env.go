package main

import (
	"flag"
	"io"
	"log/slog"
	"sort"
	"strings"
)

// otherEnv are the CONVERGO_* variables that no command's flag reads: the
// test suites', the benchmarks' and the scripts'. They are known, so that
// serve does not warn of them in a test run (warnUnknownEnv).
// docs/operations.md lists them ("Flags and environment"), and
// TestEnvNamesKnown fails on a CONVERGO_* name in the repository that is
// neither a flag's variable nor listed here.
var otherEnv = []string{
	// The Go test suites (the README's test command, scripts/test.sh).
	"CONVERGO_REDIS_ADDR",
	"CONVERGO_REDIS_CLUSTER_ADDRS",
	"CONVERGO_REDIS_SERVER_BIN",
	"CONVERGO_DYNAMODB_ENDPOINT",
	"CONVERGO_REQUIRE_SERVICES",
	"CONVERGO_SPACE_BENCH",
	"CONVERGO_E2E_LOG",
	"CONVERGO_E2E_CRASHES",
	"CONVERGO_BOLT_CRASH_PATH",
	"CONVERGO_BOLT_CRASH_SEED",
	"CONVERGO_BOLT_CRASH_WALL",
	// The browser client's tests and the end-to-end scripts.
	"CONVERGO_CHROMIUM",
	"CONVERGO_BIN",
	"CONVERGO_E2E_TIMEOUT",
	// The services script (scripts/services.sh) and the benchmarks.
	"CONVERGO_SVC_DIR",
	"CONVERGO_SVC_SESSION",
	"CONVERGO_REDIS_PORT",
	"CONVERGO_REDIS_CLUSTER_PORTS",
	"CONVERGO_DYNAMODB_PORT",
	"CONVERGO_DDB_PRIVATE_PID",
	"CONVERGO_B3_ROWS",
	"CONVERGO_B3_SESSION_AGE",
	"CONVERGO_BENCH_CPUPROFILE",
}

// commandFlags are the flag sets of every command, for the variables
// their flags read (envName).
func commandFlags() []*flag.FlagSet {
	sets := []*flag.FlagSet{}
	fs, _ := serveFlags(io.Discard)
	sets = append(sets, fs)
	fs, _ = tokenFlags(io.Discard)
	sets = append(sets, fs)
	for _, cmd := range []string{"mark-restored", "identity", "reshard"} {
		fs, _ = storeFlags(cmd, io.Discard)
		sets = append(sets, fs)
	}
	fs, _, _ = repairFlags(io.Discard)
	sets = append(sets, fs)
	for _, name := range []string{"deny", "allow"} {
		fs, _ = denyFlags(name, io.Discard)
		sets = append(sets, fs)
	}
	return sets
}

// knownEnv is the set of CONVERGO_* variables something reads: every
// command's flags' and otherEnv.
func knownEnv() map[string]bool {
	known := map[string]bool{}
	for _, fs := range commandFlags() {
		fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	}
	for _, n := range otherEnv {
		known[n] = true
	}
	return known
}

// warnUnknownEnv logs at WARN, once per name, each CONVERGO_* variable of
// environ that no command reads (knownEnv), with the closest known name
// if one is near: a misspelt variable would otherwise be ignored without
// a word, and the flag it meant left at its default. A variable of another
// command's flag (CONVERGO_TTL) is no mistake and is not warned of.
func warnUnknownEnv(log *slog.Logger, environ []string) {
	known := knownEnv()
	names := make([]string, 0, len(known))
	for n := range known {
		names = append(names, n)
	}
	sort.Strings(names) // the same closest name on every run
	seen := map[string]bool{}
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "CONVERGO_") || known[name] || seen[name] {
			continue
		}
		seen[name] = true
		args := []any{"name", name}
		if c := closest(name, names); c != "" {
			args = append(args, "closest", c)
		}
		log.Warn("environment variable not read by any convergo command: misspelt?", args...)
	}
}

// closest returns the name of names nearest to s, if one is near: at
// most 2 edits (an insertion, deletion, substitution or swap of two
// neighbours each) apart and no more than a third of its length, past
// the common CONVERGO_ prefix; else "".
func closest(s string, names []string) string {
	best, bestD := "", -1
	tail := strings.TrimPrefix(s, "CONVERGO_")
	for _, n := range names {
		nt := strings.TrimPrefix(n, "CONVERGO_")
		d := editDistance(tail, nt)
		if d > 2 || 3*d > len(nt) {
			continue
		}
		if bestD < 0 || d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance of a and b: the
// edits (insert, delete, substitute, swap two neighbours) that make one
// the other, on bytes (the names are ASCII).
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
