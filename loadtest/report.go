package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"time"
)

// Result is what one scraper (Weir, or a peer) did with its fleet.
type Result struct {
	Scrapes          int64 `json:"scrapes"`
	OfferedSamples   int64 `json:"offered_samples"`
	DeliveredSamples int64 `json:"delivered_samples"`
	LostSamples      int64 `json:"lost_samples"`
	DuplicateSamples int64 `json:"duplicate_samples"`
	// OutOfOrderSamples arrived after a newer sample of their series: a
	// Prometheus backend would reject them.
	OutOfOrderSamples int64 `json:"out_of_order_samples"`
	StaleMarkers      int64 `json:"stale_markers"`
	// FailedScrapes are scrapes the scraper itself reported as failed
	// (up=0) while the fleet served, and ServedToFailedScrapes the samples
	// the fleet served to them: not offered, since the scraper gave up.
	FailedScrapes         int64 `json:"failed_scrapes"`
	ServedToFailedScrapes int64 `json:"served_to_failed_scrapes"`
	// Series is the number of distinct series the backend received.
	Series int `json:"series"`
	// DeliveryMeasured is false when no sink ran (--mode collector):
	// rates and CPU are then per offered sample.
	DeliveryMeasured bool     `json:"delivery_measured"`
	SamplesPerSecond float64  `json:"samples_per_second"`
	LatencyP50       *float64 `json:"latency_p50_seconds"`
	LatencyP99       *float64 `json:"latency_p99_seconds"`
	// The same for the samples stamped after the warm-up; null when none.
	SteadyLatencyP50 *float64 `json:"latency_p50_after_warmup_seconds"`
	SteadyLatencyP99 *float64 `json:"latency_p99_after_warmup_seconds"`
	// Per process, and "total": CPU (utime+stime) over the whole run.
	CPUSeconds           map[string]float64 `json:"cpu_seconds"`
	CPUSecondsPerMillion map[string]float64 `json:"cpu_seconds_per_million_samples"`
	// Per process (VmHWM), and "total", the sum of the peaks: an upper bound.
	PeakRSSBytes map[string]int64 `json:"peak_rss_bytes"`
	// Per process, the resident set at the end of the run split into
	// anonymous memory (heap, stacks) and pages of files (the binary's,
	// chiefly, which every process of one binary shares).
	RSSAnonBytes map[string]int64 `json:"rss_anon_bytes"`
	RSSFileBytes map[string]int64 `json:"rss_file_bytes"`
	Starts       map[string]int   `json:"process_starts"`
}

// PeerResult is a peer's result and how Weir compares with it.
type PeerResult struct {
	Result
	// Weir's figure divided by the peer's: below 1, Weir uses less.
	CPUPerSampleRatio float64 `json:"weir_to_peer_cpu_per_sample"`
	PeakRSSRatio      float64 `json:"weir_to_peer_peak_rss"`
	ThroughputRatio   float64 `json:"weir_to_peer_samples_per_second"`
}

// Report is the outcome of a run.
type Report struct {
	Scenario        string  `json:"scenario"`
	Mode            string  `json:"mode"`
	SinkStream      string  `json:"sink_stream"` // route, or enriched: no router ran
	Nodes           int     `json:"nodes"`
	IntervalSeconds float64 `json:"interval_seconds"`
	DurationSeconds float64 `json:"duration_seconds"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	// SamplesPerNodeScrape is what one scrape of every endpoint of a node offers.
	SamplesPerNodeScrape int `json:"samples_per_node_scrape"`
	Result
	// JetStreamBytesPerSample is the bytes every Weir stream holds at the
	// end, divided by the samples offered.
	JetStreamBytesPerSample float64                `json:"jetstream_bytes_per_sample"`
	JetStreamStreamBytes    map[string]int64       `json:"jetstream_stream_bytes"`
	Peers                   map[string]*PeerResult `json:"peers"`
	// HarnessCPUSeconds is the load test's own CPU (fleets and receivers),
	// which competes with the processes measured on the same machine.
	HarnessCPUSeconds float64  `json:"harness_cpu_seconds"`
	Notes             []string `json:"notes,omitempty"`
}

// measure reads a pipeline's counts and its processes' usage; elapsed is
// the time from the start to the last delivery.
func measure(p *pipeline, elapsed time.Duration) Result {
	f, r := p.fleet.Stats(), p.receiver.Stats()
	res := Result{
		Scrapes:              f.Scrapes,
		OfferedSamples:       f.Offered,
		DeliveryMeasured:     !p.sinkless,
		CPUSeconds:           map[string]float64{},
		CPUSecondsPerMillion: map[string]float64{},
		PeakRSSBytes:         map[string]int64{},
		RSSAnonBytes:         map[string]int64{},
		RSSFileBytes:         map[string]int64{},
		Starts:               map[string]int{},
	}
	basis := f.Offered
	if !p.sinkless {
		res.OfferedSamples = offered(f, r)
		res.ServedToFailedScrapes = f.Offered - res.OfferedSamples
		res.DeliveredSamples = r.Offered()
		res.LostSamples = max(0, res.OfferedSamples-r.Offered())
		res.DuplicateSamples = r.Duplicates
		res.OutOfOrderSamples = r.OutOfOrder
		res.StaleMarkers = r.Stale
		res.Series = r.Series
		res.FailedScrapes = r.FailedScrapes
		res.LatencyP50 = finite(p.receiver.Latency(0.5))
		res.LatencyP99 = finite(p.receiver.Latency(0.99))
		res.SteadyLatencyP50 = finite(p.receiver.SteadyLatency(0.5))
		res.SteadyLatencyP99 = finite(p.receiver.SteadyLatency(0.99))
		basis = res.DeliveredSamples
	}
	if elapsed > 0 {
		res.SamplesPerSecond = float64(basis) / elapsed.Seconds()
	}
	var total float64
	var rss int64
	for _, pr := range p.procs {
		cpu, peak := pr.Usage()
		res.CPUSeconds[pr.Name] = cpu.Seconds()
		res.PeakRSSBytes[pr.Name] = peak
		res.RSSAnonBytes[pr.Name], res.RSSFileBytes[pr.Name] = pr.RSS()
		res.Starts[pr.Name] = pr.Starts()
		total += cpu.Seconds()
		rss += peak
	}
	res.CPUSeconds["total"] = total
	res.PeakRSSBytes["total"] = rss
	if basis > 0 {
		for k, v := range res.CPUSeconds {
			res.CPUSecondsPerMillion[k] = v / float64(basis) * 1e6
		}
	}
	return res
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func (r *Report) compare() {
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	for _, p := range r.Peers {
		p.CPUPerSampleRatio = ratio(r.CPUSecondsPerMillion["total"], p.CPUSecondsPerMillion["total"])
		p.PeakRSSRatio = ratio(float64(r.PeakRSSBytes["total"]), float64(p.PeakRSSBytes["total"]))
		p.ThroughputRatio = ratio(r.SamplesPerSecond, p.SamplesPerSecond)
	}
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteText writes the report for a person: Weir, then each peer beside it.
func (r *Report) WriteText(w io.Writer) {
	mode := r.Mode
	if r.SinkStream == SinkStreamEnriched {
		mode += " (the sink reads WEIR_ENRICHED, no router)"
	}
	fmt.Fprintf(w, "scenario %s, mode %s, %d nodes every %gs for %.0fs, warm-up %gs\n", r.Scenario, mode, r.Nodes, r.IntervalSeconds, r.DurationSeconds, r.WarmupSeconds)
	writeResult(w, "weir", r.Result)
	if len(r.JetStreamStreamBytes) > 0 {
		fmt.Fprintf(w, "  jetstream       %.2f bytes/sample (", r.JetStreamBytesPerSample)
		for i, k := range slices.Sorted(maps.Keys(r.JetStreamStreamBytes)) {
			if i > 0 {
				fmt.Fprint(w, ", ")
			}
			fmt.Fprintf(w, "%s %s", k, mib(r.JetStreamStreamBytes[k]))
		}
		fmt.Fprintln(w, ")")
	}
	for _, name := range slices.Sorted(maps.Keys(r.Peers)) {
		p := r.Peers[name]
		writeResult(w, name, p.Result)
		fmt.Fprintf(w, "  weir / %-8s cpu per sample ×%.2f, peak rss ×%.2f, samples/s ×%.2f\n", name, p.CPUPerSampleRatio, p.PeakRSSRatio, p.ThroughputRatio)
	}
	fmt.Fprintf(w, "load test itself: cpu %.2fs (fleets and receivers)\n", r.HarnessCPUSeconds)
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func writeResult(w io.Writer, name string, r Result) {
	fmt.Fprintf(w, "%s:\n", name)
	if r.DeliveryMeasured {
		fmt.Fprintf(w, "  samples         offered %d, delivered %d, lost %d, duplicates %d (%d scrapes, %d series)\n",
			r.OfferedSamples, r.DeliveredSamples, r.LostSamples, r.DuplicateSamples, r.Scrapes, r.Series)
		if r.OutOfOrderSamples > 0 {
			fmt.Fprintf(w, "  out of order    %d samples came after a newer one of their series (Prometheus would reject them)\n", r.OutOfOrderSamples)
		}
		if r.FailedScrapes > 0 {
			fmt.Fprintf(w, "  failed scrapes  %d reported up=0 by the scraper while the fleet served (%d samples served to them are not offered)\n", r.FailedScrapes, r.ServedToFailedScrapes)
		}
		fmt.Fprintf(w, "  throughput      %.0f samples/s delivered\n", r.SamplesPerSecond)
		fmt.Fprintf(w, "  latency         p50 %s, p99 %s (scrape to backend); after warm-up p50 %s, p99 %s\n",
			ptrSeconds(r.LatencyP50), ptrSeconds(r.LatencyP99), ptrSeconds(r.SteadyLatencyP50), ptrSeconds(r.SteadyLatencyP99))
	} else {
		fmt.Fprintf(w, "  samples         offered %d (%d scrapes); no sink, delivery not measured\n", r.OfferedSamples, r.Scrapes)
		fmt.Fprintf(w, "  throughput      %.0f samples/s scraped\n", r.SamplesPerSecond)
	}
	procs := slices.Sorted(maps.Keys(r.CPUSeconds))
	procs = append(slices.DeleteFunc(procs, func(k string) bool { return k == "total" }), "total")
	for _, k := range procs {
		fmt.Fprintf(w, "  %-15s cpu %.2fs = %.3f s per million samples, peak rss %s", k, r.CPUSeconds[k], r.CPUSecondsPerMillion[k], mib(r.PeakRSSBytes[k]))
		if anon, ok := r.RSSAnonBytes[k]; ok {
			fmt.Fprintf(w, " (at the end: anon %s, file %s)", mib(anon), mib(r.RSSFileBytes[k]))
		}
		if n := r.Starts[k]; n > 1 {
			fmt.Fprintf(w, ", started %d times", n)
		}
		fmt.Fprintln(w)
	}
}

func ptrSeconds(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("≤%.3gs", *v)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
