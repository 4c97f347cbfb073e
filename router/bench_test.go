package router

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/weirmetrics/weir/internal/cputime"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

// benchRoutes are three routes of the kinds users write: a selector, a
// selector with an expr predicate, and write_relabel_configs that drop and
// rewrite.
func benchRoutes() []Route {
	return []Route{
		{Name: "containers", Match: []string{`{__name__=~"container_.*"}`}},
		{Name: "workloads", Match: []string{`{__name__=~"container_(cpu|memory)_.*"}`, `{__name__="machine_cpu_cores"}`},
			Expr: `label("namespace") != "kube-system" && label("container") != ""`},
		{Name: "relabeled", WriteRelabelConfigs: []*relabel.Config{
			{SourceLabels: model.LabelNames{"__name__"}, Regex: relabel.MustNewRegexp(".*_bucket"), Action: relabel.Drop, Separator: ";"},
			{Regex: relabel.MustNewRegexp("id|image"), Action: relabel.LabelDrop, Separator: ";", Replacement: "$1"},
		}},
	}
}

// rewriteRoute relabels with an action that rewrites labels, which runs
// through Prometheus' labels.Builder.
func rewriteRoute() Route {
	return Route{Name: "rewrite", WriteRelabelConfigs: []*relabel.Config{
		{SourceLabels: model.LabelNames{"__name__"}, Regex: relabel.MustNewRegexp(".*_bucket"), Action: relabel.Drop, Separator: ";"},
		{SourceLabels: model.LabelNames{"namespace", "pod"}, Regex: relabel.MustNewRegexp("(.+);(.+)"), TargetLabel: "workload", Replacement: "$1/$2", Action: relabel.Replace, Separator: ";"},
	}}
}

// BenchmarkRoute routes the real 1.35 cAdvisor capture (one scrape, one
// message) through three routes: decoding the payload, applying every
// route and encoding each route's output, as the router does per message
// before publishing. ns/sample is per input sample.
func BenchmarkRoute(b *testing.B) {
	series := captureSeries(b, fixtures.Cadvisor135, 1000, "job", "kubelet", "instance", "node-a:10250")
	subj := enrichedSubject("node-a", proto.SourceCadvisor)
	payload, err := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: series})
	if err != nil {
		b.Fatal(err)
	}
	r := &Router{maxPayload: defaultMaxPayload}
	rt := compileForTest(b, benchRoutes()...)
	r.routes = rt.routes
	w := &worker{r: r, rt: rt}
	header := nats.Header{}
	meta := proto.Meta{MsgID: proto.MsgID(subj, 1000, 0), Encoding: proto.DefaultEncoding.Name(), ScrapeMillis: 1000, Chunks: 1, Samples: len(series)}
	meta.SetHeaders(header)

	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	samples := 0
	cpu := cputime.Process()
	for b.Loop() {
		if err := proto.DefaultEncoding.Decode(payload, &w.batch); err != nil {
			b.Fatal(err)
		}
		w.rt.route(subj, &w.batch)
		outs, err := w.outputs(subj, meta, header, payload)
		if err != nil || len(outs) != 3 {
			b.Fatalf("%d outputs, %v", len(outs), err)
		}
		samples += len(series)
	}
	kept := 0
	for i := range rt.routes {
		kept += rt.counts[i].samplesKept
	}
	if kept == 0 || rt.counts[0].samplesKept == len(series) {
		b.Fatalf("routes kept %d samples in all; the benchmark would measure nothing", kept)
	}
	reportPerSample(b, cpu, samples)
	b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
}

// reportPerSample reports wall and CPU time (GC included) per sample.
func reportPerSample(b *testing.B, cpuSince time.Duration, samples int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(samples), "ns/sample")
	b.ReportMetric(float64(cputime.Process()-cpuSince)/float64(samples), "cpu-ns/sample")
}

// BenchmarkRouteOnly is BenchmarkRoute without decoding and encoding: the
// cost of the routes themselves, all three and each alone.
func BenchmarkRouteOnly(b *testing.B) {
	series := captureSeries(b, fixtures.Cadvisor135, 1000, "job", "kubelet", "instance", "node-a:10250")
	subj := enrichedSubject("node-a", proto.SourceCadvisor)
	routes := benchRoutes()
	for _, bc := range []struct {
		name   string
		routes []Route
	}{
		{"three", routes},
		{"selector", routes[:1]},
		{"selectors+expr", routes[1:2]},
		{"relabel", routes[2:]},
		{"relabel-rewrite", []Route{rewriteRoute()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rt := compileForTest(b, bc.routes...)
			batch := proto.Batch{Series: series}
			b.ReportAllocs()
			samples := 0
			cpu := cputime.Process()
			for b.Loop() {
				rt.route(subj, &batch)
				samples += len(series)
			}
			reportPerSample(b, cpu, samples)
		})
	}
}

// BenchmarkRouterPipeline routes b.N real cAdvisor scrapes, of 24
// targets, already in an embedded JetStream server, through the three
// routes to their streams: decoding, routing, encoding, publishing and
// waiting for JetStream's acks, over 12 partitions. Run it with
// -benchtime=Nx: each iteration is one scrape.
func BenchmarkRouterPipeline(b *testing.B) {
	srv := natstest.Run(b)
	_, js := natstest.Connect(b, srv)
	streams := testStreams()
	if err := proto.EnsureStreams(context.Background(), js, streams); err != nil {
		b.Fatal(err)
	}
	e := &testEnv{js: js, streams: streams}
	series := captureSeries(b, fixtures.Cadvisor135, 0, "job", "kubelet")
	for i := range b.N {
		millis := int64(1000 * (i/24 + 1))
		e.publishScrape(b, enrichedSubject(fmt.Sprintf("node-%02d", i%24), proto.SourceCadvisor), millis, stampedAt(series, millis))
	}
	r, err := New(testConfig(benchRoutes()...), Deps{JS: js, Streams: streams})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ResetTimer()
	cpu := cputime.Process()
	go func() { done <- r.Run(ctx) }()
	for {
		infos, ok := e.consumerInfos()
		if ok && e.allAcked(b, infos) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	cpuUsed := cputime.Process() - cpu
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	samples := b.N * len(series)
	b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "messages/s")
	// The embedded NATS server's CPU is in the process's too.
	b.ReportMetric(float64(cpuUsed)/float64(samples), "cpu-ns/sample")
}
