package sink

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/promtest"
	"github.com/weirmetrics/weir/proto"
)

// staticPartitions is a Deps.Consume that gives replica member of members
// the partitions p with p % members == member, each through its own
// durable consumer, as internal/partition assigns them when no member
// comes or goes.
func staticPartitions(js jetstream.JetStream, stream, route string, partitions, member, members int) func(context.Context, jetstream.ConsumerConfig, WorkFunc) error {
	return func(ctx context.Context, template jetstream.ConsumerConfig, work WorkFunc) error {
		var wg sync.WaitGroup
		errs := make(chan error, partitions)
		for p := member; p < partitions; p += members {
			cfg := template
			cfg.Durable = fmt.Sprintf("%s-p%02d", template.Durable, p)
			cfg.FilterSubject = proto.PartitionFilter(proto.StageRoute, route, p)
			cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
			if err != nil {
				return err
			}
			wg.Go(func() {
				if err := work(ctx, p, cons); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
}

// TestThreeReplicasNoOutOfOrderAtPrometheus runs three replicas of one
// sink, each on its share of the route's partitions, against a real
// Prometheus that accepts no out-of-order samples: every sample arrives
// and none is rejected.
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
	const nodes, scrapes = 12, 20
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
	publish(0, scrapes/2)
	var sinks []*Sink
	for member := range 3 {
		cfg := testConfig("replicated", prom.WriteURL)
		cfg.Route = route
		cfg.RemoteTimeout = 10 * time.Second
		cfg.QueueConfig.MinShards, cfg.QueueConfig.MaxShards = 2, 2
		cfg.QueueConfig.MaxSamplesPerSend = 100 // many requests per scrape, spread over shards
		s, err := New(cfg, Deps{
			Log: nil, JS: env.js, Reg: env.reg,
			Stream: proto.RouteStreamName(route), Filter: proto.RouteFilter(route),
			Consume: staticPartitions(env.js, proto.RouteStreamName(route), route, streams.Partitions, member, 3),
		})
		if err != nil {
			t.Fatal(err)
		}
		env.run(t, s)
		sinks = append(sinks, s)
	}
	publish(scrapes/2, scrapes) // half while the replicas already run

	want := len(series) * nodes * scrapes
	// Prometheus scrapes nothing here: every sample its head appended is ours.
	waitFor(t, 20*time.Second, "every sample in Prometheus", func() bool {
		return promCounter(t, prom.URL, "prometheus_tsdb_head_samples_appended_total") >= float64(want)
	})
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
	s := sinks[0] // the replicas share one registry, so one set of series
	for _, reason := range []string{"http_4xx", "partial_write"} {
		if v := metricValue(t, s.metrics.samplesFailed.WithLabelValues(reason)); v != 0 {
			t.Errorf("samples failed{reason=%s} = %v, want 0", reason, v)
		}
	}
	if v := metricValue(t, s.metrics.samplesSent); v != float64(want) {
		t.Errorf("samples sent = %v, want %d (each exactly once)", v, want)
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
