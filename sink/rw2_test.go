package sink

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/promtest"
	"github.com/weirmetrics/weir/proto"
)

// decodeV2 reads a remote write 2.0 request as a receiver must: it checks
// the symbol table (empty first symbol, every reference inside it, pairs
// of name and value, names sorted and unique, no empty name) and returns
// the series with their labels resolved.
func decodeV2(raw []byte) ([]prompb.TimeSeries, error) {
	var req writev2.Request
	if err := req.Unmarshal(raw); err != nil {
		return nil, fmt.Errorf("protobuf: %w", err)
	}
	if len(req.Symbols) == 0 || req.Symbols[0] != "" {
		return nil, errors.New("symbols[0] must be the empty string")
	}
	seen := map[string]bool{}
	for i, sym := range req.Symbols {
		if seen[sym] {
			return nil, fmt.Errorf("symbol %d %q repeated: the table should hold each string once", i, sym)
		}
		seen[sym] = true
	}
	resolve := func(refs []uint32) ([]prompb.Label, error) {
		if len(refs)%2 != 0 {
			return nil, fmt.Errorf("odd number of label refs: %d", len(refs))
		}
		var b labels.ScratchBuilder
		ls, err := writev2.TimeSeries{LabelsRefs: refs}.ToLabels(&b, req.Symbols)
		if err != nil {
			return nil, err
		}
		out := make([]prompb.Label, 0, ls.Len())
		prev := ""
		var bad error
		ls.Range(func(l labels.Label) {
			if l.Name == "" || (prev != "" && l.Name <= prev) {
				bad = fmt.Errorf("label names not sorted and unique at %q", l.Name)
			}
			prev = l.Name
			out = append(out, prompb.Label{Name: l.Name, Value: l.Value})
		})
		return out, bad
	}
	series := make([]prompb.TimeSeries, 0, len(req.Timeseries))
	for i, ts := range req.Timeseries {
		for _, ref := range ts.LabelsRefs {
			if int(ref) >= len(req.Symbols) {
				return nil, fmt.Errorf("series %d: label ref %d outside %d symbols", i, ref, len(req.Symbols))
			}
		}
		ls, err := resolve(ts.LabelsRefs)
		if err != nil {
			return nil, fmt.Errorf("series %d: %w", i, err)
		}
		out := prompb.TimeSeries{Labels: ls}
		for _, smp := range ts.Samples {
			out.Samples = append(out.Samples, prompb.Sample{Value: smp.Value, Timestamp: smp.Timestamp})
		}
		for _, h := range ts.Histograms {
			out.Histograms = append(out.Histograms, prompb.Histogram{Timestamp: h.Timestamp})
		}
		series = append(series, out)
	}
	return series, nil
}

func encodeV2(t testing.TB, r request) []byte {
	t.Helper()
	body, err := newEncoder().encode(r, protoV2)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func decodeRequestV2(t testing.TB, body []byte) []prompb.TimeSeries {
	t.Helper()
	raw, err := snappy.Decode(nil, body)
	if err != nil {
		t.Fatal(err)
	}
	series, err := decodeV2(raw)
	if err != nil {
		t.Fatal(err)
	}
	return series
}

func samplesV2(series []prompb.TimeSeries) int {
	n := 0
	for _, ts := range series {
		n += len(ts.Samples) + len(ts.Histograms)
	}
	return n
}

// TestRemoteWrite2 sends a real capture as remote write 2.0 to a receiver
// that checks the headers and the symbol table, and compares every series
// and sample it resolved with what was published.
func TestRemoteWrite2(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) int {
		if r.Header.Get("Content-Type") != contentTypeV2 || r.Header.Get("X-Prometheus-Remote-Write-Version") != "2.0.0" ||
			r.Header.Get("Content-Encoding") != "snappy" {
			return http.StatusBadRequest
		}
		return http.StatusNoContent
	})
	series := captureSeries(t, fixtures.Cadvisor135, scrapeMillis)
	seq := env.publishScrape(t, subject("node-1", proto.SourceCadvisor), scrapeMillis, series)
	cfg := testConfig("v2", rc.url())
	cfg.ProtobufMessage = MessageV2
	cfg.QueueConfig.MaxSamplesPerSend = 500
	s, _ := env.startSink(t, cfg)

	rc.waitSamples(t, uniqueKeys(series), 10*time.Second)
	env.waitAcked(t, "v2", seq)
	calls := rc.requests()
	for i, c := range calls {
		if c.status != http.StatusNoContent {
			t.Fatalf("request %d answered %d: wrong protocol headers %v", i, c.status, c.header)
		}
	}
	if want := (len(series) + 499) / 500; len(calls) != want {
		t.Errorf("%d requests, want %d of at most 500 samples", len(calls), want)
	}
	sent := map[string][]prompb.Sample{}
	for _, c := range calls {
		for _, ts := range c.series {
			key := seriesKey(ts.Labels)
			sent[key] = append(sent[key], ts.Samples...)
		}
	}
	for _, ts := range series {
		if got := sent[seriesKey(ts.Labels)]; !slices.EqualFunc(got, ts.Samples, func(a, b prompb.Sample) bool {
			return a.Value == b.Value && a.Timestamp == b.Timestamp
		}) {
			t.Fatalf("series %s arrived with samples %v, want %v", seriesKey(ts.Labels), got, ts.Samples)
		}
	}
	if got := metricValue(t, s.metrics.samplesSent); got != float64(len(series)) {
		t.Errorf("samples sent = %v, want %d", got, len(series))
	}
	if got := metricValue(t, s.metrics.protocolFallback); got != 0 {
		t.Errorf("fallbacks = %v, want 0", got)
	}
	if got := metricValue(t, s.metrics.samplesFailed.WithLabelValues("partial_write")); got != 0 {
		t.Errorf("partial writes = %v, want 0: the receiver wrote everything", got)
	}
}

// TestRemoteWrite2PartialWrite: a 2.0 backend that answers 2xx but says
// it wrote fewer samples than sent is counted as failed, not retried.
func TestRemoteWrite2PartialWrite(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, nil)
	rc.writtenShort = 3
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	seq := env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), scrapeMillis, series)
	cfg := testConfig("partial", rc.url())
	cfg.ProtobufMessage = MessageV2
	s, _ := env.startSink(t, cfg)

	env.waitAcked(t, "partial", seq)
	if calls := rc.requests(); len(calls) != 1 {
		t.Fatalf("%d requests, want 1 (a 2xx is not retried)", len(calls))
	}
	if got := metricValue(t, s.metrics.samplesFailed.WithLabelValues("partial_write")); got != 3 {
		t.Errorf("samples failed{reason=partial_write} = %v, want 3", got)
	}
}

// TestFallbackTo1On415 sends 2.0 to a backend that only takes 1.0: the
// first request is answered 415 and sent again as 1.0 with the same data;
// later messages go as 1.0 at once.
func TestFallbackTo1On415(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, nil)
	rc.only1 = true
	first := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	seq := env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), scrapeMillis, first)
	cfg := testConfig("fallback", rc.url())
	cfg.ProtobufMessage = MessageV2
	s, _ := env.startSink(t, cfg)

	rc.waitSamples(t, uniqueKeys(first), 10*time.Second)
	env.waitAcked(t, "fallback", seq)
	next := stamped(first, scrapeMillis+15_000)
	seq = env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), scrapeMillis+15_000, next)
	rc.waitSamples(t, uniqueKeys(first)+uniqueKeys(next), 10*time.Second)
	env.waitAcked(t, "fallback", seq)

	// The receiver only records requests it could decode: the 415 is not
	// among them, and every request it took is 1.0.
	calls := rc.requests()
	if len(calls) != 2 {
		t.Fatalf("%d requests decoded, want 2 (one per message, as 1.0)", len(calls))
	}
	for i, c := range calls {
		if c.header.Get("Content-Type") != contentTypeV1 || c.header.Get("X-Prometheus-Remote-Write-Version") != versionV1 {
			t.Errorf("request %d sent as %s %s, want 1.0", i, c.header.Get("Content-Type"), c.header.Get("X-Prometheus-Remote-Write-Version"))
		}
	}
	if got := metricValue(t, s.metrics.protocolFallback); got != 1 {
		t.Errorf("fallbacks = %v, want 1", got)
	}
	if got := metricValue(t, s.metrics.requests.WithLabelValues("4xx")); got != 1 {
		t.Errorf("4xx answers = %v, want exactly the one 415", got)
	}
	if got := metricValue(t, s.metrics.messagesDead.WithLabelValues("rejected")); got != 0 {
		t.Errorf("dead letters = %v, want 0: a 415 is not a rejection", got)
	}
}

// TestRemoteWrite2ToPrometheus242FallsBack: the Debian Prometheus (2.42)
// reads a 2.0 message as an empty 1.0 one and answers 204 without the
// written-samples headers. The sink must notice, send the same data as
// 1.0, and stay on 1.0: every sample ends up stored.
func TestRemoteWrite2ToPrometheus242FallsBack(t *testing.T) {
	prom := promtest.Start(t)
	env := newEnv(t)
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	millis := time.Now().Add(-time.Minute).UnixMilli()
	var seq uint64
	for i := range 3 {
		at := millis + int64(i)*15_000
		seq = env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), at, stamped(series, at))
	}
	cfg := testConfig("v2-prom", prom.WriteURL)
	cfg.ProtobufMessage = MessageV2
	s, _ := env.startSink(t, cfg)
	env.waitAcked(t, "v2-prom", seq)

	want := 3 * len(series)
	if got := promCounter(t, prom.URL, "prometheus_tsdb_head_samples_appended_total"); got != float64(want) {
		t.Errorf("Prometheus appended %v samples, want %d", got, want)
	}
	if got := metricValue(t, s.metrics.protocolFallback); got != 1 {
		t.Errorf("fallbacks = %v, want 1", got)
	}
	if got := metricValue(t, s.metrics.samplesSent); got != float64(want) {
		t.Errorf("samples sent = %v, want %d (the ignored 2.0 request not counted)", got, want)
	}
}
