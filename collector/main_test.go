package collector

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/prompb"
	"go.uber.org/goleak"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testCluster = "test-cluster"

// testConfig scrapes fast, so that a test sees several scrapes in a second.
func testConfig(targets ...TargetConfig) Config {
	cfg := DefaultConfig()
	cfg.ScrapeInterval = 200 * time.Millisecond
	cfg.ScrapeTimeout = 200 * time.Millisecond
	cfg.PublishTimeout = 2 * time.Second
	cfg.Targets = targets
	return cfg
}

// startJetStream runs an embedded server with the Weir streams.
func startJetStream(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js := natstest.Connect(t, natstest.Run(t))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, proto.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// startCollector runs a collector until the test ends, or until the
// returned stop is called; stop waits for Run to return and checks its error.
func startCollector(t *testing.T, cfg Config, d Deps) (c *Collector, stop func()) {
	t.Helper()
	c, err := New(cfg, d)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c, runCollector(t, c)
}

func runCollector(t *testing.T, c *Collector) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return 10s after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newDeps(t *testing.T, nc *nats.Conn, js jetstream.JetStream, reg prometheus.Registerer, log *slog.Logger) Deps {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	return Deps{Log: log, Reg: reg, JS: js, Cluster: testCluster, Node: "node-a", MaxPayload: int(nc.MaxPayload())}
}

// testWriter sends log lines to the test log, shown on failure and with -v.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// logRecorder keeps JSON log lines for a test to inspect.
type logRecorder struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (r *logRecorder) Write(p []byte) (int, error) {
	var m map[string]any
	if err := json.Unmarshal(p, &m); err != nil {
		return 0, err
	}
	r.mu.Lock()
	r.lines = append(r.lines, m)
	r.mu.Unlock()
	return len(p), nil
}

// find returns the lines with message msg whose attributes include attrs.
func (r *logRecorder) find(msg string, attrs map[string]string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
next:
	for _, l := range r.lines {
		if l["msg"] != msg {
			continue
		}
		for k, v := range attrs {
			if s, _ := l[k].(string); s != v {
				continue next
			}
		}
		out = append(out, l)
	}
	return out
}

func newLogRecorder() (*logRecorder, *slog.Logger) {
	r := &logRecorder{}
	return r, slog.New(slog.NewJSONHandler(r, nil))
}

// chunkMsg is one message of WEIR_RAW, decoded.
type chunkMsg struct {
	subject string
	header  nats.Header
	meta    proto.Meta
	size    int
	batch   proto.Batch
}

// scrapeMsgs are the messages of one scrape, by chunk index.
type scrapeMsgs struct {
	subject string
	millis  int64
	chunks  []*chunkMsg // nil where a chunk is missing
}

func (s *scrapeMsgs) complete() bool {
	for _, c := range s.chunks {
		if c == nil {
			return false
		}
	}
	return len(s.chunks) > 0
}

// series returns every series of the scrape, keyed by labels.
func (s *scrapeMsgs) series(t *testing.T) map[string]prompb.Sample {
	t.Helper()
	out := map[string]prompb.Sample{}
	for _, c := range s.chunks {
		for _, ts := range c.batch.Series {
			if len(ts.Samples) != 1 {
				t.Fatalf("%s: %d samples in one series, want 1", s.subject, len(ts.Samples))
			}
			k := labelsKey(ts.Labels)
			if _, dup := out[k]; dup {
				t.Fatalf("%s: series %s twice in one scrape", s.subject, k)
			}
			out[k] = ts.Samples[0]
		}
	}
	return out
}

func labelsKey(ls []prompb.Label) string {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	return b.Labels().String()
}

// readRaw reads every message of WEIR_RAW and groups them by scrape, in
// the order their first chunk was stored.
func readRaw(t *testing.T, js jetstream.JetStream) []*scrapeMsgs {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, proto.StreamRaw)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var order []*scrapeMsgs
	byKey := map[string]*scrapeMsgs{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get message %d: %v", seq, err)
		}
		meta, err := proto.ParseMeta(raw.Header)
		if err != nil {
			t.Fatalf("message %d on %s: %v", seq, raw.Subject, err)
		}
		enc, err := proto.EncodingByName(meta.Encoding)
		if err != nil {
			t.Fatal(err)
		}
		subj, err := proto.ParseSubject(raw.Subject)
		if err != nil || !subj.Partitioned {
			t.Fatalf("message %d: stored subject %q has no partition (%v)", seq, raw.Subject, err)
		}
		published := subj.String() // without the partition the stream appends
		m := &chunkMsg{subject: published, header: raw.Header, meta: meta, size: len(raw.Data)}
		if err := enc.Decode(raw.Data, &m.batch); err != nil {
			t.Fatalf("decode message %d on %s: %v", seq, raw.Subject, err)
		}
		key := published + "@" + raw.Header.Get(proto.HeaderScrapeTime)
		s := byKey[key]
		if s == nil {
			s = &scrapeMsgs{subject: published, millis: meta.ScrapeMillis, chunks: make([]*chunkMsg, meta.Chunks)}
			byKey[key] = s
			order = append(order, s)
		}
		if len(s.chunks) != meta.Chunks || s.chunks[meta.Chunk] != nil {
			t.Fatalf("%s: chunk %d/%d does not fit the scrape's other chunks", key, meta.Chunk, meta.Chunks)
		}
		s.chunks[meta.Chunk] = m
	}
	return order
}

// waitForScrapes polls WEIR_RAW until ok accepts the complete scrapes read
// so far, by subject, and returns them.
func waitForScrapes(t *testing.T, js jetstream.JetStream, ok func(bySubject map[string][]*scrapeMsgs) bool) map[string][]*scrapeMsgs {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		bySubject := map[string][]*scrapeMsgs{}
		for _, s := range readRaw(t, js) {
			if s.complete() {
				bySubject[s.subject] = append(bySubject[s.subject], s)
			}
		}
		if ok(bySubject) {
			return bySubject
		}
		if time.Now().After(deadline) {
			t.Fatalf("scrapes not published within 15s; complete scrapes by subject: %v", countScrapes(bySubject))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countScrapes(bySubject map[string][]*scrapeMsgs) map[string]int {
	out := map[string]int{}
	for k, v := range bySubject {
		out[k] = len(v)
	}
	return out
}

// eachHas returns a condition: every subject has at least n complete scrapes
// that pass accept (nil accepts all).
func eachHas(n int, accept func(*scrapeMsgs) bool, subjects ...string) func(map[string][]*scrapeMsgs) bool {
	return func(by map[string][]*scrapeMsgs) bool {
		for _, s := range subjects {
			found := 0
			for _, sc := range by[s] {
				if accept == nil || accept(sc) {
					found++
				}
			}
			if found < n {
				return false
			}
		}
		return true
	}
}

func subjectOf(node string, source proto.Source) string {
	return proto.Subject{Stage: proto.StageRaw, Cluster: testCluster, Node: node, Source: source}.String()
}

// upValue returns the value of up in a scrape, or NaN without one.
func upValue(t *testing.T, s *scrapeMsgs) float64 {
	t.Helper()
	for _, c := range s.chunks {
		for _, ts := range c.batch.Series {
			for _, l := range ts.Labels {
				if l.Name == labels.MetricName && l.Value == "up" {
					return ts.Samples[0].Value
				}
			}
		}
	}
	return math.NaN()
}

// expectedSeries parses a capture on its own, with textparse and
// labels.Builder rather than the collector's parser, and returns what a
// Prometheus server would store: target labels added, empty labels dropped,
// explicit timestamps kept. It also returns the number of samples.
func expectedSeries(t testing.TB, text []byte, scrapeMillis int64, target map[string]string) (map[string]prompb.Sample, int) {
	t.Helper()
	p, err := textparse.New(text, "text/plain; version=0.0.4", nil, textparse.ParserOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]prompb.Sample{}
	n := 0
	var lset labels.Labels
	b := labels.NewBuilder(labels.EmptyLabels())
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("capture does not parse: %v", err)
		}
		if e != textparse.EntrySeries {
			continue
		}
		_, ts, v := p.Series()
		p.Labels(&lset)
		b.Reset(lset) // drops empty values, as Prometheus does
		for k, v := range target {
			b.Set(k, v)
		}
		s := prompb.Sample{Value: v, Timestamp: scrapeMillis}
		if ts != nil {
			s.Timestamp = *ts
		}
		out[b.Labels().String()] = s
		n++
	}
	return out, n
}

// checkSeries compares the series of a scrape with want, and checks the
// three report series.
func checkSeries(t *testing.T, s *scrapeMsgs, want map[string]prompb.Sample, wantSamples int, target map[string]string, up float64) {
	t.Helper()
	got := s.series(t)
	report := func(name string) (prompb.Sample, bool) {
		ls := labels.NewBuilder(labels.FromMap(target)).Set(labels.MetricName, name).Labels()
		v, ok := got[ls.String()]
		delete(got, ls.String())
		return v, ok
	}
	upS, ok1 := report("up")
	dur, ok2 := report("scrape_duration_seconds")
	count, ok3 := report("scrape_samples_scraped")
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("%s: report series missing: up %v, scrape_duration_seconds %v, scrape_samples_scraped %v", s.subject, ok1, ok2, ok3)
	}
	for _, r := range []prompb.Sample{upS, dur, count} {
		if r.Timestamp != s.millis {
			t.Errorf("%s: report sample at %d, want the scrape start %d", s.subject, r.Timestamp, s.millis)
		}
	}
	if upS.Value != up {
		t.Errorf("%s: up = %v, want %v", s.subject, upS.Value, up)
	}
	if count.Value != float64(wantSamples) {
		t.Errorf("%s: scrape_samples_scraped = %v, want %d", s.subject, count.Value, wantSamples)
	}
	if dur.Value <= 0 || dur.Value > 10 {
		t.Errorf("%s: scrape_duration_seconds = %v", s.subject, dur.Value)
	}
	missing := 0
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing++
			if missing <= 3 {
				t.Errorf("%s: series %s missing", s.subject, k)
			}
		case math.Float64bits(g.Value) != math.Float64bits(w.Value) || g.Timestamp != w.Timestamp:
			t.Errorf("%s: %s = %v @%d, want %v @%d", s.subject, k, g.Value, g.Timestamp, w.Value, w.Timestamp)
		}
		delete(got, k)
	}
	if missing > 0 {
		t.Errorf("%s: %d of %d series missing", s.subject, missing, len(want))
	}
	for k := range got {
		t.Errorf("%s: unexpected series %s", s.subject, k)
		break
	}
}

// metricValue returns the value of a counter or the count of a histogram
// with exactly the given labels, or 0 when it does not exist.
func metricValue(t *testing.T, g prometheus.Gatherer, name string, lbls map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(lbls) {
				continue
			}
			for _, lp := range m.GetLabel() {
				if lbls[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return valueOf(m)
		}
	}
	return 0
}

func valueOf(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return math.NaN()
}

// targetAt builds a TargetConfig.
func targetAt(rawURL string, source proto.Source, node string) TargetConfig {
	return TargetConfig{URL: config.MustParseURL(rawURL), Source: source, Node: node}
}

// gzipped serves h's answers gzip-compressed to clients that accept it.
func gzipped(h http.Handler, served *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		_, _ = zw.Write(rec.Body.Bytes())
		_ = zw.Close()
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.WriteHeader(rec.Code)
		_, _ = w.Write(buf.Bytes())
		served.Add(1)
	})
}
