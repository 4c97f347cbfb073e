package router

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/internal/promtest"
	"github.com/weirmetrics/weir/internal/vmtest"
	"github.com/weirmetrics/weir/proto"
	"github.com/weirmetrics/weir/sink"
)

// TestRoutesIntoPrometheusAndVictoriaMetrics is one pipeline writing to a
// real Prometheus and a real VictoriaMetrics at once through two routes:
// Prometheus gets only container_* series, VictoriaMetrics everything but
// histogram buckets. Both are queried as a user would, and must hold
// exactly what their route keeps of the real captures, with the values of
// the captures.
func TestRoutesIntoPrometheusAndVictoriaMetrics(t *testing.T) {
	prom := promtest.Start(t)
	vm := vmtest.Start(t)
	e := newEnv(t)
	e.startRouter(t, testConfig(
		Route{Name: "prometheus", Match: []string{`{__name__=~"container_.*"}`}},
		Route{Name: "victoria", WriteRelabelConfigs: []*relabel.Config{{
			SourceLabels: model.LabelNames{"__name__"}, Regex: relabel.MustNewRegexp(".*_bucket"), Action: relabel.Drop, Separator: ";",
		}}},
	))
	for name, url := range map[string]string{"prometheus": prom.WriteURL, "victoria": vm.WriteURL} {
		// As `weir sink` does, start on an existing stream: the router
		// creates it as it starts.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, err := e.js.Stream(context.Background(), proto.RouteStreamName(name)); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("route stream %s not created: %v", proto.RouteStreamName(name), err)
			}
		}
		cfg := sink.DefaultConfig()
		cfg.Name, cfg.URL = name, config.MustParseURL(url)
		cfg.QueueConfig.MaxBackoff = time.Second
		stream, route := proto.RouteStreamName(name), name
		// As `weir sink` runs it: over the route's partitions.
		s, err := sink.New(cfg, sink.Deps{Log: e.log(t), JS: e.js, Stream: stream, Filter: proto.RouteFilter(name),
			Consume: func(ctx context.Context, template jetstream.ConsumerConfig, work sink.WorkFunc) error {
				return partition.Run(ctx, e.js, partition.Config{
					Stream: stream, Stage: proto.StageRoute, Route: route, Durable: template.Durable,
					Partitions: e.streams.Partitions, Consumer: template, Log: e.log(t),
				}, partition.Work(work))
			}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sink %s: %v", name, err)
			}
		})
	}

	// One scrape of each capture, as the enricher publishes it, stamped now
	// so that both backends accept it.
	now := time.Now().Truncate(time.Millisecond)
	millis := now.UnixMilli()
	var all []prompb.TimeSeries
	for _, c := range []struct {
		file, instance, path string
		source               proto.Source
	}{
		{fixtures.Cadvisor135, "node-a:10250", "/metrics/cadvisor", proto.SourceCadvisor},
		{fixtures.Kubelet121, "node-a:10250", "/metrics", proto.SourceKubelet},
		{fixtures.KubeProxy121, "node-a:10249", "/metrics", proto.SourceKubeProxy},
	} {
		series := captureSeries(t, c.file, millis, "job", "e2e", "instance", c.instance, "metrics_path", c.path)
		e.publishScrape(t, enrichedSubject("node-a", c.source), millis, series)
		all = append(all, series...)
	}
	wantProm := expected(want(all, func(ls map[string]string) bool { return strings.HasPrefix(ls["__name__"], "container_") }))
	wantVM := expected(want(all, func(ls map[string]string) bool { return !strings.HasSuffix(ls["__name__"], "_bucket") }))
	if len(wantProm) == 0 || len(wantVM) == len(all) || len(wantVM) == 0 {
		t.Fatalf("bad test: %d series, %d for Prometheus, %d for VictoriaMetrics", len(all), len(wantProm), len(wantVM))
	}

	var gotProm, gotVM map[string]float64
	waitFor(t, 40*time.Second, "both backends to hold their routes' series", func() bool {
		gotProm = queryProm(t, prom, now)
		gotVM = exportVM(t, vm, millis)
		return len(gotProm) >= len(wantProm) && len(gotVM) >= len(wantVM)
	})
	compare(t, "Prometheus", gotProm, wantProm, 0)
	// VictoriaMetrics stores floats as decimals of 12 significant digits.
	compare(t, "VictoriaMetrics", gotVM, wantVM, 1e-11)
}

// expected keys series as the backends' answers are keyed.
func expected(series []prompb.TimeSeries) map[string]float64 {
	out := make(map[string]float64, len(series))
	for _, s := range series {
		m := map[string]string{}
		for _, l := range s.Labels {
			m[l.Name] = l.Value
		}
		out[promtest.SeriesKey(m)] = s.Samples[0].Value
	}
	return out
}

func queryProm(t *testing.T, prom *promtest.Prometheus, at time.Time) map[string]float64 {
	t.Helper()
	res, err := prom.Query(`{job="e2e"}`, at)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64, len(res))
	for _, s := range res {
		out[s.Key()] = s.Value
	}
	return out
}

func exportVM(t *testing.T, vm *vmtest.VictoriaMetrics, millis int64) map[string]float64 {
	t.Helper()
	res, err := vm.Export(`{job="e2e"}`)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64, len(res))
	for _, s := range res {
		if len(s.Timestamps) != 1 || s.Timestamps[0] != millis {
			t.Fatalf("VictoriaMetrics holds %s at %v, want one sample at %d", promtest.SeriesKey(s.Labels), s.Timestamps, millis)
		}
		out[promtest.SeriesKey(s.Labels)] = s.Values[0]
	}
	return out
}

// compare reports every series a backend lacks, holds beyond its route,
// or holds with another value (relative to tolerance).
func compare(t *testing.T, backend string, got, want map[string]float64, tolerance float64) {
	t.Helper()
	var missing, extra, wrong []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case g != w && !(math.IsNaN(g) && math.IsNaN(w)) && !(math.Abs(g-w) <= tolerance*math.Abs(w)):
			wrong = append(wrong, fmt.Sprintf("%s = %v, capture %v", k, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	for _, l := range []struct {
		what string
		keys []string
	}{{"lacks", missing}, {"holds beyond its route", extra}, {"holds a wrong value for", wrong}} {
		if len(l.keys) > 0 {
			slices.Sort(l.keys)
			t.Errorf("%s %s %d series (of %d expected), e.g. %v", backend, l.what, len(l.keys), len(want), l.keys[:min(3, len(l.keys))])
		}
	}
}
