package transport

import (
	"fmt"
	"math"

	"github.com/convergo/convergo/engine"
	"github.com/convergo/convergo/stores"
	"github.com/convergo/convergo/transport/proto"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors, registered on the
// registry of one Server (never the global one).
type metrics struct {
	requests     *prometheus.CounterVec   // route, code
	duration     *prometheus.HistogramVec // route
	pushChanges  *prometheus.CounterVec   // status
	pullRecords  prometheus.Counter
	liveConns    prometheus.Gauge
	liveMsgs     *prometheus.CounterVec // type (received)
	fanout       prometheus.Counter
	fanoutRecs   prometheus.Counter
	resyncs      prometheus.Counter
	conns        prometheus.Gauge
	connsRefused *prometheus.CounterVec // reason: addr, total
	bodyBytes    prometheus.Gauge
	bodyRefused  prometheus.Counter
	// answerBytes and answerRefused are the answers in flight's
	// (Limits.MaxAnswerBytesInFlight), as bodyBytes and bodyRefused are
	// the bodies'.
	answerBytes   prometheus.Gauge
	answerRefused prometheus.Counter
	resets        *prometheus.CounterVec // reason

	// directWrites counts the changes messages a broadcast group wrote
	// itself (liveConn.writeDirect), by outcome; directWhole and
	// directPartial are its two children.
	directWrites               *prometheus.CounterVec
	directWhole, directPartial prometheus.Counter
}

// engineCounts is what the metrics read of the server's engine at each
// scrape: the engine keeps counts and knows nothing of Prometheus.
type engineCounts interface {
	CollectTotals() engine.CollectTotals
	MigrationDrops() uint64
	StoreWentBack() uint64
	SharedPulls() uint64
	ClockHealth() error
	LastClockReading() (engine.ClockReading, bool)
	ParkedCount() int
	CaptureCounts() stores.CaptureCounts
}

// newMetrics registers the server's collectors on reg; the counts of the
// engine eng returns are read at each scrape.
func newMetrics(reg prometheus.Registerer, eng func() engineCounts) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "convergo", Name: "requests_total",
			Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "convergo", Name: "request_duration_seconds",
			Help:    "Duration of HTTP requests by route (for /v1/live, of the upgrade).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route"}),
		pushChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "convergo", Name: "push_changes_total",
			Help: "Pushed changes by outcome: applied, noop or refused.",
		}, []string{"status"}),
		pullRecords: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "convergo", Name: "pull_records_total",
			Help: "Records sent in answers to pulls.",
		}),
		liveConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "convergo", Name: "live_connections",
			Help: "Open WebSocket connections.",
		}),
		liveMsgs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "convergo", Name: "live_messages_received_total",
			Help: "WebSocket messages received by type.",
		}, []string{"type"}),
		fanout: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "convergo", Name: "fanout_messages_total",
			Help: "Changes messages sent to live subscribers.",
		}),
		fanoutRecs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "convergo", Name: "fanout_records_total",
			Help: "Records sent to live subscribers.",
		}),
		directWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "convergo", Name: "fanout_direct_writes_total",
			Help: "Changes messages written at once by the broadcast, without a writer: whole, or partial (part or none of it went, and a writer wrote the rest unless the session ended). Part of fanout_messages_total.",
		}, []string{"outcome"}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "convergo", Name: "live_resyncs_total",
			Help: "Subscriptions stopped with resync (slow consumers, store errors).",
		}),
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "convergo", Name: "conns",
			Help: "Open TCP connections of the server's listeners (Server.Listener).",
		}),
		connsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "convergo", Name: "conns_refused_total",
			Help: "TCP connections closed on accept: over the per-address (addr) or the total (total) limit.",
		}, []string{"reason"}),
		bodyBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "convergo", Name: "body_bytes_in_flight",
			Help: "Bytes of request bodies, and of the changes decoded from pushes and restores, reserved by requests in flight.",
		}),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "convergo", Name: "resets_total",
			Help: "Readers told to pull again from the start (pull answers and live reset messages), by reason.",
		}, []string{"reason"}),
		bodyRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "convergo", Name: "body_budget_refused_total",
			Help: "Requests answered 503 because the bodies in flight left no room for theirs.",
		}),
		answerBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "convergo", Name: "answer_bytes_in_flight",
			Help: "Bytes of pull answers reserved before their pages are read, and held while they are written.",
		}),
		answerRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "convergo", Name: "answer_budget_refused_total",
			Help: "Pulls answered 503 because the answers in flight left no room for theirs.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.pushChanges, m.pullRecords, m.liveConns, m.liveMsgs, m.fanout, m.fanoutRecs, m.directWrites, m.resyncs,
		m.conns, m.connsRefused, m.bodyBytes, m.bodyRefused, m.answerBytes, m.answerRefused, m.resets, newCollectMetrics(func() engine.CollectTotals { return eng().CollectTotals() }),
		newCaptureMetrics(func() stores.CaptureCounts { return eng().CaptureCounts() }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "convergo", Name: "migration_dropped_fields_total",
			Help: "Fields of stored records that a schema migration could not translate (a split or merge of a value that is not a string) and left out of what it served.",
		}, func() float64 { return float64(eng().MigrationDrops()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "convergo", Name: "store_went_back_total",
			Help: "Times this server found that the store went back in time unnoticed (a cursor it made past a head, or a position given to another record) and started a new epoch of every collection.",
		}, func() float64 { return float64(eng().StoreWentBack()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "convergo", Name: "store_reads_shared_total",
			Help: "Store reads of a change log that pulls and live pages did not make because they shared an identical read begun after them (subscribers of one collection under many scopes, woken by one write).",
		}, func() float64 { return float64(eng().SharedPulls()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "convergo", Name: "capture_parked",
			Help: "Writes other programs made in the store that capture holds back (parks) now, because the changes of their collection fail (a reshard's fence): retried while capture goes on for the other collections. /readyz and the store's warn log name them.",
		}, func() float64 { return float64(eng().ParkedCount()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "convergo", Name: "clock_off",
			Help: "1 while this server's clock is off its store's by more than half the max drift, and it refuses hellos and pushes; 0 otherwise.",
		}, func() float64 {
			if eng().ClockHealth() != nil {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "convergo", Name: "clock_skew_seconds",
			Help: "How far this server's clock was ahead of its store's (negative: behind) at the last check that read the store's clock; NaN before one, or on a store without a clock (bbolt, memory).",
		}, func() float64 {
			r, ok := eng().LastClockReading()
			if !ok {
				return math.NaN()
			}
			return r.Skew.Seconds()
		})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	m.directWhole = m.directWrites.WithLabelValues("whole")
	m.directPartial = m.directWrites.WithLabelValues("partial")
	m.connsRefused.WithLabelValues("addr")
	m.connsRefused.WithLabelValues("total")
	for _, s := range proto.Statuses {
		m.pushChanges.WithLabelValues(s.String()) // export zeros from the start
	}
	for _, r := range engine.ResetReasons {
		m.resets.WithLabelValues(r.String())
	}
	return m, nil
}

// collectMetrics exports what the engine's tombstone collection job
// reclaimed (engine.CollectTotals), read at each scrape: the job runs in
// the engine, which keeps counts and knows nothing of Prometheus. No
// collection label: collections can be many.
type collectMetrics struct {
	totals                          func() engine.CollectTotals
	records, deletes, fields, bytes *prometheus.Desc
	runs                            *prometheus.Desc // result: purged, skipped, failed
	held                            *prometheus.Desc
}

func newCollectMetrics(totals func() engine.CollectTotals) *collectMetrics {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("convergo", "", name), help, labels, nil)
	}
	return &collectMetrics{
		totals:  totals,
		records: desc("tombstones_collected_records_total", "Records the tombstone collection removed whole, with their log entries."),
		deletes: desc("tombstones_collected_deletes_total", "Delete stamps the tombstone collection cleared."),
		fields:  desc("tombstones_collected_fields_total", "Unset fields the tombstone collection removed."),
		bytes:   desc("tombstone_bytes_reclaimed_total", "Bytes the tombstone collection reclaimed (what the collections' usage went down by)."),
		runs: desc("horizon_runs_total",
			"Tombstone collection runs by outcome: per collection, purged or skipped (another run published a later horizon and purges, or the collection's epoch changed before the purge began); failed, runs that ended in an error.",
			"result"),
		held: desc("horizon_wall_held_total",
			"Horizons published with the write horizon held where it was, for the collection's maximum offline period after a loss of history or the store's first horizon of the collection: tombstones stamped since are not collected meanwhile."),
	}
}

func (c *collectMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.records, c.deletes, c.fields, c.bytes, c.runs, c.held} {
		ch <- d
	}
}

func (c *collectMetrics) Collect(ch chan<- prometheus.Metric) {
	t := c.totals()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.records, t.Records)
	counter(c.deletes, t.Deletes)
	counter(c.fields, t.Fields)
	counter(c.bytes, t.Bytes)
	counter(c.runs, t.Purged, "purged")
	counter(c.runs, t.Skipped, "skipped")
	counter(c.runs, t.Failed, "failed")
	counter(c.held, t.Held)
}

// captureMetrics exports what the store's capture of other programs'
// writes did (stores.CaptureCounts), read at each scrape. No collection or
// key label: collections can be many, and the store logs each write it
// skips with its key.
type captureMetrics struct {
	counts                  func() stores.CaptureCounts
	applied, rejected, over *prometheus.Desc
	parkedBytes             *prometheus.Desc
}

func newCaptureMetrics(counts func() stores.CaptureCounts) *captureMetrics {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName("convergo", "", name), help, labels, nil)
	}
	return &captureMetrics{
		counts:  counts,
		applied: desc("capture_applied_total", "Changes captured from writes other programs made in the store that the engine applied (or found applied)."),
		rejected: desc("capture_rejected_total",
			"Writes other programs made in the store that capture skipped for good, each logged with its key, by reason: refused (the engine refused the change: a limit, the clock drift bound) or unmappable (no valid change: a key of the wrong type, an invalid id, field name or value).",
			"reason"),
		over: desc("capture_overflowed_total",
			"Writes of parked collections that did not fit the bound on parked bytes: left in the store's stream and read again once their collection's parked writes are applied (DynamoDB; 0 on Redis)."),
		parkedBytes: desc("capture_parked_bytes", "Bytes of the writes capture parks now (DynamoDB; 0 on Redis, which parks keys and reads them again)."),
	}
}

func (c *captureMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.applied, c.rejected, c.over, c.parkedBytes} {
		ch <- d
	}
}

func (c *captureMetrics) Collect(ch chan<- prometheus.Metric) {
	n := c.counts()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.applied, n.Applied)
	counter(c.rejected, n.Refused, "refused")
	counter(c.rejected, n.Unmappable, "unmappable")
	counter(c.over, n.Overflowed)
	ch <- prometheus.MustNewConstMetric(c.parkedBytes, prometheus.GaugeValue, float64(n.ParkedBytes))
}
