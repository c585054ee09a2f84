package main

import (
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The Go core's B3 update bytes are the JS client's, byte for byte: the
// live push message from a session opened 1 s and 3 h before the writes,
// and the HTTP push body (the figures of node scripts/bench/js/b3-bytes.mjs
// in docs/benchmarks.md, "Update bytes since the client pushes over its
// live session"; both encoders follow the rule the vectors pin).
func TestB3UpdateBytesAreTheJSClients(t *testing.T) {
	want := map[string]b3Sizes{
		"B3.1": {recent: 52_080, hours: 55_160, http: 89_040},
		"B3.2": {recent: 83_590, hours: 86_670, http: 120_550},
		"B3.3": {recent: 7_829_360, hours: 7_832_440, http: 7_866_320},
		"B3.x": {recent: 36_610, hours: 38_610, http: 60_610},
	}
	for _, sc := range b3Scenarios() {
		_, _, got, err := b3Updates(sc)
		if err != nil {
			t.Fatal(err)
		}
		if got != want[sc.id] {
			t.Errorf("%s: got %+v, want %+v", sc.id, got, want[sc.id])
		}
	}
}

// stdoutOf returns what f writes to os.Stdout.
func stdoutOf(t *testing.T, f func() error) []byte {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(r)
		out <- b
	}()
	stdout := os.Stdout
	os.Stdout = w
	err = f()
	os.Stdout = stdout
	w.Close()
	b := <-out
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// `convergo-bench b3 -session-age` prints b3SessionAge as the JS rows read
// it (scripts/bench/js/b3-impls.mjs sessionAge: {"recent": ms, "hours": ms}).
func TestB3SessionAgePrinted(t *testing.T) {
	var got map[string]int64
	if err := json.Unmarshal(stdoutOf(t, func() error { return runB3([]string{"-session-age"}) }), &got); err != nil {
		t.Fatal(err)
	}
	if want := map[string]int64{"recent": b3SessionAge.Recent, "hours": b3SessionAge.Hours}; !maps.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// `convergo-bench b3 -rows -warm N` prints b3Rows(N) as the JS drivers read
// it (scripts/bench/js/b3-impls.mjs rowNames): the warm row names N, and
// every scenario has its title.
func TestB3RowsPrinted(t *testing.T) {
	var got map[string]any
	if err := json.Unmarshal(stdoutOf(t, func() error { return runB3([]string{"-rows", "-warm", "3"}) }), &got); err != nil {
		t.Fatal(err)
	}
	rows := b3Rows(3)
	want := map[string]any{"warmRuns": 3.0, "cold": rows.Cold, "warm": rows.Warm, "bytes": rows.Bytes, "bytesHours": rows.BytesHours, "bytesHTTP": rows.BytesHTTP, "scenarios": map[string]any{}}
	for _, sc := range b3Scenarios() {
		want["scenarios"].(map[string]any)[sc.id] = sc.title
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if !strings.Contains(rows.Warm, "median of 3 runs") || rows.Warm == b3Rows(5).Warm {
		t.Fatalf("warm row %q does not name its 3 warm runs", rows.Warm)
	}
}

// A B3 run emits exactly the rows b3Rows names, under the scenario's title:
// the names the JS drivers read are those of the Go core's samples.
func TestB3OnceEmitsItsRows(t *testing.T) {
	sc := b3Scenarios()[0]
	out := stdoutOf(t, func() error { return b3Once(sc, 0, 1) })
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var s sample
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if s.Scenario != b3Rows(1).Scenarios[sc.id] {
			t.Errorf("scenario %q, want %q", s.Scenario, b3Rows(1).Scenarios[sc.id])
		}
		got = append(got, s.Metric)
	}
	if want := b3Rows(1).metrics(); !slices.Equal(got, want) {
		t.Fatalf("metrics emitted %q, want %q", got, want)
	}
}

// No JS driver spells a B3 row itself (it reads them, rowNames): a copy
// could drift from b3Rows and make rows of its own.
func TestB3RowsNotCopiedToJS(t *testing.T) {
	files, err := filepath.Glob("../../scripts/bench/js/*.mjs")
	if err != nil || len(files) == 0 {
		t.Fatalf("no JS drivers: %v", err)
	}
	rows := b3Rows(5)
	names := append(rows.metrics(), strings.SplitN(b3Warm, "%d", 2)[0])
	for _, title := range rows.Scenarios {
		names = append(names, title)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			if strings.Contains(string(b), name) {
				t.Errorf("%s spells the B3 row %q: read it from rowNames", f, name)
			}
		}
	}
}

// The report refuses a figure of a B3 scenario whose metric b3Rows does not
// name (a row renamed on one side would stand apart, without the other
// side's implementations), and takes those it names, with any count of
// warm runs.
func TestReportRefusesUnnamedB3Rows(t *testing.T) {
	rows := b3Rows(5)
	title := rows.Scenarios["B3.1"]
	line := func(metric, impl string) string {
		b, err := json.Marshal(sample{Scenario: title, Metric: metric, Unit: "bytes", Better: "lower", Impl: impl, Value: 1})
		if err != nil {
			t.Fatal(err)
		}
		return string(b) + "\n"
	}
	load := func(t *testing.T, lines ...string) ([]figure, error) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "b3.jsonl"), []byte(strings.Join(lines, "")), 0o644); err != nil {
			t.Fatal(err)
		}
		figs, err := loadFigures(dir)
		if err != nil {
			t.Fatal(err)
		}
		return figs, checkB3Rows(figs)
	}
	t.Run("named", func(t *testing.T) {
		var lines []string
		for _, m := range append(rows.metrics(), b3Rows(3).Warm) {
			lines = append(lines, line(m, "go"), line(m, "js"))
		}
		figs, err := load(t, lines...)
		if err != nil {
			t.Fatal(err)
		}
		if len(figs) != 6 {
			t.Fatalf("%d figures, want 6", len(figs))
		}
		for _, f := range figs {
			if len(f.stats) != 2 {
				t.Errorf("%s: %d implementations, want 2", f.metric, len(f.stats))
			}
		}
	})
	t.Run("renamed", func(t *testing.T) {
		renamed := strings.Replace(rows.BytesHours, "3 h", "3 hours", 1)
		_, err := load(t, line(rows.BytesHours, "go"), line(renamed, "js"))
		if err == nil || !strings.Contains(err.Error(), renamed) {
			t.Fatalf("got %v, want an error naming %q", err, renamed)
		}
	})
	t.Run("other scenarios", func(t *testing.T) {
		b, _ := json.Marshal(sample{Scenario: "fan-out", Metric: "anything", Impl: "go", Value: 1})
		if _, err := load(t, string(b)+"\n"); err != nil {
			t.Fatal(err)
		}
	})
}
