package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
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

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// captureSeries parses a real capture with Prometheus' parser into series
// with sorted labels and one sample each, stamped with millis, plus the
// target labels an enricher would have added (extra, sorted into place).
// Labels with empty values are dropped, as a scrape drops them.
func captureSeries(t testing.TB, name string, millis int64, extra ...string) []prompb.TimeSeries {
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
		b := labels.NewBuilder(lset)
		for i := 0; i+1 < len(extra); i += 2 {
			b.Set(extra[i], extra[i+1])
		}
		ts := prompb.TimeSeries{Samples: []prompb.Sample{{Value: v, Timestamp: millis}}}
		b.Labels().Range(func(l labels.Label) {
			if l.Value != "" {
				ts.Labels = append(ts.Labels, prompb.Label{Name: l.Name, Value: l.Value})
			}
		})
		out = append(out, ts)
	}
	if len(out) == 0 {
		t.Fatalf("%s holds no series", name)
	}
	return out
}

// stampedAt returns series with every sample moved to millis; labels are shared.
func stampedAt(series []prompb.TimeSeries, millis int64) []prompb.TimeSeries {
	out := make([]prompb.TimeSeries, len(series))
	for i, s := range series {
		out[i] = prompb.TimeSeries{Labels: s.Labels, Samples: []prompb.Sample{{Value: s.Samples[0].Value, Timestamp: millis}}}
	}
	return out
}

func toLabels(ls []prompb.Label) labels.Labels {
	b := labels.NewScratchBuilder(len(ls))
	for _, l := range ls {
		b.Add(l.Name, l.Value)
	}
	return b.Labels()
}

// testEnv is a real embedded JetStream server with Weir's streams.
type testEnv struct {
	js      jetstream.JetStream
	reg     *prometheus.Registry
	streams proto.StreamsConfig
}

// testStreams are the default stream limits with a small max_bytes: the
// server reserves max_bytes of disk for every stream, and a test creates
// up to seven.
func testStreams() proto.StreamsConfig {
	sc := proto.DefaultStreamsConfig()
	sc.MaxBytes = 256 << 20
	return sc
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	sc := testStreams()
	sc.Partitions = 4
	if err := proto.EnsureStreams(context.Background(), js, sc); err != nil {
		t.Fatal(err)
	}
	return &testEnv{js: js, reg: prometheus.NewRegistry(), streams: sc}
}

func enrichedSubject(node string, source proto.Source) proto.Subject {
	return proto.Subject{Stage: proto.StageEnriched, Cluster: "test", Node: node, Source: source}
}

// publishScrape publishes series as the enricher does: chunks of the
// default encoding with Weir's headers. It returns the message ids.
func (e *testEnv) publishScrape(t testing.TB, subj proto.Subject, millis int64, series []prompb.TimeSeries) []string {
	t.Helper()
	ids, err := e.tryPublishScrape(subj, millis, series)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func (e *testEnv) tryPublishScrape(subj proto.Subject, millis int64, series []prompb.TimeSeries) ([]string, error) {
	chunks, err := proto.EncodeChunks(proto.DefaultEncoding, series, 512<<10)
	if err != nil {
		return nil, err
	}
	var ids []string
	for i, c := range chunks {
		msg := nats.NewMsg(subj.String())
		meta := proto.Meta{
			MsgID:        proto.MsgID(subj, millis, i),
			Encoding:     proto.DefaultEncoding.Name(),
			ScrapeMillis: millis,
			Chunk:        i,
			Chunks:       len(chunks),
			Samples:      c.Samples,
		}
		meta.SetHeaders(msg.Header)
		msg.Data = c.Payload
		if _, err := e.js.PublishMsg(context.Background(), msg); err != nil {
			return ids, fmt.Errorf("publish %s: %w", msg.Subject, err)
		}
		ids = append(ids, meta.MsgID)
	}
	return ids, nil
}

// log writes to the test's log, shown when it fails or with -v.
func (e *testEnv) log(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startRouter runs a router until the test ends or the returned stop is called.
func (e *testEnv) startRouter(t *testing.T, cfg Config) (*Router, func()) {
	t.Helper()
	r, err := New(cfg, Deps{Log: e.log(t), JS: e.js, Reg: e.reg, Streams: e.streams})
	if err != nil {
		t.Fatal(err)
	}
	return r, runRouter(t, r)
}

// runRouter runs r until the test ends or the returned stop is called,
// which checks that Run returns nil in time.
func runRouter(t *testing.T, r *Router) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
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
			if err := r.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// routeMsg is one message read back from a route stream.
type routeMsg struct {
	subject string
	header  nats.Header
	series  []prompb.TimeSeries
}

// readStream returns every message of a stream, in stream order, decoded.
func (e *testEnv) readStream(t *testing.T, stream string) []routeMsg {
	t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []routeMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("%s seq %d: %v", stream, seq, err)
		}
		var b proto.Batch
		if err := proto.DefaultEncoding.Decode(raw.Data, &b); err != nil {
			t.Fatalf("%s seq %d: %v", stream, seq, err)
		}
		out = append(out, routeMsg{subject: raw.Subject, header: raw.Header, series: slices.Clone(b.Series)})
	}
	return out
}

func (e *testEnv) streamMsgs(t *testing.T, stream string) uint64 {
	t.Helper()
	s, err := e.js.Stream(context.Background(), stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// consumerInfos returns the info of every partition consumer of the
// router, or false while one does not exist yet.
func (e *testEnv) consumerInfos() ([]*jetstream.ConsumerInfo, bool) {
	var out []*jetstream.ConsumerInfo
	for p := range e.streams.Partitions {
		c, err := e.js.Consumer(context.Background(), proto.StreamEnriched, partition.ConsumerName(Durable, p))
		if err != nil {
			return nil, false
		}
		info, err := c.Info(context.Background())
		if err != nil {
			return nil, false
		}
		out = append(out, info)
	}
	return out, true
}

// allAcked reports whether the consumers acked every message stored in
// their partitions.
func (e *testEnv) allAcked(t testing.TB, infos []*jetstream.ConsumerInfo) bool {
	t.Helper()
	for _, info := range infos {
		acked, err := natstest.Acked(context.Background(), e.js, info)
		if err != nil {
			t.Fatal(err)
		}
		if !acked {
			return false
		}
	}
	return true
}

// waitRouted waits until the router's consumers acked everything in
// WEIR_ENRICHED.
func (e *testEnv) waitRouted(t *testing.T) {
	t.Helper()
	waitFor(t, 15*time.Second, "every enriched message acked by the router", func() bool {
		infos, ok := e.consumerInfos()
		return ok && e.allAcked(t, infos)
	})
}

// deleteConsumers removes the router's consumers, so that the next router
// reads WEIR_ENRICHED from the start again.
func (e *testEnv) deleteConsumers(t *testing.T) {
	t.Helper()
	for p := range e.streams.Partitions {
		if err := e.js.DeleteConsumer(context.Background(), proto.StreamEnriched, partition.ConsumerName(Durable, p)); err != nil {
			t.Fatal(err)
		}
	}
}

// testWriter sends log lines to the test's log, shown when it fails or with -v.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testConfig(routes ...Route) Config {
	c := DefaultConfig()
	c.Routes = routes
	c.AckWait = 2 * time.Second
	c.PublishTimeout = time.Second
	return c
}

// counter reads one child of a counter vector from a registry.
func counter(t testing.TB, reg *prometheus.Registry, name string, labelPairs ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labelPairs); i += 2 {
				if labelOf(m, labelPairs[i]) != labelPairs[i+1] {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func labelOf(m *dto.Metric, name string) string {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == name {
			return lp.GetValue()
		}
	}
	return ""
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

// seriesKeys returns the series of ls as strings, for comparing sets.
func seriesKeys(series []prompb.TimeSeries) []string {
	out := make([]string, len(series))
	for i, s := range series {
		out[i] = toLabels(s.Labels).String()
	}
	slices.Sort(out)
	return out
}
