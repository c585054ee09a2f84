package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{5}, 5},
		{[]float64{1, 2, 9}, 2},
		{[]float64{1, 2, 4, 9}, 3},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestRatio(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ours, other float64
		better      string
		want        string
	}{
		{"faster time", 10, 30, "lower", "3.00× better"},
		{"slower time", 30, 10, "lower", "3.00× worse"},
		{"higher throughput", 200, 100, "higher", "2.00× better"},
		{"lower throughput", 100, 400, "higher", "4.00× worse"},
		{"zero", 0, 1, "lower", "–"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ratio(stat{median: tc.ours, better: tc.better}, stat{median: tc.other, better: tc.better})
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFmtNum(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 0.1234: "0.123", 3.14159: "3.14", 42.42: "42.4", 999: "999", 1234567: "1,234,567"} {
		if got := fmtNum(in); got != want {
			t.Errorf("fmtNum(%v) = %q, want %q", in, got, want)
		}
	}
}

// TestReport aggregates sample files into the summary: medians and spreads
// per implementation, the best peer per figure, log lines ignored.
func TestReport(t *testing.T) {
	in := t.TempDir()
	out := t.TempDir()
	samples := `not json: a driver's log line
{"scenario":"S","metric":"apply","unit":"ms","better":"lower","impl":"ours","ours":true,"run":0,"value":10}
{"scenario":"S","metric":"apply","unit":"ms","better":"lower","impl":"ours","ours":true,"run":1,"value":30}
{"scenario":"S","metric":"apply","unit":"ms","better":"lower","impl":"ours","ours":true,"run":2,"value":20}
{"scenario":"S","metric":"apply","unit":"ms","better":"lower","impl":"slow peer","run":0,"value":100}
{"scenario":"S","metric":"apply","unit":"ms","better":"lower","impl":"fast peer","run":0,"value":40}
`
	if err := os.WriteFile(filepath.Join(in, "a.jsonl"), []byte(samples), 0o644); err != nil {
		t.Fatal(err)
	}
	figs, err := loadFigures(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) != 1 || len(figs[0].stats) != 3 {
		t.Fatalf("got %d figures, want 1 with 3 implementations: %+v", len(figs), figs)
	}
	s := figs[0].stats[0]
	if s.median != 20 || s.min != 10 || s.max != 30 || s.n != 3 {
		t.Errorf("ours: got median %v min %v max %v n %d, want 20 10 30 3", s.median, s.min, s.max, s.n)
	}
	var b strings.Builder
	writeSummary(&b, figs)
	if want := "| S | apply | ours: 20.0 ms (10.0–30.0, 3) | fast peer: 40.0 ms | 2.00× better |"; !strings.Contains(b.String(), want) {
		t.Errorf("summary:\n%s\nlacks the row\n%s", b.String(), want)
	}
	if err := runReport([]string{"-in", in, "-out", out}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"benchmarks.md", "benchmarks.svg"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("report did not write %s: %v", name, err)
		}
	}
}
