package sink

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/prompb"
	"go.uber.org/goleak"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// captureSeries parses a real capture into series with sorted labels and
// one sample each, stamped with millis, as a collector would publish them.
func captureSeries(t testing.TB, name string, millis int64) []prompb.TimeSeries {
	t.Helper()
	p := textparse.NewPromParser(fixtures.Read(name), labels.NewSymbolTable(), false)
	var out []prompb.TimeSeries
	var lset labels.Labels
	for {
		entry, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		if entry != textparse.EntrySeries {
			continue
		}
		p.Labels(&lset)
		_, _, v := p.Series()
		ts := prompb.TimeSeries{Samples: []prompb.Sample{{Value: v, Timestamp: millis}}}
		lset.Range(func(l labels.Label) { ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value}) })
		out = append(out, ts)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no series", name)
	}
	return out
}

// stamped returns series with every sample moved to millis; labels are shared.
func stamped(series []prompb.TimeSeries, millis int64) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, len(series))
	for i, s := range series {
		out[i] = prompb.TimeSeries{Labels: s.Labels, Samples: []prompb.Sample{{Value: s.Samples[0].Value, Timestamp: millis}}}
	}
	return out
}

// forTarget adds a label naming the target, as the enricher would, so that
// every target has its own series. The name sorts after every label of the
// captures.
func forTarget(series []prompb.TimeSeries, target string) []prompb.TimeSeries {
	for i := range series {
		series[i].Labels = append(slices.Clip(series[i].Labels), prompb.Label{Name: "zz_target", Value: target})
	}
	return series
}

// testEnv is a real embedded JetStream server with Weir's streams.
type testEnv struct {
	js  jetstream.JetStream
	reg *prometheus.Registry
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	if err := proto.EnsureStreams(context.Background(), js, proto.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	return &testEnv{js: js, reg: prometheus.NewRegistry()}
}

// publishScrape publishes series as a collector does: chunks of the
// default encoding with Weir's headers. It returns the stream sequence of
// the last chunk.
func (e *testEnv) publishScrape(t testing.TB, subj proto.Subject, millis int64, series []prompb.TimeSeries) uint64 {
	t.Helper()
	chunks, err := proto.EncodeChunks(proto.DefaultEncoding, series, 512<<10)
	if err != nil {
		t.Fatal(err)
	}
	var seq uint64
	for i, c := range chunks {
		msg := nats.NewMsg(subj.String())
		proto.Meta{
			MsgID:        proto.MsgID(subj, millis, i),
			Encoding:     proto.DefaultEncoding.Name(),
			ScrapeMillis: millis,
			Chunk:        i,
			Chunks:       len(chunks),
			Samples:      c.Samples,
		}.SetHeaders(msg.Header)
		msg.Data = c.Payload
		seq = e.publish(t, msg)
	}
	return seq
}

func (e *testEnv) publish(t testing.TB, msg *nats.Msg) uint64 {
	t.Helper()
	ack, err := e.js.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatalf("publish %s: %v", msg.Subject, err)
	}
	return ack.Sequence
}

func (e *testEnv) consumerInfo(t *testing.T, sinkName string) *jetstream.ConsumerInfo {
	t.Helper()
	info, err := e.tryConsumerInfo(sinkName)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func (e *testEnv) tryConsumerInfo(sinkName string) (*jetstream.ConsumerInfo, error) {
	ctx := context.Background()
	c, err := e.js.Consumer(ctx, proto.StreamRaw, "sink-"+sinkName)
	if err != nil {
		return nil, err
	}
	return c.Info(ctx)
}

// waitAcked waits until the consumer, once Run created it, acked every
// message up to seq.
func (e *testEnv) waitAcked(t *testing.T, sinkName string, seq uint64) {
	t.Helper()
	waitFor(t, 10*time.Second, "every message acked", func() bool {
		info, err := e.tryConsumerInfo(sinkName)
		return err == nil && info.AckFloor.Stream >= seq && info.NumAckPending == 0
	})
}

// startSink runs a sink until the test ends or the returned stop is called.
func (e *testEnv) startSink(t *testing.T, cfg Config) (*Sink, func()) {
	t.Helper()
	return e.startSinkOn(t, cfg, proto.StreamRaw, proto.StreamFilter(proto.StageRaw))
}

// startSinkOn is startSink reading another stream, such as a route's.
func (e *testEnv) startSinkOn(t *testing.T, cfg Config, stream, filter string) (*Sink, func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, Deps{Log: log, JS: e.js, Reg: e.reg, Stream: stream, Filter: filter})
	if err != nil {
		t.Fatal(err)
	}
	return s, e.run(t, s)
}

// run runs s until the test ends or the returned stop is called.
func (e *testEnv) run(t *testing.T, s *Sink) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("Run did not return after its context ended")
			}
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// testWriter sends log lines to the test's log, shown when it fails or with -v.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testConfig(name, url string) Config {
	c := DefaultConfig()
	c.Name = name
	c.URL = config.MustParseURL(url)
	c.RemoteTimeout = 2 * time.Second
	c.AckWait = time.Second
	c.QueueConfig.MinBackoff = 10 * time.Millisecond
	c.QueueConfig.MaxBackoff = 100 * time.Millisecond
	return c
}

// metricValue reads a counter or gauge.
func metricValue(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("%s is neither a counter nor a gauge", m.Desc())
	return 0
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// call is one request a receiver got.
type call struct {
	at      time.Time
	header  http.Header
	series  []prompb.TimeSeries
	samples int
	status  int
}

// receiver is a remote-write endpoint that decodes every request. answer
// decides the status of the n-th request (from 0) and may block; nil
// answers 204.
type receiver struct {
	srv    *httptest.Server
	answer func(n int, w http.ResponseWriter, r *http.Request) int
	// only1 answers 415 to remote write 2.0, as a 1.0-only backend does.
	only1 bool
	// writtenShort is how many samples fewer than received a 2.0 answer
	// says were written.
	writtenShort int

	mu       sync.Mutex
	calls    []call
	accepted map[string]bool    // "labels@ts" of every sample answered 2xx
	order    map[string][]int64 // timestamps of each series, in the order accepted
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request) int) *receiver {
	rc := &receiver{answer: answer, accepted: map[string]bool{}, order: map[string][]int64{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	compressed, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	raw, err := snappy.Decode(nil, compressed)
	if err != nil {
		http.Error(w, "snappy: "+err.Error(), http.StatusBadRequest)
		return
	}
	var wr prompb.WriteRequest
	isV2 := r.Header.Get("Content-Type") == contentTypeV2
	switch {
	case isV2 && rc.only1:
		http.Error(w, "remote write 2.0 not supported", http.StatusUnsupportedMediaType)
		return
	case isV2:
		series, err := decodeV2(raw)
		if err != nil {
			http.Error(w, "remote write 2.0: "+err.Error(), http.StatusBadRequest)
			return
		}
		wr.Timeseries = series
	default:
		if err := wr.Unmarshal(raw); err != nil {
			http.Error(w, "protobuf: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	c := call{at: time.Now(), header: r.Header.Clone(), series: wr.Timeseries}
	for _, ts := range wr.Timeseries {
		c.samples += len(ts.Samples)
	}
	rc.mu.Lock()
	n := len(rc.calls)
	rc.calls = append(rc.calls, c)
	rc.mu.Unlock()

	status := http.StatusNoContent
	if rc.answer != nil {
		status = rc.answer(n, w, r)
	}
	if r.Context().Err() != nil {
		// The sink gave up on this request and will send it again; a
		// backend that commits it anyway gets old samples late, which is
		// the race every remote-write client has, not what is tested here.
		status = 499
	}
	rc.mu.Lock()
	rc.calls[n].status = status
	if status/100 == 2 {
		for _, ts := range wr.Timeseries {
			key := seriesKey(ts.Labels)
			for _, s := range ts.Samples {
				rc.accepted[key+"@"+strconv.FormatInt(s.Timestamp, 10)] = true
				rc.order[key] = append(rc.order[key], s.Timestamp)
			}
		}
	}
	rc.mu.Unlock()
	if isV2 && status/100 == 2 {
		written := c.samples
		if rc.writtenShort > 0 {
			written = max(0, written-rc.writtenShort)
		}
		w.Header().Set("X-Prometheus-Remote-Write-Samples-Written", strconv.Itoa(written))
		w.Header().Set("X-Prometheus-Remote-Write-Histograms-Written", "0")
		w.Header().Set("X-Prometheus-Remote-Write-Exemplars-Written", "0")
	}
	w.WriteHeader(status)
	if status >= 400 {
		_, _ = io.WriteString(w, "rejected by the test receiver\n")
	}
}

func (rc *receiver) url() string { return rc.srv.URL + "/api/v1/write" }

func (rc *receiver) requests() []call {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.calls)
}

func (rc *receiver) uniqueSamples() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.accepted)
}

func (rc *receiver) waitSamples(t *testing.T, want int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, strconv.Itoa(want)+" unique samples at the receiver", func() bool { return rc.uniqueSamples() >= want })
	if got := rc.uniqueSamples(); got != want {
		t.Fatalf("receiver holds %d unique samples, want %d", got, want)
	}
}

func seriesKey(ls []prompb.Label) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.Name)
		b.WriteByte('=')
		b.WriteString(l.Value)
		b.WriteByte(',')
	}
	return b.String()
}

func uniqueKeys(series []prompb.TimeSeries) int {
	keys := map[string]bool{}
	for _, ts := range series {
		for _, s := range ts.Samples {
			keys[seriesKey(ts.Labels)+"@"+strconv.FormatInt(s.Timestamp, 10)] = true
		}
	}
	return len(keys)
}

func subject(node string, source proto.Source) proto.Subject {
	return proto.Subject{Stage: proto.StageRaw, Cluster: "test", Node: node, Source: source}
}
