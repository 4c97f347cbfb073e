package sink

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/internal/promtest"
	"github.com/weirmetrics/weir/proto"
)

// replicaOf is the Deps.Consume of `weir sink`: internal/partition shares
// the route's partitions among the replicas of one sink.
func replicaOf(js jetstream.JetStream, route string, partitions int, member string, log *slog.Logger) func(context.Context, jetstream.ConsumerConfig, WorkFunc) error {
	return func(ctx context.Context, template jetstream.ConsumerConfig, work WorkFunc) error {
		return partition.Run(ctx, js, partition.Config{
			Stream: proto.RouteStreamName(route), Stage: proto.StageRoute, Route: route,
			Durable: template.Durable, Partitions: partitions, Consumer: template,
			Member: member, Heartbeat: time.Second, Log: log,
		}, partition.Work(work))
	}
}

// TestThreeReplicasNoOutOfOrderAtPrometheus runs three replicas of one
// sink, sharing the route's partitions through internal/partition as they
// join one after the other, against a real Prometheus that accepts no
// out-of-order samples: every sample arrives once and none is rejected.
func TestThreeReplicasNoOutOfOrderAtPrometheus(t *testing.T) {
	prom := promtest.Start(t)
	env := newEnv(t)
	const route = "prom"
	streams := proto.DefaultStreamsConfig()
	streams.MaxBytes = 1 << 30
	if _, err := env.js.CreateStream(context.Background(), streams.RouteStream(route)); err != nil {
		t.Fatal(err)
	}
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	const nodes, scrapes = 30, 10 // enough targets to fall in every replica's partitions
	// Recent timestamps: Prometheus takes nothing older than its head block.
	first := time.Now().Add(-10*time.Minute).UnixMilli() / 1000 * 1000
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			millis := first + int64(i)*15_000
			batch := stamped(series, millis)
			for n := range nodes {
				subj := proto.Subject{Stage: proto.StageRoute, Route: route, Cluster: "test", Node: fmt.Sprintf("node-%02d", n), Source: proto.SourceKubeProxy}
				env.publishScrape(t, subj, millis, withNode(batch, subj.Node))
			}
		}
	}
	// Half the scrapes wait in the stream as the replicas join one after
	// the other, so partitions change hands with messages in flight.
	publish(0, scrapes/2)
	var sinks []*Sink
	for member := range 3 {
		cfg := testConfig("replicated", prom.WriteURL)
		cfg.Route = route
		cfg.RemoteTimeout = 10 * time.Second
		cfg.AckWait = 10 * time.Second
		cfg.QueueConfig.MinShards, cfg.QueueConfig.MaxShards = 2, 2
		cfg.QueueConfig.MaxSamplesPerSend = 100 // many requests per scrape, spread over shards
		s, err := New(cfg, Deps{
			// A registry each, to see what each replica sent.
			Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("member", member), JS: env.js, Reg: prometheus.NewRegistry(),
			Stream: proto.RouteStreamName(route), Filter: proto.RouteFilter(route),
			Consume: replicaOf(env.js, route, streams.Partitions, fmt.Sprintf("replica-%d", member),
				slog.New(slog.NewTextHandler(testWriter{t}, nil)).With("member", member)),
		})
		if err != nil {
			t.Fatal(err)
		}
		env.run(t, s)
		sinks = append(sinks, s)
	}
	// The other half once the replicas have split the partitions.
	stable := 0
	waitFor(t, 15*time.Second, "the replicas sharing every partition", func() bool {
		total := 0
		for _, s := range sinks {
			s.mu.Lock()
			n := len(s.parts)
			s.mu.Unlock()
			if n == 0 {
				total = -1000
			}
			total += n
		}
		if total == streams.Partitions {
			stable++
		} else {
			stable = 0
		}
		return stable >= 100 // a second at waitFor's 10ms polling
	})
	publish(scrapes/2, scrapes)

	want := len(series) * nodes * scrapes
	// Prometheus scrapes nothing here: every sample its head appended is ours.
	deadline := time.Now().Add(20 * time.Second)
	for promCounter(t, prom.URL, "prometheus_tsdb_head_samples_appended_total") < float64(want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := promCounter(t, prom.URL, "prometheus_tsdb_head_samples_appended_total"); got != float64(want) {
		t.Errorf("Prometheus appended %v samples, want %d", got, want)
	}
	// And one series, queried, holds every scrape.
	var sel []string
	for _, l := range withNode(series[:1], "node-07")[0].Labels {
		sel = append(sel, fmt.Sprintf("%s=%q", l.Name, l.Value))
	}
	q := "count_over_time({" + strings.Join(sel, ",") + "}[30m])"
	res, err := prom.Query(q, time.Now())
	if err != nil || len(res) != 1 || res[0].Value != scrapes {
		t.Errorf("%s = %v, %v; want one series with %d samples", q, res, err, scrapes)
	}
	if ooo := promCounter(t, prom.URL, "prometheus_tsdb_out_of_order_samples_total"); ooo != 0 {
		t.Errorf("Prometheus rejected %v samples as out of order", ooo)
	}
	total := 0.0
	for i, s := range sinks {
		for _, reason := range []string{"http_4xx", "partial_write"} {
			if v := metricValue(t, s.metrics.samplesFailed.WithLabelValues(reason)); v != 0 {
				t.Errorf("replica %d: samples failed{reason=%s} = %v, want 0", i, reason, v)
			}
		}
		sent := metricValue(t, s.metrics.samplesSent)
		t.Logf("replica %d: sent %v, retried %v, dead %v, pending %v", i, sent, metricValue(t, s.metrics.samplesRetried),
			metricValue(t, s.metrics.messagesDead.WithLabelValues("rejected")), metricValue(t, s.metrics.pending))
		if sent == 0 {
			t.Errorf("replica %d sent nothing: the partitions were not shared", i)
		}
		total += sent
	}
	// A handover may send a message twice (at least once); Prometheus
	// stores a repeated sample once, which the appended count above checks.
	if total < float64(want) {
		t.Errorf("replicas sent %v samples together, want at least %d", total, want)
	}
}

// promCounter reads the sum of a counter family from Prometheus' own
// /metrics page.
func promCounter(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	found, sum := false, 0.0
	for line := range strings.Lines(string(body)) {
		if !strings.HasPrefix(line, name+" ") && !strings.HasPrefix(line, name+"{") {
			continue
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		found, sum = true, sum+v
	}
	if !found {
		t.Fatalf("%s not on Prometheus' /metrics", name)
	}
	return sum
}
