package transport

import (
	"fmt"

	"github.com/convergo/convergo/transport/proto"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus collectors, registered on the
// registry of one Server (never the global one).
type metrics struct {
	requests    *prometheus.CounterVec   // route, code
	duration    *prometheus.HistogramVec // route
	pushChanges *prometheus.CounterVec   // status
	pullRecords prometheus.Counter
	liveConns   prometheus.Gauge
	liveMsgs    *prometheus.CounterVec // type (received)
	fanout      prometheus.Counter
	fanoutRecs  prometheus.Counter
	resyncs     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
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
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "convergo", Name: "live_resyncs_total",
			Help: "Subscriptions stopped with resync (slow consumers, store errors).",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.pushChanges, m.pullRecords, m.liveConns, m.liveMsgs, m.fanout, m.fanoutRecs, m.resyncs} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	for _, s := range proto.Statuses {
		m.pushChanges.WithLabelValues(s.String()) // export zeros from the start
	}
	return m, nil
}
