package loadtest

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/value"
)

// Receiver is a remote-write 1.0 endpoint that counts every sample by
// series and timestamp. It remembers the newest few timestamps of each
// series (recentWindow), so its memory grows with the number of series,
// not with time: a sample whose timestamp is among them is a duplicate;
// any other is unique, and counted out of order too when a newer one of
// its series came first (Prometheus would reject it, VictoriaMetrics not).
type Receiver struct {
	mu      sync.Mutex
	series  map[uint64]recent // series hash → its newest timestamps
	stats   ReceiverStats
	latency latencyHistogram
	// steady is latency for the samples stamped from steadyFrom (Unix ms)
	// on: after the start-up, when every cache is cold and the first
	// scrapes of every target land at once.
	steady     latencyHistogram
	steadyFrom atomic.Int64
	down       atomic.Bool
	stopped    atomic.Int64 // Unix ms the fleet stopped; 0 while it serves
	// scrapeSize returns the samples one scrape of the target an up series
	// names offers, from its instance and its metrics_path or job label.
	scrapeSize func(instance, path, job string) int
	now        func() time.Time
}

// ReceiverStats is what a Receiver has counted so far.
type ReceiverStats struct {
	Requests   int64 // accepted requests
	Rejected   int64 // requests that did not decode
	Samples    int64 // every sample received
	Unique     int64 // samples whose series and timestamp came for the first time
	Duplicates int64 // samples whose series and timestamp came before
	// OutOfOrder counts the unique samples that came after a newer one of
	// their series.
	OutOfOrder int64
	Series     int // distinct series
	// Generated counts the unique samples of series a scraper adds itself
	// (up, scrape_duration_seconds …): no endpoint offered them.
	Generated int64
	// Stale counts staleness markers; they are no samples of the endpoint.
	Stale int64
	// Down counts requests answered 503 during a simulated outage.
	Down int64
	// FailedScrapes counts the scraper's own up=0 samples stamped before
	// the fleet stopped: scrapes it abandoned (a timeout on a busy machine,
	// say), and FailedScrapeSamples what those scrapes would have held.
	// A failed scrape is the scraper's verdict (up=0), not a loss of the
	// pipeline, so a load test takes them out of what was offered.
	FailedScrapeSamples int64
	FailedScrapes       int64
}

// Offered returns the unique samples that an endpoint served: what a
// load test compares with what the fleet offered.
func (s ReceiverStats) Offered() int64 { return s.Unique - s.Generated }

// generatedSeries are the series Prometheus, vmagent and the Weir
// collector add to every scrape.
var generatedSeries = map[string]bool{
	"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true,
	"scrape_samples_post_metric_relabeling": true, "scrape_series_added": true,
	"scrape_timeout_seconds": true, "scrape_samples_limit": true, "scrape_body_size_bytes": true,
	"scrape_response_size_bytes": true, "scrape_labels_limit": true, "scrape_series_limit": true,
	"scrape_series_current": true, "scrape_series_limit_samples_dropped": true,
}

// NewReceiver returns an empty Receiver.
func NewReceiver() *Receiver {
	return &Receiver{series: map[uint64]recent{}, latency: newLatencyHistogram(), steady: newLatencyHistogram(), now: time.Now}
}

// SteadyFrom makes SteadyLatency count the samples stamped from t on.
func (r *Receiver) SteadyFrom(t time.Time) { r.steadyFrom.Store(t.UnixMilli()) }

// FleetStopped tells the receiver that scrapes from t on fail on purpose.
func (r *Receiver) FleetStopped(t time.Time) { r.stopped.Store(t.UnixMilli()) }

// SetDown makes the receiver answer 503 (a backend outage) until it is
// called with false.
func (r *Receiver) SetDown(down bool) { r.down.Store(down) }

// Latency returns the q-quantile (0 < q ≤ 1) of the time from each unique
// sample's timestamp to its arrival, in seconds; NaN before any arrived.
func (r *Receiver) Latency(q float64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.latency.quantile(q)
}

// SteadyLatency is Latency for the samples stamped from the time
// SteadyFrom set on; NaN before any arrived or while it is unset.
func (r *Receiver) SteadyLatency(q float64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.steady.quantile(q)
}

// Forget drops what the receiver remembers of series whose newest sample
// is older than before, so that memory follows the live series and not
// every pod that ever existed. A sample of a forgotten series that arrives
// again later is counted as unique.
func (r *Receiver) Forget(before time.Time) {
	ms := before.UnixMilli()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, w := range r.series {
		if w.newest() < ms {
			delete(r.series, k)
		}
	}
}

// Stats returns the counts so far.
func (r *Receiver) Stats() ReceiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Series = len(r.series)
	return s
}

// ServeHTTP implements http.Handler.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if r.down.Load() {
		r.mu.Lock()
		r.stats.Down++
		r.mu.Unlock()
		http.Error(w, "simulated outage", http.StatusServiceUnavailable)
		return
	}
	bufs := receiveBuffers.Get().(*receiveBuffer)
	defer receiveBuffers.Put(bufs)
	var err error
	bufs.compressed.Reset()
	if _, err = bufs.compressed.ReadFrom(io.LimitReader(req.Body, 64<<20)); err == nil {
		var n int
		if n, err = snappy.DecodedLen(bufs.compressed.Bytes()); err == nil && n <= 256<<20 {
			bufs.raw, err = snappy.Decode(bufs.raw[:cap(bufs.raw)], bufs.compressed.Bytes())
		} else if err == nil {
			err = fmt.Errorf("decoded size %d over 256 MiB", n)
		}
	}
	if err == nil {
		// A first pass checks the whole request, so that a bad one counts nothing.
		err = walkWriteRequest(bufs.raw, &bufs.series, func(*series) {})
	}
	if err != nil {
		r.mu.Lock()
		r.stats.Rejected++
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	arrived := r.now().UnixMilli()
	times := arrival{at: arrived, stopped: r.stopped.Load(), steadyFrom: r.steadyFrom.Load()}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Requests++
	_ = walkWriteRequest(bufs.raw, &bufs.series, func(ts *series) { r.count(ts, times) })
	w.WriteHeader(http.StatusNoContent)
}

// arrival is when a request arrived, and the times of the run it is
// judged by, in Unix ms; 0 for a time that has not come.
type arrival struct{ at, stopped, steadyFrom int64 }

// count accounts for the samples of one series; r.mu is held.
func (r *Receiver) count(ts *series, t arrival) {
	generated, up := generatedSeries[string(ts.name)], string(ts.name) == "up"
	for _, s := range ts.samples {
		if value.IsStaleNaN(s.value) {
			r.stats.Stale++
			continue
		}
		r.stats.Samples++
		w := r.series[ts.hash]
		if w.has(s.ts) {
			r.stats.Duplicates++
			continue
		}
		if w.n > 0 && s.ts < w.newest() {
			r.stats.OutOfOrder++
		}
		w.add(s.ts)
		r.series[ts.hash] = w
		r.stats.Unique++
		if !generated {
			r.latency.observe(t.at - s.ts)
			if t.steadyFrom != 0 && s.ts >= t.steadyFrom {
				r.steady.observe(t.at - s.ts)
			}
			continue
		}
		r.stats.Generated++
		if up && s.value == 0 && (t.stopped == 0 || s.ts < t.stopped) {
			r.stats.FailedScrapes++
			if r.scrapeSize != nil {
				r.stats.FailedScrapeSamples += int64(r.scrapeSize(string(ts.instance), string(ts.path), string(ts.job)))
			}
		}
	}
}

// receiveBuffer is what one request needs, reused across requests.
type receiveBuffer struct {
	compressed bytes.Buffer
	raw        []byte
	series     series
}

var receiveBuffers = sync.Pool{New: func() any { return new(receiveBuffer) }}

// latencyHistogram counts latencies in buckets that grow by a tenth
// from 1 ms to 10 minutes: bounded memory, quantiles within 10%.
type latencyHistogram struct {
	bounds []int64 // upper bound of each bucket, ms; the last one catches the rest
	counts []int64
	total  int64
}

func newLatencyHistogram() latencyHistogram {
	var b []int64
	for v := 1.0; v < 600_000; v *= 1.1 {
		if n := int64(math.Ceil(v)); len(b) == 0 || n > b[len(b)-1] {
			b = append(b, n)
		}
	}
	b = append(b, math.MaxInt64)
	return latencyHistogram{bounds: b, counts: make([]int64, len(b))}
}

func (h *latencyHistogram) observe(ms int64) {
	lo, hi := 0, len(h.bounds)-1
	for lo < hi { // first bound ≥ ms
		mid := (lo + hi) / 2
		if h.bounds[mid] >= ms {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	h.counts[lo]++
	h.total++
}

// quantile returns the upper bound of the bucket holding the q-quantile,
// in seconds: an honest "at most".
func (h *latencyHistogram) quantile(q float64) float64 {
	if h.total == 0 {
		return math.NaN()
	}
	rank := int64(math.Ceil(q * float64(h.total)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			if i == len(h.bounds)-1 {
				return math.Inf(1)
			}
			return float64(h.bounds[i]) / 1000
		}
	}
	return math.Inf(1)
}

// recentWindow is how many timestamps of a series the receiver keeps: a
// replay of a sample older than the last recentWindow of its series is
// taken for a new one. Scrape replays come within a few scrapes.
const recentWindow = 8

// recent is the newest timestamps of one series, unordered.
type recent struct {
	ts [recentWindow]int64
	n  uint8
}

func (w *recent) has(ts int64) bool {
	for _, t := range w.ts[:w.n] {
		if t == ts {
			return true
		}
	}
	return false
}

func (w *recent) newest() int64 {
	n := int64(math.MinInt64)
	for _, t := range w.ts[:w.n] {
		n = max(n, t)
	}
	return n
}

// add keeps ts in place of the oldest once the window is full, unless ts
// is older than all of them.
func (w *recent) add(ts int64) {
	if int(w.n) < recentWindow {
		w.ts[w.n] = ts
		w.n++
		return
	}
	oldest := 0
	for i, t := range w.ts {
		if t < w.ts[oldest] {
			oldest = i
		}
	}
	if ts > w.ts[oldest] {
		w.ts[oldest] = ts
	}
}
