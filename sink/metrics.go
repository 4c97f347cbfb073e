package sink

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one sink's series. Several sinks share a registry in one
// process (one per route), so every collector carries "sink" and "route"
// labels and is registered once per registry: a second sink, or the same
// sink built again after a restart, finds the vectors already registered
// and uses them with its own label values. The names follow Prometheus'
// own prometheus_remote_storage_* series where the meaning is the same.
type metrics struct {
	samplesSent        prometheus.Counter
	samplesFailed      *prometheus.CounterVec // by reason: rejected for good
	samplesDropped     *prometheus.CounterVec // by reason: never sent
	samplesRetried     prometheus.Counter
	requests           *prometheus.CounterVec // by code: 2xx, 4xx, 5xx, error
	requestDuration    prometheus.Observer
	messagesAcked      prometheus.Counter
	messagesDead       *prometheus.CounterVec // by reason: decode, rejected
	highestSent        *highestGauge
	pending            prometheus.Gauge
	lagMessages        prometheus.Gauge
	lagSeconds         prometheus.Gauge
	shards             prometheus.Gauge
	shardsDesired      prometheus.Gauge
	protocolFallback   prometheus.Counter
	labelCacheBytes    prometheus.Gauge
	labelCacheUncached prometheus.Counter
}

// metricDef is one vector: its kind, name, help and labels beyond sink
// and route.
type metricDef struct {
	kind   string // counter, gauge, histogram
	name   string
	help   string
	extra  []string
	bucket []float64
}

var metricDefs = []metricDef{
	{kind: "counter", name: "weir_sink_samples_sent_total", help: "Samples the backend accepted with a 2xx."},
	{kind: "counter", name: "weir_sink_samples_failed_total", help: "Samples the backend rejected for good (reason http_4xx; partial_write when a 2.0 backend wrote fewer than sent). Their messages are dead-lettered.", extra: []string{"reason"}},
	{kind: "counter", name: "weir_sink_samples_dropped_total", help: "Samples never sent, by reason (encode: the message decoded but could not be encoded again; it is dead-lettered).", extra: []string{"reason"}},
	{kind: "counter", name: "weir_sink_samples_retried_total", help: "Samples sent again after a network error, timeout, 5xx or 429."},
	{kind: "counter", name: "weir_sink_requests_total", help: "Remote-write requests by HTTP status class, or error when no answer came.", extra: []string{"code"}},
	{kind: "histogram", name: "weir_sink_request_duration_seconds", help: "Duration of one remote-write request, whatever its outcome.", bucket: prometheus.ExponentialBuckets(0.005, 2, 14)},
	{kind: "counter", name: "weir_sink_messages_acked_total", help: "Messages acknowledged after the backend accepted all their samples, or after they were dead-lettered."},
	{kind: "counter", name: "weir_sink_messages_dead_total", help: "Messages published to weir.dead.sink, by reason (decode: unreadable; rejected: the backend answered 4xx).", extra: []string{"reason"}},
	{kind: "gauge", name: "weir_sink_highest_sent_timestamp_seconds", help: "Newest sample timestamp the backend accepted, Unix seconds."},
	{kind: "gauge", name: "weir_sink_pending_messages", help: "Messages received from the stream and not yet acknowledged."},
	{kind: "gauge", name: "weir_sink_lag_messages", help: "Messages of the route's stream the sink has not acknowledged yet (consumer num_pending + num_ack_pending)."},
	{kind: "gauge", name: "weir_sink_lag_seconds", help: "Age in the stream of the oldest message the sink holds and has not acknowledged; 0 when it holds none."},
	{kind: "gauge", name: "weir_sink_shards", help: "Shards sending now."},
	{kind: "gauge", name: "weir_sink_shards_desired", help: "Shards the sink would use given how busy the shards are, between min_shards and max_shards."},
	{kind: "gauge", name: "weir_sink_label_cache_bytes", help: "Bytes the sink keeps of its targets' labels, at most label_cache_size."},
	{kind: "counter", name: "weir_sink_label_cache_uncached_payloads_total", help: "Payloads whose target did not fit in label_cache_size: their labels were read and marshalled whole, as for a target's first payload."},
	{kind: "counter", name: "weir_sink_protocol_fallbacks_total", help: "Times a backend answered a remote write 2.0 request with 415, or with 2xx but no written-samples headers, and the sink fell back to 1.0."},
}

func newMetrics(reg prometheus.Registerer, sink, route string) (*metrics, error) {
	own := prometheus.Labels{"sink": sink, "route": route}
	vecs := map[string]any{}
	var errs []error
	for _, d := range metricDefs {
		labels := append([]string{"sink", "route"}, d.extra...)
		var c prometheus.Collector
		switch d.kind {
		case "counter":
			c = prometheus.NewCounterVec(prometheus.CounterOpts{Name: d.name, Help: d.help}, labels)
		case "gauge":
			c = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: d.name, Help: d.help}, labels)
		case "histogram":
			c = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: d.name, Help: d.help, Buckets: d.bucket}, labels)
		}
		vecs[d.name] = registerOrReuse(reg, c, &errs)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	counter := func(name string) *prometheus.CounterVec {
		return vecs[name].(*prometheus.CounterVec).MustCurryWith(own)
	}
	gauge := func(name string) prometheus.Gauge { return vecs[name].(*prometheus.GaugeVec).With(own) }
	return &metrics{
		samplesSent:        counter("weir_sink_samples_sent_total").WithLabelValues(),
		samplesFailed:      counter("weir_sink_samples_failed_total"),
		samplesDropped:     counter("weir_sink_samples_dropped_total"),
		samplesRetried:     counter("weir_sink_samples_retried_total").WithLabelValues(),
		requests:           counter("weir_sink_requests_total"),
		requestDuration:    vecs["weir_sink_request_duration_seconds"].(*prometheus.HistogramVec).With(own),
		messagesAcked:      counter("weir_sink_messages_acked_total").WithLabelValues(),
		messagesDead:       counter("weir_sink_messages_dead_total"),
		highestSent:        &highestGauge{g: gauge("weir_sink_highest_sent_timestamp_seconds"), millis: math.MinInt64},
		pending:            gauge("weir_sink_pending_messages"),
		lagMessages:        gauge("weir_sink_lag_messages"),
		lagSeconds:         gauge("weir_sink_lag_seconds"),
		shards:             gauge("weir_sink_shards"),
		shardsDesired:      gauge("weir_sink_shards_desired"),
		protocolFallback:   counter("weir_sink_protocol_fallbacks_total").WithLabelValues(),
		labelCacheBytes:    gauge("weir_sink_label_cache_bytes"),
		labelCacheUncached: counter("weir_sink_label_cache_uncached_payloads_total").WithLabelValues(),
	}, nil
}

// registerOrReuse registers c, or returns the identical collector a sink
// registered before. A nil registry registers nothing.
func registerOrReuse(reg prometheus.Registerer, c prometheus.Collector, errs *[]error) prometheus.Collector {
	if reg == nil {
		return c
	}
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) && fmt.Sprintf("%T", are.ExistingCollector) == fmt.Sprintf("%T", c) {
		return are.ExistingCollector
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
