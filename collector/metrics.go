package collector

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/weirmetrics/weir/internal/buffer"
	"github.com/weirmetrics/weir/proto"
)

// Why a scrape failed: the reason label of
// weir_collector_scrape_failures_total. The set is closed so that the
// label stays bounded.
const (
	reasonToken        = "token"           // the bearer token file could not be read
	reasonTLS          = "tls"             // CA file unusable or certificate not trusted
	reasonHTTP         = "http"            // connection, protocol or decompression error
	reasonTimeout      = "timeout"         // no full answer within the scrape timeout
	reasonStatus       = "status"          // the target answered with a non-2xx status
	reasonBodyTooLarge = "body_size_limit" // the body exceeded body_size_limit
	reasonParse        = "parse"           // the body is not a valid exposition
	reasonEncode       = "encode"          // a series does not fit in one message

	reasonSampleLimit           = "sample_limit"             // more samples than sample_limit
	reasonLabelLimit            = "label_limit"              // a series with more labels than label_limit
	reasonLabelNameLengthLimit  = "label_name_length_limit"  // a label name longer than the limit
	reasonLabelValueLengthLimit = "label_value_length_limit" // a label value longer than the limit
)

var failureReasons = []string{
	reasonToken, reasonTLS, reasonHTTP, reasonTimeout, reasonStatus,
	reasonBodyTooLarge, reasonParse, reasonEncode,
	reasonSampleLimit, reasonLabelLimit, reasonLabelNameLengthLimit, reasonLabelValueLengthLimit,
}

// metrics are the collector's own metrics. Labels are bounded: source and
// reason, never node, URL or series.
type metrics struct {
	scrapes          *prometheus.CounterVec
	scrapeFailures   *prometheus.CounterVec
	scrapeDuration   *prometheus.HistogramVec
	samplesScraped   *prometheus.CounterVec
	samplesPublished *prometheus.CounterVec
	samplesDuplicate *prometheus.CounterVec
	publishFailures  *prometheus.CounterVec
	droppedScrapes   *prometheus.CounterVec
	droppedSamples   *prometheus.CounterVec
	// buffer is read by the buffer gauges; nil until Run opened it.
	buffer atomic.Pointer[buffer.Buffer]
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		scrapes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_collector_scrapes_total",
			Help: "Scrapes attempted, failed or not.",
		}, []string{"source"}),
		scrapeFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_collector_scrape_failures_total",
			Help: "Scrapes that failed and were published as up=0 only, by reason.",
		}, []string{"source", "reason"}),
		scrapeDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "weir_collector_scrape_duration_seconds",
			Help:    "Time to fetch and parse one scrape.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12), // 5ms to about 10s, the default timeout
		}, []string{"source"}),
		samplesScraped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_collector_samples_scraped_total",
			Help: "Samples read from successful scrapes, without the up, scrape_duration_seconds and scrape_samples_scraped series.",
		}, []string{"source"}),
		samplesPublished: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_collector_samples_published_total",
			Help: "Samples in messages JetStream acknowledged, the up, scrape_duration_seconds and scrape_samples_scraped series included.",
		}, []string{"source"}),
		samplesDuplicate: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_collector_samples_duplicate_total",
			Help: "Samples dropped because a sample of their series, after metric_relabel_configs, came earlier in the same scrape; Prometheus counts them in prometheus_target_scrapes_sample_duplicate_timestamp_total.",
		}, []string{"source"}),
		publishFailures: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_collector_publish_failures_total",
			Help: "Messages that JetStream did not acknowledge within publish_timeout, or refused.",
		}, []string{"source"}),
		droppedScrapes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_collector_buffer_dropped_scrapes_total",
			Help: "Scrapes dropped, oldest first, because the buffer (memory, and spool if configured) was full while NATS was away.",
		}, []string{"source"}),
		droppedSamples: f.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_collector_buffer_dropped_samples_total",
			Help: "Samples of the scrapes in weir_collector_buffer_dropped_scrapes_total.",
		}, []string{"source"}),
	}
	stat := func(name, help, where string, v func(buffer.Stats) int64) {
		f.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"where": where}}, func() float64 {
			if b := m.buffer.Load(); b != nil {
				return float64(v(b.Stats()))
			}
			return 0
		})
	}
	const bytesHelp = "Bytes of the scrapes waiting to be published, in memory or in the spool."
	const scrapesHelp = "Scrapes waiting to be published, in memory or in the spool."
	stat("weir_collector_buffer_bytes", bytesHelp, "memory", func(s buffer.Stats) int64 { return s.MemoryBytes })
	stat("weir_collector_buffer_bytes", bytesHelp, "spool", func(s buffer.Stats) int64 { return s.SpoolBytes })
	stat("weir_collector_buffer_scrapes", scrapesHelp, "memory", func(s buffer.Stats) int64 { return s.MemoryScrapes })
	stat("weir_collector_buffer_scrapes", scrapesHelp, "spool", func(s buffer.Stats) int64 { return s.SpoolScrapes })
	return m
}

// bufferDropped counts a scrape the buffer dropped.
func (m *metrics) bufferDropped(subject string, samples int) {
	src := "unknown"
	if s, err := proto.ParseSubject(subject); err == nil {
		src = string(s.Source)
	}
	m.droppedScrapes.WithLabelValues(src).Inc()
	m.droppedSamples.WithLabelValues(src).Add(float64(samples))
}

// targetMetrics are the children of one target's source, resolved once so
// that a scrape does not look them up.
type targetMetrics struct {
	scrapes          prometheus.Counter
	scrapeDuration   prometheus.Observer
	samplesScraped   prometheus.Counter
	samplesPublished prometheus.Counter
	samplesDuplicate prometheus.Counter
	publishFailures  prometheus.Counter
	failures         map[string]prometheus.Counter // by reason
}

func (m *metrics) forSource(s proto.Source) targetMetrics {
	src := string(s)
	tm := targetMetrics{
		scrapes:          m.scrapes.WithLabelValues(src),
		scrapeDuration:   m.scrapeDuration.WithLabelValues(src),
		samplesScraped:   m.samplesScraped.WithLabelValues(src),
		samplesPublished: m.samplesPublished.WithLabelValues(src),
		samplesDuplicate: m.samplesDuplicate.WithLabelValues(src),
		publishFailures:  m.publishFailures.WithLabelValues(src),
		failures:         make(map[string]prometheus.Counter, len(failureReasons)),
	}
	m.droppedScrapes.WithLabelValues(src)
	m.droppedSamples.WithLabelValues(src)
	// Every reason exists from the start at 0, so that rate() and alerts
	// see the first failure as an increase.
	for _, r := range failureReasons {
		tm.failures[r] = m.scrapeFailures.WithLabelValues(src, r)
	}
	return tm
}
