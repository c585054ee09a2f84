package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// stat summarises the runs of one implementation on one figure.
type stat struct {
	impl         string
	ours, limit  bool
	median       float64
	min, max     float64
	n            int
	unit, better string
	note         string
}

// figure is one metric of one scenario and every implementation measured.
type figure struct {
	scenario, metric string
	stats            []stat
}

func (f figure) better() string { return f.stats[0].better }

// best returns the best of the stats that pass keep, or false.
func (f figure) best(keep func(stat) bool) (stat, bool) {
	var out stat
	found := false
	for _, s := range f.stats {
		if !keep(s) {
			continue
		}
		if !found || beatsStat(s, out) {
			out, found = s, true
		}
	}
	return out, found
}

func beatsStat(a, b stat) bool {
	if a.better == "higher" {
		return a.median > b.median
	}
	return a.median < b.median
}

func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	in := fs.String("in", "results/raw", "directory of *.jsonl sample files")
	out := fs.String("out", "results", "directory for benchmarks.md and the chart")
	cmd := fs.String("command", "make bench", "the command that produced the samples, for the report")
	wall := fs.Duration("wall", 0, "wall time of the whole run, for the report")
	fs.Parse(args)

	figs, err := loadFigures(*in)
	if err != nil {
		return err
	}
	if len(figs) == 0 {
		return fmt.Errorf("no samples in %s", *in)
	}
	if err := checkB3Rows(figs); err != nil {
		return err
	}
	var table strings.Builder
	writeSummary(&table, figs)
	fmt.Print(table.String())

	var md strings.Builder
	fmt.Fprintf(&md, "# Benchmark results\n\n`%s`, %s", *cmd, time.Now().UTC().Format("2006-01-02 15:04 MST"))
	if *wall > 0 {
		fmt.Fprintf(&md, ", wall time %s", wall.Round(time.Second))
	}
	host, _ := os.Hostname()
	fmt.Fprintf(&md, ", on %s (%d CPUs shared with the load generators).\n\n", host, numCPU())
	md.WriteString("Each figure: median (min–max, runs). Ratio is ours against the best peer or the store's own ceiling; \"better\"/\"worse\" say which way it goes.\n\n")
	md.WriteString(table.String())
	md.WriteString("\n## Every implementation\n\n")
	writeDetail(&md, figs)
	md.WriteString("\n![chart](benchmarks.png)\n")
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "benchmarks.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	svg := renderSVG(figs)
	if err := os.WriteFile(filepath.Join(*out, "benchmarks.svg"), []byte(svg), 0o644); err != nil {
		return err
	}
	return nil
}

func loadFigures(dir string) ([]figure, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	type key struct{ scenario, metric, impl string }
	values := map[key][]float64{}
	meta := map[key]sample{}
	var order []key
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if !strings.HasPrefix(line, "{") {
				continue // a driver's log line
			}
			var s sample
			if err := json.Unmarshal([]byte(line), &s); err != nil || s.Scenario == "" {
				continue
			}
			k := key{s.Scenario, s.Metric, s.Impl}
			if _, ok := meta[k]; !ok {
				order = append(order, k)
				meta[k] = s
			}
			values[k] = append(values[k], s.Value)
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	}
	var figs []figure
	index := map[[2]string]int{}
	for _, k := range order {
		m, vs := meta[k], values[k]
		slices.Sort(vs)
		st := stat{impl: k.impl, ours: m.Ours, limit: m.Limit, median: median(vs), min: vs[0], max: vs[len(vs)-1],
			n: len(vs), unit: m.Unit, better: m.Better, note: m.Note}
		fk := [2]string{k.scenario, k.metric}
		i, ok := index[fk]
		if !ok {
			i = len(figs)
			index[fk] = i
			figs = append(figs, figure{scenario: k.scenario, metric: k.metric})
		}
		figs[i].stats = append(figs[i].stats, st)
	}
	return figs, nil
}

// checkB3Rows returns an error when a figure of a B3 scenario is not one
// of b3Rows' metrics: a row named otherwise on one side (the Go core's or
// the JS drivers') would stand apart from the others' figures of that
// metric, each without the implementations measured in the other.
func checkB3Rows(figs []figure) error {
	titles := map[string]bool{}
	for _, t := range b3Rows(0).Scenarios {
		titles[t] = true
	}
	for _, f := range figs {
		if !titles[f.scenario] {
			continue
		}
		// The warm row names its count of warm runs.
		var warm int
		fmt.Sscanf(f.metric, b3Warm, &warm)
		if !slices.Contains(b3Rows(warm).metrics(), f.metric) {
			return fmt.Errorf("report: %s: %q is no B3 row (convergo-bench b3 -rows names them): samples of %s", f.scenario, f.metric, f.implNames())
		}
	}
	return nil
}

// implNames lists the implementations of f's samples.
func (f figure) implNames() string {
	names := make([]string, len(f.stats))
	for i, s := range f.stats {
		names[i] = s.impl
	}
	return strings.Join(names, ", ")
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

func fmtNum(v float64) string {
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100_000:
		return groupThousands(fmt.Sprintf("%.0f", v))
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

func groupThousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func fmtStat(s stat) string {
	if s.n == 1 {
		return fmt.Sprintf("%s %s", fmtNum(s.median), s.unit)
	}
	return fmt.Sprintf("%s %s (%s–%s, %d)", fmtNum(s.median), s.unit, fmtNum(s.min), fmtNum(s.max), s.n)
}

// ratio says how ours compares with other: "3.1× better" or "1.4× worse".
func ratio(ours, other stat) string {
	if ours.median == 0 || other.median == 0 {
		return "–"
	}
	r := ours.median / other.median
	if ours.better == "lower" {
		r = 1 / r
	}
	if r >= 1 {
		return fmt.Sprintf("%.2f× better", r)
	}
	return fmt.Sprintf("%.2f× worse", 1/r)
}

func writeSummary(w io.Writer, figs []figure) {
	fmt.Fprintln(w, "| scenario | metric | ours | peer / limit | ratio |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	for _, f := range figs {
		other, hasOther := f.best(func(s stat) bool { return !s.ours })
		// Ours against the best peer; against each ceiling when a figure
		// has only ceilings (a store measured against several, e.g. Redis
		// against EVALSHA of a script of the same shape and against SET).
		var against []stat
		for _, s := range f.stats {
			if !s.ours {
				if !s.limit {
					against = nil
					break
				}
				against = append(against, s)
			}
		}
		if len(against) < 2 && hasOther {
			against = []stat{other}
		}
		for _, s := range f.stats {
			if !s.ours {
				continue
			}
			if len(against) == 0 {
				fmt.Fprintf(w, "| %s | %s | %s: %s | – | – |\n", f.scenario, f.metric, s.impl, fmtStat(s))
			}
			for _, o := range against {
				label := o.impl
				if o.limit {
					label += " (limit)"
				}
				fmt.Fprintf(w, "| %s | %s | %s: %s | %s | %s |\n", f.scenario, f.metric, s.impl, fmtStat(s), label+": "+fmtStat(o), ratio(s, o))
			}
		}
		if _, ok := f.best(func(s stat) bool { return s.ours }); !ok {
			fmt.Fprintf(w, "| %s | %s | – (not measured) | %s: %s | – |\n", f.scenario, f.metric, other.impl, fmtStat(other))
		}
	}
}

func writeDetail(w io.Writer, figs []figure) {
	fmt.Fprintln(w, "| scenario | metric | implementation | median (min–max, runs) | note |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	for _, f := range figs {
		for _, s := range f.stats {
			name := s.impl
			if s.ours {
				name = "**" + name + "**"
			}
			if s.limit {
				name += " (limit)"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", f.scenario, f.metric, name, fmtStat(s), s.note)
		}
	}
}

// renderSVG draws one panel per figure: a horizontal bar per
// implementation, scaled to the panel's largest median, ours in blue,
// peers in grey and limits in orange. scripts/bench.sh turns it into PNG.
func renderSVG(figs []figure) string {
	const (
		width   = 1100
		labelW  = 360
		barMax  = 560
		rowH    = 18
		titleH  = 26
		panelGp = 14
	)
	height := 20
	for _, f := range figs {
		height += titleH + rowH*len(f.stats) + panelGp
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	y := 20
	for _, f := range figs {
		dir := "lower is better"
		if f.better() == "higher" {
			dir = "higher is better"
		}
		fmt.Fprintf(&b, `<text x="8" y="%d" font-weight="bold">%s — %s (%s)</text>`+"\n", y+14, html.EscapeString(f.scenario), html.EscapeString(f.metric), dir)
		y += titleH
		top := 0.0
		for _, s := range f.stats {
			top = math.Max(top, s.max)
		}
		for _, s := range f.stats {
			color := "#9e9e9e"
			switch {
			case s.ours:
				color = "#1565c0"
			case s.limit:
				color = "#ef6c00"
			}
			w := 1.0
			if top > 0 {
				w = math.Max(1, s.median/top*barMax)
			}
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-6, y+13, html.EscapeString(s.impl))
			fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", labelW, y+2, w, rowH-5, color)
			if s.n > 1 && top > 0 { // spread whisker
				fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="black"/>`+"\n",
					float64(labelW)+s.min/top*barMax, float64(labelW)+s.max/top*barMax, y+8, y+8)
			}
			end := w
			if top > 0 {
				end = math.Max(w, s.max/top*barMax)
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s %s</text>`+"\n", float64(labelW)+end+6, y+13, fmtNum(s.median), html.EscapeString(s.unit))
			y += rowH
		}
		y += panelGp
	}
	b.WriteString("</svg>\n")
	return b.String()
}
