package collector

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/value"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// seriesByName returns the value and timestamp of every series named name
// in a scrape, keyed by its labels.
func seriesByName(t *testing.T, s *scrapeMsgs, name string) map[string][2]float64 {
	t.Helper()
	out := map[string][2]float64{}
	for k, smp := range s.series(t) {
		if strings.HasPrefix(k, `{__name__="`+name+`"`) {
			out[k] = [2]float64{smp.Value, float64(smp.Timestamp)}
		}
	}
	return out
}

// TestSummaryAndProxyHealthSources scrapes the real 1.35 /stats/summary
// and a kube-proxy /healthz, healthy and then not, end to end to JetStream.
func TestSummaryAndProxyHealthSources(t *testing.T) {
	nc, js := startJetStream(t)
	var unhealthy atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats/summary", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(fixtures.Read(fixtures.Summary135))
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		now := time.Now()
		w.Header().Set("Content-Type", "application/json")
		if unhealthy.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		// kube-proxy's own format: Go's time.String() in fmt's %q.
		fmt.Fprintf(w, `{"lastUpdated": %q,"currentTime": %q, "nodeEligible": true}`, now.Add(-90*time.Second).String(), now.String())
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	cfg := slowerTestConfig()
	cfg.Targets = append(cfg.Targets,
		targetAt(srv.URL+"/stats/summary", proto.SourceSummary, ""),
		targetAt(srv.URL+"/healthz", proto.SourceKubeProxyHealth, ""),
	)
	_, stop := startCollector(t, cfg, newDeps(t, nc, js, prometheus.NewRegistry(), nil))
	sumSubj, healthSubj := subjectOf("node-a", proto.SourceSummary), subjectOf("node-a", proto.SourceKubeProxyHealth)
	upOne := func(s *scrapeMsgs) bool { return upValue(t, s) == 1 }
	bySubject := waitForScrapes(t, js, eachHas(1, upOne, sumSubj, healthSubj))
	firstUp := func(subj string) *scrapeMsgs {
		for _, s := range bySubject[subj] {
			if upOne(s) {
				return s
			}
		}
		return nil
	}

	s := firstUp(sumSubj)
	avail := seriesByName(t, s, "node_fs_available_bytes")
	k := `{__name__="node_fs_available_bytes", filesystem="nodefs", instance="` + srv.Listener.Addr().String() + `", job="kubelet", metrics_path="/stats/summary"}`
	want := [2]float64{821203210240, float64(time.Date(2026, 6, 26, 10, 14, 35, 0, time.UTC).UnixMilli())}
	if avail[k] != want {
		t.Errorf("node_fs_available_bytes = %v, want %v (value and time from the JSON); have %v", avail[k], want, avail)
	}
	if n := len(seriesByName(t, s, "container_cpu_usage_seconds_total")); n < 17 {
		t.Errorf("%d container_cpu_usage_seconds_total series, want one per container", n)
	}

	h := firstUp(healthSubj)
	for _, v := range seriesByName(t, h, proxyAgeMetric) {
		if v[0] != 90 {
			t.Errorf("%s = %v, want 90", proxyAgeMetric, v[0])
		}
	}
	healthy := func(s *scrapeMsgs) float64 {
		for _, v := range seriesByName(t, s, proxyHealthyMetric) {
			return v[0]
		}
		return -1
	}
	if v := healthy(h); v != 1 {
		t.Errorf("%s = %v, want 1", proxyHealthyMetric, v)
	}

	// A 503 is kube-proxy saying it is unhealthy: the scrape worked.
	unhealthy.Store(true)
	start := time.Now().UnixMilli()
	bySubject = waitForScrapes(t, js, eachHas(1, func(s *scrapeMsgs) bool { return s.millis > start+50 }, healthSubj))
	stop()
	for _, s := range bySubject[healthSubj] {
		if s.millis > start+50 {
			if up, v := upValue(t, s), healthy(s); up != 1 || v != 0 {
				t.Errorf("unhealthy kube-proxy: up = %v, %s = %v; want 1 and 0", up, proxyHealthyMetric, v)
			}
		}
	}
}

// TestStalenessAndLimitsEndToEnd: a series that disappears gets a
// staleness marker, a failing target marks all its series stale, and a
// target over its sample_limit fails alone, counted by reason.
func TestStalenessAndLimitsEndToEnd(t *testing.T) {
	nc, js := startJetStream(t)
	var phase atomic.Int32
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		switch phase.Load() {
		case 0:
			fmt.Fprint(w, "kept 1\ngoing 2\n")
		case 1:
			fmt.Fprint(w, "kept 1\n")
		default:
			http.Error(w, "down", http.StatusInternalServerError)
		}
	})
	mux.Handle("GET /metrics/", fixtures.Handler(fixtures.KubeletEndpoints, time.Now))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	limited := targetAt(srv.URL+"/metrics/cadvisor", proto.SourceCadvisor, "")
	limited.SampleLimit = 1000
	cfg := slowerTestConfig()
	cfg.Targets = []TargetConfig{
		targetAt(srv.URL+"/metrics", proto.SourceKubelet, ""),
		limited,
		targetAt(srv.URL+"/metrics/probes", proto.SourceProbes, ""),
	}
	reg := prometheus.NewRegistry()
	logs, log := newLogRecorder()
	_, stop := startCollector(t, cfg, newDeps(t, nc, js, reg, log))
	kubelet := subjectOf("node-a", proto.SourceKubelet)

	staleIn := func(s *scrapeMsgs) []string {
		var out []string
		for k, smp := range s.series(t) {
			if value.IsStaleNaN(smp.Value) {
				out = append(out, k)
			}
		}
		return out
	}
	waitForScrapes(t, js, eachHas(1, nil, kubelet))
	phase.Store(1)
	by := waitForScrapes(t, js, eachHas(1, func(s *scrapeMsgs) bool { return len(staleIn(s)) > 0 }, kubelet))
	for _, s := range by[kubelet] {
		if st := staleIn(s); len(st) > 0 {
			if len(st) != 1 || !strings.HasPrefix(st[0], `{__name__="going"`) || upValue(t, s) != 1 {
				t.Fatalf("scrape after going disappeared: stale %v, up %v; want going alone, up 1", st, upValue(t, s))
			}
			break
		}
	}
	phase.Store(2)
	by = waitForScrapes(t, js, eachHas(1, func(s *scrapeMsgs) bool { return upValue(t, s) == 0 }, kubelet))
	stop()
	failed := 0
	for _, s := range by[kubelet] {
		if upValue(t, s) != 0 {
			continue
		}
		st := staleIn(s)
		if failed == 0 && (len(st) != 1 || !strings.HasPrefix(st[0], `{__name__="kept"`)) {
			t.Errorf("first failed scrape: stale %v, want kept", st)
		}
		if failed > 0 && len(st) != 0 {
			t.Errorf("failed scrape %d marks %v stale again", failed, st)
		}
		failed++
	}

	// The cAdvisor target is over its sample_limit; probes lose nothing.
	by = waitForScrapes(t, js, eachHas(1, nil, subjectOf("node-a", proto.SourceCadvisor), subjectOf("node-a", proto.SourceProbes)))
	for _, s := range by[subjectOf("node-a", proto.SourceCadvisor)] {
		if up := upValue(t, s); up != 0 {
			t.Fatalf("cadvisor over sample_limit: up = %v", up)
		}
	}
	for _, s := range by[subjectOf("node-a", proto.SourceProbes)] {
		if up, n := upValue(t, s), len(s.series(t)); up != 1 || n != 13+3 {
			t.Fatalf("probes: up = %v with %d series, want 1 with 16", up, n)
		}
	}
	if v := metricValue(t, reg, "weir_collector_scrape_failures_total", map[string]string{"source": "cadvisor", "reason": reasonSampleLimit}); v < 1 {
		t.Errorf("sample_limit failures = %v", v)
	}
	lines := logs.find("scrape failed", map[string]string{"source": "cadvisor", "reason": reasonSampleLimit})
	if len(lines) == 0 {
		t.Fatal("sample_limit failure not logged")
	}
	if e, _ := lines[0]["err"].(string); !strings.Contains(e, "sample_limit exceeded: more than 1000 samples") {
		t.Errorf("logged err %q does not name the limit", e)
	}
}

// TestDuplicateSamplesAreCountedAndLogged: samples that
// metric_relabel_configs merge into a series already in the scrape are
// published once, counted by source, and logged with the target.
func TestDuplicateSamplesAreCountedAndLogged(t *testing.T) {
	nc, js := startJetStream(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "a{id=\"x\"} 1\na{id=\"y\"} 2\na{id=\"z\"} 3\n")
	}))
	t.Cleanup(srv.Close)
	tc := targetAt(srv.URL+"/metrics", proto.SourceKubelet, "")
	if err := config.Decode("weir.yaml", []byte("metric_relabel_configs:\n  - regex: id\n    action: labeldrop\n"), &tc.ScrapeOptions); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	logs, log := newLogRecorder()
	_, stop := startCollector(t, testConfig(tc), newDeps(t, nc, js, reg, log))
	kubelet := subjectOf("node-a", proto.SourceKubelet)
	by := waitForScrapes(t, js, eachHas(1, nil, kubelet))
	stop()
	for _, s := range by[kubelet] {
		series := s.series(t) // fails on a series twice
		if smp, ok := series[`{__name__="a", instance="`+strings.TrimPrefix(srv.URL, "http://")+`", job="kubelet", metrics_path="/metrics"}`]; !ok || smp.Value != 1 {
			t.Fatalf("a = %v (%v), want the first sample, 1; series %v", smp.Value, ok, series)
		}
	}
	// A busy machine may fail a scrape, which counts no duplicates.
	scraped := metricValue(t, reg, "weir_collector_scrapes_total", map[string]string{"source": "kubelet"})
	for _, r := range failureReasons {
		scraped -= metricValue(t, reg, "weir_collector_scrape_failures_total", map[string]string{"source": "kubelet", "reason": r})
	}
	if v := metricValue(t, reg, "weir_collector_samples_duplicate_total", map[string]string{"source": "kubelet"}); v != 2*scraped || v == 0 {
		t.Errorf("weir_collector_samples_duplicate_total = %v after %v successful scrapes, want 2 a scrape", v, scraped)
	}
	lines := logs.find("samples dropped: a sample of their series (after metric_relabel_configs) came earlier in the same scrape", map[string]string{"node": "node-a", "source": "kubelet", "url": srv.URL + "/metrics"})
	if len(lines) != 1 {
		t.Fatalf("%d lines about the duplicates, want 1 for the target (at most one a minute)", len(lines))
	}
	if d, _ := lines[0]["dropped"].(float64); d != 2 {
		t.Errorf("logged dropped = %v, want 2", lines[0]["dropped"])
	}
}
