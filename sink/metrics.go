package sink

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are one sink's series. Several sinks share a registry in one
// process (one per route), so every collector carries a "sink" label and
// is registered once per registry: a second sink, or the same sink built
// again after a restart, finds the vectors already registered and uses
// them with its own label value.
type metrics struct {
	samplesSent     prometheus.Counter
	samplesDropped  *prometheus.CounterVec // by reason
	samplesRetried  prometheus.Counter
	requests        *prometheus.CounterVec // by code: 2xx, 4xx, 5xx, error
	requestDuration prometheus.Observer
	messagesAcked   prometheus.Counter
	messagesDead    prometheus.Counter
	highestSent     *highestGauge
	pending         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, sink string) (*metrics, error) {
	// promauto.With(nil) builds without registering; registerOrReuse does it, so
	// that an AlreadyRegisteredError means "reuse" instead of a panic.
	f := promauto.With(nil)
	sinkOnly := []string{"sink"}
	vecs := struct {
		sent, dropped, retried, requests, acked, dead *prometheus.CounterVec
		duration                                      *prometheus.HistogramVec
		highest, pending                              *prometheus.GaugeVec
	}{
		sent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_sink_samples_sent_total",
			Help: "Samples the backend accepted with a 2xx.",
		}, sinkOnly),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_sink_samples_dropped_total",
			Help: "Samples given up on, by reason (http_4xx: the backend rejected them).",
		}, []string{"sink", "reason"}),
		retried: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_sink_samples_retried_total",
			Help: "Samples sent again after a network error, timeout, 5xx or 429.",
		}, sinkOnly),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_sink_requests_total",
			Help: "Remote-write requests by HTTP status class, or error when no answer came.",
		}, []string{"sink", "code"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weir_sink_request_duration_seconds",
			Help:    "Duration of one remote-write request, whatever its outcome.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14), // 5ms to ~41s
		}, sinkOnly),
		acked: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_sink_messages_acked_total",
			Help: "Messages acknowledged after the backend accepted or rejected all their samples.",
		}, sinkOnly),
		dead: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_sink_messages_dead_total",
			Help: "Messages that could not be decoded and went to the dead-letter subject.",
		}, sinkOnly),
		highest: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_sink_highest_sent_timestamp_seconds",
			Help: "Newest sample timestamp the backend accepted, Unix seconds.",
		}, sinkOnly),
		pending: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_sink_pending_messages",
			Help: "Messages received and not yet acknowledged.",
		}, sinkOnly),
	}
	var errs []error
	vecs.sent = registerOrReuse(reg, vecs.sent, &errs)
	vecs.dropped = registerOrReuse(reg, vecs.dropped, &errs)
	vecs.retried = registerOrReuse(reg, vecs.retried, &errs)
	vecs.requests = registerOrReuse(reg, vecs.requests, &errs)
	vecs.duration = registerOrReuse(reg, vecs.duration, &errs)
	vecs.acked = registerOrReuse(reg, vecs.acked, &errs)
	vecs.dead = registerOrReuse(reg, vecs.dead, &errs)
	vecs.highest = registerOrReuse(reg, vecs.highest, &errs)
	vecs.pending = registerOrReuse(reg, vecs.pending, &errs)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	own := prometheus.Labels{"sink": sink}
	return &metrics{
		samplesSent:     vecs.sent.WithLabelValues(sink),
		samplesDropped:  vecs.dropped.MustCurryWith(own),
		samplesRetried:  vecs.retried.WithLabelValues(sink),
		requests:        vecs.requests.MustCurryWith(own),
		requestDuration: vecs.duration.WithLabelValues(sink),
		messagesAcked:   vecs.acked.WithLabelValues(sink),
		messagesDead:    vecs.dead.WithLabelValues(sink),
		highestSent:     &highestGauge{g: vecs.highest.WithLabelValues(sink), millis: math.MinInt64},
		pending:         vecs.pending.WithLabelValues(sink),
	}, nil
}

// registerOrReuse registers c, or returns the identical collector a sink
// registered before. A nil registry registers nothing.
func registerOrReuse[C prometheus.Collector](reg prometheus.Registerer, c C, errs *[]error) C {
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	*errs = append(*errs, fmt.Errorf("register sink metrics: %w", err))
	return c
}

// highestGauge only moves forward: shards finish requests in any order.
type highestGauge struct {
	mu     sync.Mutex
	g      prometheus.Gauge
	millis int64
}

func (h *highestGauge) observe(millis int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if millis > h.millis {
		h.millis = millis
		h.g.Set(float64(millis) / 1000)
	}
}
