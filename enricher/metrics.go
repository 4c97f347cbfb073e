package enricher

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the enricher's series. Labels are bounded: cluster names come
// from the configuration, never from subjects.
type metrics struct {
	messages       *prometheus.CounterVec // by result
	series         prometheus.Counter
	reused         prometheus.Counter
	seriesReused   prometheus.Counter
	podUnknown     prometheus.Counter
	seriesDropped  *prometheus.CounterVec // by reason
	publishRetries prometheus.Counter
	cacheObjects   *prometheus.GaugeVec // by cluster, resource
	cacheSynced    *prometheus.GaugeVec // by cluster
}

// Values of the result label of weir_enricher_messages_total.
const (
	resultEnriched = "enriched" // published to WEIR_ENRICHED
	resultEmpty    = "empty"    // every series dropped: acked, nothing published
	resultDead     = "dead"     // could not be decoded: dead-lettered
)

// Values of the reason label of weir_enricher_series_dropped_total.
const (
	reasonCardinality = "cardinality"
	reasonRelabel     = "relabel"
)

func newMetrics(reg prometheus.Registerer, guardSize func() float64) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		messages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_enricher_messages_total",
			Help: "Messages read from WEIR_RAW and settled, by result (enriched, empty, dead).",
		}, []string{"result"}),
		series: f.NewCounter(prometheus.CounterOpts{
			Name: "weir_enricher_series_enriched_total",
			Help: "Series published with their added labels.",
		}),
		reused: f.NewCounter(prometheus.CounterOpts{
			Name: "weir_enricher_messages_reused_total",
			Help: "Enriched messages whose target sent the same series as before: their output reused its labels, neither joined nor checked by the cardinality guard again.",
		}),
		seriesReused: f.NewCounter(prometheus.CounterOpts{
			Name: "weir_enricher_series_reused_total",
			Help: "Series of targets whose series changed, as pods came and went, that the target sent before: their output was taken from the target's last one, neither joined nor hashed again.",
		}),
		podUnknown: f.NewCounter(prometheus.CounterOpts{
			Name: "weir_enricher_series_pod_unknown_total",
			Help: "Series naming a pod that is not in the metadata cache (yet); they pass with the cluster and node labels only.",
		}),
		seriesDropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_enricher_series_dropped_total",
			Help: "Series not published, by reason: cardinality (over the new series limit of their target) or relabel (a drop rule).",
		}, []string{"reason"}),
		publishRetries: f.NewCounter(prometheus.CounterOpts{
			Name: "weir_enricher_publish_retries_total",
			Help: "Publishes to WEIR_ENRICHED tried again after JetStream did not acknowledge them.",
		}),
		cacheObjects: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_enricher_cache_objects",
			Help: "Objects in the metadata cache, by cluster and resource (nodes, pods, replicasets, jobs).",
		}, []string{"cluster", "resource"}),
		cacheSynced: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "weir_enricher_cache_synced",
			Help: "1 once the first list of every resource of the cluster arrived.",
		}, []string{"cluster"}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weir_enricher_cardinality_series",
		Help: "Series the cardinality guard remembers across all targets.",
	}, guardSize)
	for _, r := range []string{reasonCardinality, reasonRelabel} {
		m.seriesDropped.WithLabelValues(r)
	}
	for _, r := range []string{resultEnriched, resultEmpty, resultDead} {
		m.messages.WithLabelValues(r)
	}
	return m
}
