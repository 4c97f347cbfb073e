package router

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the router's series. Labels are bounded: route and reason,
// never node or series.
type metrics struct {
	received, acked, dead prometheus.Counter
	duration              prometheus.Observer
}

// routeMetrics are one route's children of the per-route vectors, looked
// up once at New instead of once per message.
type routeMetrics struct {
	messagesIn, published, empty, publishFailures prometheus.Counter
	seriesIn, seriesKept                          prometheus.Counter
	samplesIn, samplesKept                        prometheus.Counter
	seriesDropped, samplesDropped                 [numDropReasons]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, routes []*route) (*metrics, error) {
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	perRoute := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, append([]string{"route"}, labels...))
	}
	m := &metrics{
		received: counter("weir_router_messages_received_total", "Messages read from WEIR_ENRICHED, redeliveries included."),
		acked:    counter("weir_router_messages_acked_total", "Messages acknowledged after every route's output was stored."),
		dead:     counter("weir_router_messages_dead_total", "Messages that could not be decoded and went to weir.dead.router."),
	}
	duration := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "weir_router_message_duration_seconds",
		Help:    "From receiving a message to acknowledging it: decoding, routing and publishing to every route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5ms to ~4s
	})
	m.duration = duration
	v := struct {
		messagesIn, published, dropped, failures *prometheus.CounterVec
		seriesIn, seriesKept, seriesDropped      *prometheus.CounterVec
		samplesIn, samplesKept, samplesDropped   *prometheus.CounterVec
	}{
		messagesIn: perRoute("weir_router_messages_in_total", "Messages the route was applied to."),
		published:  perRoute("weir_router_messages_published_total", "Messages published to the route's stream and acknowledged by JetStream."),
		dropped:    perRoute("weir_router_messages_dropped_total", "Messages that published nothing for the route (reason empty: every series was dropped).", "reason"),
		failures:   perRoute("weir_router_publish_failures_total", "Publishes to the route's stream that failed or timed out and were retried."),
		seriesIn:   perRoute("weir_router_series_in_total", "Series the route was applied to."),
		seriesKept: perRoute("weir_router_series_kept_total", "Series the route kept and published."),
		seriesDropped: perRoute("weir_router_series_dropped_total",
			"Series the route dropped, by reason: match (no selector matched), expr (the predicate was false), expr_error (it failed), relabel.", "reason"),
		samplesIn:      perRoute("weir_router_samples_in_total", "Samples the route was applied to."),
		samplesKept:    perRoute("weir_router_samples_kept_total", "Samples the route kept and published."),
		samplesDropped: perRoute("weir_router_samples_dropped_total", "Samples of the series the route dropped, by reason.", "reason"),
	}
	if reg != nil {
		var errs []error
		for _, c := range []prometheus.Collector{m.received, m.acked, m.dead, duration,
			v.messagesIn, v.published, v.dropped, v.failures, v.seriesIn, v.seriesKept, v.seriesDropped,
			v.samplesIn, v.samplesKept, v.samplesDropped} {
			errs = append(errs, reg.Register(c))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	for _, r := range routes {
		rm := &routeMetrics{
			messagesIn:      v.messagesIn.WithLabelValues(r.name),
			published:       v.published.WithLabelValues(r.name),
			empty:           v.dropped.WithLabelValues(r.name, "empty"),
			publishFailures: v.failures.WithLabelValues(r.name),
			seriesIn:        v.seriesIn.WithLabelValues(r.name),
			seriesKept:      v.seriesKept.WithLabelValues(r.name),
			samplesIn:       v.samplesIn.WithLabelValues(r.name),
			samplesKept:     v.samplesKept.WithLabelValues(r.name),
		}
		for i, reason := range dropReasons {
			rm.seriesDropped[i] = v.seriesDropped.WithLabelValues(r.name, reason)
			rm.samplesDropped[i] = v.samplesDropped.WithLabelValues(r.name, reason)
		}
		r.metrics = rm
	}
	return m, nil
}

// add records what one message did to one route.
func (rm *routeMetrics) add(c *routeCounts) {
	rm.messagesIn.Inc()
	rm.seriesIn.Add(float64(c.seriesIn))
	rm.samplesIn.Add(float64(c.samplesIn))
	rm.seriesKept.Add(float64(c.seriesKept))
	rm.samplesKept.Add(float64(c.samplesKept))
	for i := range c.seriesDropped {
		if c.seriesDropped[i] > 0 {
			rm.seriesDropped[i].Add(float64(c.seriesDropped[i]))
			rm.samplesDropped[i].Add(float64(c.samplesDropped[i]))
		}
	}
	if c.seriesKept == 0 {
		rm.empty.Inc()
	}
}
