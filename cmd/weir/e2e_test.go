package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/promtest"
)

// TestEndToEndIntoPrometheus runs `weir all` against a test kubelet serving
// the real 1.35 cAdvisor capture and a test kube-proxy serving the real
// 1.21 capture, writing into a real Prometheus, and checks through
// Prometheus's query API that every series of both captures arrived with
// its labels and value.
func TestEndToEndIntoPrometheus(t *testing.T) {
	prom := promtest.Start(t)
	kubelet := httptest.NewServer(fixtures.Handler(fixtures.KubeletEndpoints, time.Now))
	defer kubelet.Close()
	proxy := httptest.NewServer(fixtures.Handler(fixtures.KubeProxyEndpoints, time.Now))
	defer proxy.Close()

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "weir.yaml")
	writeFile(t, cfgPath, fmt.Sprintf(`cluster: e2e
node: node-a
data_dir: %s
listen_address: 127.0.0.1:0
nats:
  embedded: {port: -1}
collector:
  scrape_interval: 1s
  scrape_timeout: 1s
  targets:
    - url: %s/metrics/cadvisor
      source: cadvisor
    - url: %s/metrics
      source: kubeproxy
sinks:
  - name: prometheus
    stream: raw    # no router in this pipeline
    url: %s
`, dir, kubelet.URL, proxy.URL, prom.WriteURL))

	want := map[string]float64{}
	captureSeries(t, want, fixtures.Cadvisor135, map[string]string{"job": "kubelet", "instance": hostPort(t, kubelet.URL), "metrics_path": "/metrics/cadvisor"})
	captureSeries(t, want, fixtures.KubeProxy121, map[string]string{"job": "kube-proxy", "instance": hostPort(t, proxy.URL), "metrics_path": "/metrics"})

	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	var stderr bytes.Buffer
	go func() { exit <- run(ctx, []string{"all", "--config", cfgPath}, io.Discard, &stderr) }()
	defer func() {
		cancel()
		select {
		case code := <-exit:
			if code != 0 {
				t.Errorf("weir all exited %d; stderr:\n%s", code, stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Error("weir all did not stop within 30s of its context ending")
		}
	}()

	var got map[string]float64
	deadline := time.Now().Add(90 * time.Second)
	for {
		got = queryAll(t, prom)
		if missing := countMissing(want, got); missing == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("after 90s Prometheus still lacks %d of %d series; weir stderr:\n%s", missing, len(want), stderr.String())
		}
		select {
		case code := <-exit:
			t.Fatalf("weir all exited %d early; stderr:\n%s", code, stderr.String())
		case <-time.After(time.Second):
		}
	}
	for key, w := range want {
		g := got[key]
		if g != w && !(math.IsNaN(g) && math.IsNaN(w)) {
			t.Errorf("%s = %v in Prometheus, %v in the capture", key, g, w)
		}
	}
	for _, job := range []string{"kubelet", "kube-proxy"} {
		up, err := prom.Query(fmt.Sprintf(`up{job=%q}`, job), time.Now())
		if err != nil || len(up) != 1 || up[0].Value != 1 {
			t.Errorf("up{job=%q} = %v (%v), want one series with value 1", job, up, err)
		}
	}
	if extra := len(got) - len(want); extra != 6 { // up, scrape_duration_seconds, scrape_samples_scraped per target
		t.Errorf("Prometheus holds %d series beyond the captures, want 6 (up and scrape_* of two targets)", extra)
	}
}

// captureSeries parses a capture with Prometheus's own parser and adds its
// series, with the target labels a scrape adds, to out. Labels with empty
// values are dropped, as a Prometheus scrape drops them.
func captureSeries(t *testing.T, out map[string]float64, file string, target map[string]string) {
	t.Helper()
	p, err := textparse.New(fixtures.Read(file), "text/plain; version=0.0.4", labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if e != textparse.EntrySeries {
			continue
		}
		_, _, v := p.Series()
		var ls labels.Labels
		p.Labels(&ls)
		m := ls.Map()
		for name, value := range m {
			if value == "" {
				delete(m, name)
			}
		}
		for name, value := range target {
			if _, ok := m[name]; ok {
				t.Fatalf("%s has a %s label; the expectation would need exported_%s", file, name, name)
			}
			m[name] = value
		}
		out[promtest.SeriesKey(m)] = v
	}
}

func queryAll(t *testing.T, prom *promtest.Prometheus) map[string]float64 {
	t.Helper()
	res, err := prom.Query(`{job=~"kubelet|kube-proxy"}`, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64, len(res))
	for _, s := range res {
		out[s.Key()] = s.Value
	}
	return out
}

func countMissing(want, got map[string]float64) int {
	n := 0
	for k := range want {
		if _, ok := got[k]; !ok {
			n++
		}
	}
	return n
}

func hostPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
