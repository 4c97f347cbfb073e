package collector

import (
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

// TestCollectorPublishesEveryTarget scrapes a kubelet and a kube-proxy that
// serve real captures, and checks that every series of every capture
// reaches WEIR_RAW with its value, its timestamp and the target labels.
func TestCollectorPublishesEveryTarget(t *testing.T) {
	nc, js := startJetStream(t)

	// A fixed "now" makes the shifted cAdvisor timestamps known in advance.
	servedAt := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	now := func() time.Time { return servedAt }
	var (
		headersMu sync.Mutex
		headers   []http.Header
	)
	kubeletHandler := fixtures.Handler(fixtures.KubeletEndpoints, now)
	kubelet := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		headersMu.Lock()
		headers = append(headers, r.Header.Clone())
		headersMu.Unlock()
		kubeletHandler.ServeHTTP(w, r)
	}))
	t.Cleanup(kubelet.Close)
	var gzipServed atomic.Int64
	proxy := httptest.NewServer(gzipped(fixtures.Handler(fixtures.KubeProxyEndpoints, now), &gzipServed))
	t.Cleanup(proxy.Close)

	otherNode := targetAt(kubelet.URL+"/metrics/cadvisor", proto.SourceCadvisor, "node-b.example.com")
	otherNode.Job = "cadvisor"
	cfg := testConfig(
		targetAt(kubelet.URL+"/metrics", proto.SourceKubelet, ""),
		targetAt(kubelet.URL+"/metrics/cadvisor", proto.SourceCadvisor, ""),
		targetAt(kubelet.URL+"/metrics/resource", proto.SourceResource, ""),
		targetAt(kubelet.URL+"/metrics/probes", proto.SourceProbes, ""),
		targetAt(proxy.URL+"/metrics", proto.SourceKubeProxy, ""),
		otherNode,
	)
	// Every scrape must succeed: a second leaves room for the first parse
	// of two cAdvisor captures on a loaded machine.
	cfg.ScrapeInterval, cfg.ScrapeTimeout = time.Second, time.Second
	reg := prometheus.NewRegistry()
	_, stop := startCollector(t, cfg, newDeps(t, nc, js, reg, nil))

	type want struct {
		subject string
		file    string
		labels  map[string]string
	}
	host := func(u string) string { p, _ := url.Parse(u); return p.Host }
	wants := []want{
		{subjectOf("node-a", proto.SourceKubelet), fixtures.Kubelet121, map[string]string{"job": "kubelet", "instance": host(kubelet.URL), "metrics_path": "/metrics"}},
		{subjectOf("node-a", proto.SourceCadvisor), fixtures.Cadvisor135, map[string]string{"job": "kubelet", "instance": host(kubelet.URL), "metrics_path": "/metrics/cadvisor"}},
		{subjectOf("node-a", proto.SourceResource), fixtures.Resource121, map[string]string{"job": "kubelet", "instance": host(kubelet.URL), "metrics_path": "/metrics/resource"}},
		{subjectOf("node-a", proto.SourceProbes), fixtures.Probes, map[string]string{"job": "kubelet", "instance": host(kubelet.URL), "metrics_path": "/metrics/probes"}},
		{subjectOf("node-a", proto.SourceKubeProxy), fixtures.KubeProxy121, map[string]string{"job": "kube-proxy", "instance": host(proxy.URL), "metrics_path": "/metrics"}},
		{subjectOf("node-b.example.com", proto.SourceCadvisor), fixtures.Cadvisor135, map[string]string{"job": "cadvisor", "instance": host(kubelet.URL), "metrics_path": "/metrics/cadvisor"}},
	}
	var subjects []string
	for _, w := range wants {
		subjects = append(subjects, w.subject)
	}
	if want := "weir.raw.test-cluster.node-b%2Eexample%2Ecom.cadvisor"; subjects[5] != want {
		t.Fatalf("node subject token not escaped: %s, want %s", subjects[5], want)
	}
	bySubject := waitForScrapes(t, js, eachHas(1, nil, subjects...))
	stop()

	for _, w := range wants {
		t.Run(w.subject, func(t *testing.T) {
			s := bySubject[w.subject][0]
			subj, err := proto.ParseSubject(s.subject)
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			for i, c := range s.chunks {
				if got, want := c.header.Get(proto.HeaderMsgID), proto.MsgID(subj, s.millis, i); got != want {
					t.Errorf("chunk %d: Nats-Msg-Id %q, want %q", i, got, want)
				}
				if c.meta.Encoding != proto.DefaultEncoding.Name() {
					t.Errorf("chunk %d: encoding %q", i, c.meta.Encoding)
				}
				if want := fmt.Sprintf("%d/%d", i, len(s.chunks)); c.header.Get(proto.HeaderChunk) != want {
					t.Errorf("chunk %d: %s %q, want %q", i, proto.HeaderChunk, c.header.Get(proto.HeaderChunk), want)
				}
				if c.meta.Samples != c.batch.Samples() {
					t.Errorf("chunk %d: header says %d samples, payload has %d", i, c.meta.Samples, c.batch.Samples())
				}
				total += c.meta.Samples
			}
			text := fixtures.NewShifted(fixtures.Read(w.file)).At(servedAt)
			series, samples := expectedSeries(t, text, s.millis, w.labels)
			if total != samples+3 {
				t.Errorf("%d samples published, want %d from the capture and 3 report samples", total, samples)
			}
			checkSeries(t, s, series, samples, w.labels, 1)
		})
	}

	// Explicit cAdvisor timestamps are kept: the newest is the time the
	// test server served the capture, not the scrape start.
	cadvisor := bySubject[subjects[1]][0]
	newest, explicit := int64(0), 0
	for _, ts := range cadvisor.series(t) {
		if ts.Timestamp != cadvisor.millis {
			newest = max(newest, ts.Timestamp)
			explicit++
		}
	}
	if newest != servedAt.UnixMilli() || explicit < 4000 {
		t.Errorf("%d cAdvisor samples keep their timestamp, the newest %d; want over 4000, the newest at the served time %d",
			explicit, newest, servedAt.UnixMilli())
	}

	headersMu.Lock()
	h := headers[0]
	headersMu.Unlock()
	if !strings.HasPrefix(h.Get("Accept"), "text/plain;version=0.0.4") {
		t.Errorf("Accept %q, want the Prometheus text format first", h.Get("Accept"))
	}
	if !strings.HasPrefix(h.Get("User-Agent"), "weir-collector/") {
		t.Errorf("User-Agent %q", h.Get("User-Agent"))
	}
	if h.Get("Accept-Encoding") != "gzip" {
		t.Errorf("Accept-Encoding %q, want gzip", h.Get("Accept-Encoding"))
	}
	if gzipServed.Load() == 0 {
		t.Error("kube-proxy never answered gzip-compressed")
	}

	for _, w := range wants[:5] {
		src := w.subject[strings.LastIndexByte(w.subject, '.')+1:]
		if v := metricValue(t, reg, "weir_collector_scrapes_total", map[string]string{"source": src}); v < 1 {
			t.Errorf("weir_collector_scrapes_total{source=%q} = %v", src, v)
		}
		for _, reason := range failureReasons {
			if v := metricValue(t, reg, "weir_collector_scrape_failures_total", map[string]string{"source": src, "reason": reason}); v != 0 {
				t.Errorf("weir_collector_scrape_failures_total{source=%q,reason=%q} = %v", src, reason, v)
			}
		}
		_, samples := expectedSeries(t, fixtures.Read(w.file), 0, nil)
		if v := metricValue(t, reg, "weir_collector_samples_scraped_total", map[string]string{"source": src}); v < float64(samples) {
			t.Errorf("weir_collector_samples_scraped_total{source=%q} = %v, want at least %d", src, v, samples)
		}
		if v := metricValue(t, reg, "weir_collector_samples_published_total", map[string]string{"source": src}); v < float64(samples+3) {
			t.Errorf("weir_collector_samples_published_total{source=%q} = %v, want at least %d", src, v, samples+3)
		}
		if v := metricValue(t, reg, "weir_collector_scrape_duration_seconds", map[string]string{"source": src}); v < 1 {
			t.Errorf("weir_collector_scrape_duration_seconds{source=%q} has %v observations", src, v)
		}
		if v := metricValue(t, reg, "weir_collector_publish_failures_total", map[string]string{"source": src}); v != 0 {
			t.Errorf("weir_collector_publish_failures_total{source=%q} = %v", src, v)
		}
	}
}

// TestFailedScrapesPublishUpZeroOnly checks that every way a scrape can fail
// publishes the three report series with up=0 and nothing of the body, is
// counted under its reason and logged once, and leaves a good target in the
// same collector alone.
func TestFailedScrapesPublishUpZeroOnly(t *testing.T) {
	nc, js := startJetStream(t)
	serve := func(h http.HandlerFunc) string {
		s := httptest.NewServer(h)
		t.Cleanup(s.Close)
		return s.URL
	}
	status := serve(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "kubelet is unwell", http.StatusInternalServerError)
	})
	// Valid lines first: a scrape must not publish what it read before the
	// error.
	garbage := serve(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(fixtures.Read(fixtures.Probes))
		_, _ = w.Write([]byte("prober_probe_total{container=\"x\" 1\n"))
	})
	slow := serve(func(_ http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})
	tooLarge := serve(fixtures.Handler(fixtures.KubeletEndpoints, time.Now).ServeHTTP)
	good := serve(fixtures.Handler(fixtures.KubeProxyEndpoints, time.Now).ServeHTTP)

	slowTarget := targetAt(slow+"/metrics/resource", proto.SourceResource, "")
	slowTarget.Timeout = 50 * time.Millisecond
	cfg := testConfig(
		targetAt(status+"/metrics", proto.SourceKubelet, ""),
		targetAt(garbage+"/metrics/probes", proto.SourceProbes, ""),
		slowTarget,
		targetAt(tooLarge+"/metrics/cadvisor", proto.SourceCadvisor, ""),
		targetAt(good+"/metrics", proto.SourceKubeProxy, ""),
	)
	reg := prometheus.NewRegistry()
	logs, log := newLogRecorder()
	c, err := New(cfg, newDeps(t, nc, js, reg, log))
	if err != nil {
		t.Fatal(err)
	}
	c.loops[3].scraper.maxBodyBytes = 100 << 10
	stop := runCollector(t, c)

	failing := []struct {
		source proto.Source
		reason string
		errHas string
	}{
		{proto.SourceKubelet, reasonStatus, "500 Internal Server Error"},
		{proto.SourceProbes, reasonParse, "parse: after 13 samples"},
		{proto.SourceResource, reasonTimeout, "deadline exceeded"},
		{proto.SourceCadvisor, reasonBodyTooLarge, "body too large"},
	}
	goodSubject := subjectOf("node-a", proto.SourceKubeProxy)
	subjects := []string{goodSubject}
	for _, f := range failing {
		subjects = append(subjects, subjectOf("node-a", f.source))
	}
	// Three scrapes each, so that the log shows the throttling.
	bySubject := waitForScrapes(t, js, eachHas(3, nil, subjects...))
	stop()

	for _, f := range failing {
		t.Run(string(f.source), func(t *testing.T) {
			for _, s := range bySubject[subjectOf("node-a", f.source)] {
				if len(s.chunks) != 1 || len(s.chunks[0].batch.Series) != 3 {
					t.Fatalf("failed scrape published %d chunks, first with %d series; want 1 chunk with the 3 report series",
						len(s.chunks), len(s.chunks[0].batch.Series))
				}
				if v := upValue(t, s); v != 0 {
					t.Fatalf("up = %v, want 0", v)
				}
			}
			if v := metricValue(t, reg, "weir_collector_scrape_failures_total", map[string]string{"source": string(f.source), "reason": f.reason}); v < 3 {
				t.Errorf("weir_collector_scrape_failures_total{reason=%q} = %v, want at least 3", f.reason, v)
			}
			for _, other := range failureReasons {
				if other == f.reason {
					continue
				}
				if v := metricValue(t, reg, "weir_collector_scrape_failures_total", map[string]string{"source": string(f.source), "reason": other}); v != 0 {
					t.Errorf("weir_collector_scrape_failures_total{reason=%q} = %v, want 0", other, v)
				}
			}
			if v := metricValue(t, reg, "weir_collector_samples_scraped_total", map[string]string{"source": string(f.source)}); v != 0 {
				t.Errorf("weir_collector_samples_scraped_total = %v, want 0", v)
			}
			lines := logs.find("scrape failed", map[string]string{"source": string(f.source), "reason": f.reason, "cluster": testCluster, "node": "node-a"})
			if len(lines) != 1 {
				t.Fatalf("%d \"scrape failed\" log lines, want 1 for a failure repeated within a minute", len(lines))
			}
			if e, _ := lines[0]["err"].(string); !strings.Contains(e, f.errHas) {
				t.Errorf("logged err %q does not contain %q", e, f.errHas)
			}
			if u, _ := lines[0]["url"].(string); !strings.HasPrefix(u, "http://127.0.0.1:") {
				t.Errorf("logged url %q", u)
			}
		})
	}

	for _, s := range bySubject[goodSubject] {
		if v := upValue(t, s); v != 1 {
			t.Fatalf("good target: up = %v, want 1", v)
		}
		_, samples := expectedSeries(t, fixtures.Read(fixtures.KubeProxy121), 0, nil)
		if got := len(s.series(t)); got != samples+3 {
			t.Fatalf("good target: %d series, want %d", got, samples+3)
		}
	}
}

// TestBearerTokenFileIsReadEveryScrape starts without the token file, then
// writes one token, then rotates it, and checks that the collector fails,
// recovers and follows the rotation.
func TestBearerTokenFileIsReadEveryScrape(t *testing.T) {
	nc, js := startJetStream(t)
	var (
		mu   sync.Mutex
		seen []string
	)
	valid := map[string]bool{"token-1": true, "token-2": true}
	probes := fixtures.Handler(fixtures.KubeletEndpoints, time.Now)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !valid[token] {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		if len(seen) == 0 || seen[len(seen)-1] != token {
			seen = append(seen, token)
		}
		mu.Unlock()
		probes.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tokenFile := filepath.Join(t.TempDir(), "token")
	tg := targetAt(srv.URL+"/metrics/probes", proto.SourceProbes, "")
	tg.BearerTokenFile = tokenFile
	reg := prometheus.NewRegistry()
	logs, log := newLogRecorder()
	_, stop := startCollector(t, testConfig(tg), newDeps(t, nc, js, reg, log))
	subject := subjectOf("node-a", proto.SourceProbes)

	failuresOf := func(reason string) float64 {
		return metricValue(t, reg, "weir_collector_scrape_failures_total", map[string]string{"source": "probes", "reason": reason})
	}
	waitUntil(t, "a failure for the missing token file", func() bool { return failuresOf(reasonToken) >= 1 })

	writeFileAtomic(t, tokenFile, "token-1\n")
	waitUntil(t, "token-1 used", func() bool { mu.Lock(); defer mu.Unlock(); return slices.Contains(seen, "token-1") })
	writeFileAtomic(t, tokenFile, "token-2")
	rotatedAt := time.Now().UnixMilli()
	waitUntil(t, "token-2 used", func() bool { mu.Lock(); defer mu.Unlock(); return slices.Contains(seen, "token-2") })
	waitForScrapes(t, js, eachHas(1, func(s *scrapeMsgs) bool { return s.millis > rotatedAt && upValue(t, s) == 1 }, subject))
	stop()

	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, []string{"token-1", "token-2"}) {
		t.Errorf("tokens seen in order %v, want token-1 then token-2", seen)
	}
	if v := failuresOf(reasonStatus); v != 0 {
		t.Errorf("%v scrapes sent a token the server refused", v)
	}
	if len(logs.find("scrape failed", map[string]string{"reason": reasonToken})) != 1 {
		t.Error("missing token file not logged once")
	}
	if len(logs.find("scrape recovered", nil)) != 1 {
		t.Error("recovery not logged")
	}
}

// TestTLS checks that an https target is trusted with its CA file, and that
// without it, or with a CA file holding no certificate, the scrape fails as
// tls instead of falling back to anything else.
func TestTLS(t *testing.T) {
	nc, js := startJetStream(t)
	srv := httptest.NewTLSServer(fixtures.Handler(fixtures.KubeletEndpoints, time.Now))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	withCA := targetAt(srv.URL+"/metrics/probes", proto.SourceProbes, "with-ca")
	withCA.TLS.CAFile = caFile
	badCA := targetAt(srv.URL+"/metrics/probes", proto.SourceProbes, "bad-ca")
	badCA.TLS.CAFile = notPEM
	insecure := targetAt(srv.URL+"/metrics/probes", proto.SourceProbes, "insecure")
	insecure.TLS.InsecureSkipVerify = true
	noCA := targetAt(srv.URL+"/metrics/probes", proto.SourceProbes, "no-ca")

	reg := prometheus.NewRegistry()
	logs, log := newLogRecorder()
	cfg := testConfig(withCA, badCA, insecure, noCA)
	// A handshake of a loaded CI machine can outlast the tests' 200 ms:
	// the failure would then be a timeout, logged as such and not again.
	cfg.ScrapeInterval, cfg.ScrapeTimeout = 2*time.Second, 2*time.Second
	_, stop := startCollector(t, cfg, newDeps(t, nc, js, reg, log))
	nodes := []string{"with-ca", "bad-ca", "insecure", "no-ca"}
	var subjects []string
	for _, n := range nodes {
		subjects = append(subjects, subjectOf(n, proto.SourceProbes))
	}
	bySubject := waitForScrapes(t, js, eachHas(1, nil, subjects...))
	stop()

	wantUp := map[string]float64{"with-ca": 1, "bad-ca": 0, "insecure": 1, "no-ca": 0}
	for i, n := range nodes {
		if v := upValue(t, bySubject[subjects[i]][0]); v != wantUp[n] {
			t.Errorf("%s: up = %v, want %v", n, v, wantUp[n])
		}
	}
	if v := metricValue(t, reg, "weir_collector_scrape_failures_total", map[string]string{"source": "probes", "reason": reasonTLS}); v < 2 {
		t.Errorf("tls failures = %v, want at least 2", v)
	}
	for node, errHas := range map[string]string{"no-ca": "certificate signed by unknown authority", "bad-ca": "no PEM certificate"} {
		lines := logs.find("scrape failed", map[string]string{"node": node, "reason": reasonTLS})
		if len(lines) == 0 {
			t.Errorf("%s: failure not logged", node)
			continue
		}
		if e, _ := lines[0]["err"].(string); !strings.Contains(e, errHas) {
			t.Errorf("%s: logged err %q does not contain %q", node, e, errHas)
		}
	}
}

// TestChunking checks that a cAdvisor scrape larger than the message limit
// is split into chunks, each within the limit and with its own message id,
// whose union is the whole scrape; the limit is the smaller of
// max_message_bytes and the server's max_payload.
func TestChunking(t *testing.T) {
	tests := []struct {
		name            string
		maxMessageBytes int
		maxPayload      int
	}{
		{"max_message_bytes", 8 << 10, 0},
		{"server max_payload", 1 << 20, 12 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc, js := startJetStream(t)
			servedAt := time.Now().Truncate(time.Millisecond)
			srv := httptest.NewServer(fixtures.Handler(fixtures.KubeletEndpoints, func() time.Time { return servedAt }))
			t.Cleanup(srv.Close)
			cfg := testConfig(targetAt(srv.URL+"/metrics/cadvisor", proto.SourceCadvisor, ""))
			cfg.MaxMessageBytes = config.ByteSize(tt.maxMessageBytes)
			d := newDeps(t, nc, js, prometheus.NewRegistry(), nil)
			d.MaxPayload = tt.maxPayload
			_, stop := startCollector(t, cfg, d)
			subject := subjectOf("node-a", proto.SourceCadvisor)
			bySubject := waitForScrapes(t, js, eachHas(1, nil, subject))
			stop()

			limit := tt.maxMessageBytes
			if tt.maxPayload > 0 {
				limit = min(limit, tt.maxPayload)
			}
			s := bySubject[subject][0]
			if len(s.chunks) < 3 {
				t.Fatalf("%d chunks, want the scrape split in several", len(s.chunks))
			}
			ids := map[string]bool{}
			for i, c := range s.chunks {
				id := c.header.Get(proto.HeaderMsgID)
				if ids[id] {
					t.Errorf("chunk %d repeats message id %s", i, id)
				}
				ids[id] = true
				headers := 0
				for k, vs := range c.header {
					for _, v := range vs {
						headers += len(k) + len(v) + 4
					}
				}
				if c.size+headers > limit {
					t.Errorf("chunk %d: %d bytes of payload and about %d of headers, limit %d", i, c.size, headers, limit)
				}
			}
			tl := map[string]string{"job": "kubelet", "instance": strings.TrimPrefix(srv.URL, "http://"), "metrics_path": "/metrics/cadvisor"}
			want, samples := expectedSeries(t, fixtures.NewShifted(fixtures.Read(fixtures.Cadvisor135)).At(servedAt), s.millis, tl)
			checkSeries(t, s, want, samples, tl, 1)
		})
	}
}

// TestPublishFailuresAreCounted publishes where no stream listens: JetStream
// refuses every message, and the collector counts and logs it.
func TestPublishFailuresAreCounted(t *testing.T) {
	nc, js := natstest.Connect(t, natstest.Run(t)) // no streams
	srv := httptest.NewServer(fixtures.Handler(fixtures.KubeletEndpoints, time.Now))
	t.Cleanup(srv.Close)
	reg := prometheus.NewRegistry()
	logs, log := newLogRecorder()
	_, stop := startCollector(t, testConfig(targetAt(srv.URL+"/metrics/probes", proto.SourceProbes, "")), newDeps(t, nc, js, reg, log))
	failures := func() float64 {
		return metricValue(t, reg, "weir_collector_publish_failures_total", map[string]string{"source": "probes"})
	}
	waitUntil(t, "a publish failure", func() bool { return failures() >= 1 })
	stop()
	if v := metricValue(t, reg, "weir_collector_samples_published_total", map[string]string{"source": "probes"}); v != 0 {
		t.Errorf("weir_collector_samples_published_total = %v, want 0", v)
	}
	if v := metricValue(t, reg, "weir_collector_scrapes_total", map[string]string{"source": "probes"}); v < 1 {
		t.Errorf("weir_collector_scrapes_total = %v", v)
	}
	lines := logs.find("publish failed", map[string]string{"source": "probes"})
	if len(lines) != 1 {
		t.Fatalf("%d \"publish failed\" lines, want 1", len(lines))
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 15s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeFileAtomic replaces a file the way a kubelet rotates a projected
// token: write aside, then rename.
func writeFileAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestNativeHistogramAsClassic: a target answering in the protobuf format
// with a native histogram has it published as its classic series, as
// Prometheus does with native histograms off: the batch carries floats.
func TestNativeHistogramAsClassic(t *testing.T) {
	exposed := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "latency_seconds", Help: "h", Buckets: []float64{0.1, 1}, NativeHistogramBucketFactor: 1.1})
	exposed.MustRegister(h)
	h.Observe(0.3)
	protoFormat := expfmt.NewFormat(expfmt.TypeProtoDelim)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mfs, err := exposed.Gather()
		if err != nil {
			t.Error(err)
			return
		}
		w.Header().Set("Content-Type", string(protoFormat))
		enc := expfmt.NewEncoder(w, protoFormat)
		for _, mf := range mfs {
			if err := enc.Encode(mf); err != nil {
				t.Error(err)
			}
		}
	}))
	defer srv.Close()

	nc, js := startJetStream(t)
	_, log := newLogRecorder()
	_, stop := startCollector(t, testConfig(targetAt(srv.URL+"/metrics", proto.SourceKubelet, "node-a")), newDeps(t, nc, js, prometheus.NewRegistry(), log))
	subject := subjectOf("node-a", proto.SourceKubelet)
	bySubject := waitForScrapes(t, js, eachHas(1, nil, subject))
	stop()
	got := map[string]float64{}
	for key, s := range bySubject[subject][0].series(t) {
		if strings.Contains(key, "latency_seconds") {
			got[key] = s.Value
		}
	}
	instance := strings.TrimPrefix(srv.URL, "http://")
	series := func(name, le string) string {
		if le != "" {
			le = `, le="` + le + `"`
		}
		return `{__name__="` + name + `", instance="` + instance + `", job="kubelet"` + le + `, metrics_path="/metrics"}`
	}
	want := map[string]float64{
		series("latency_seconds_bucket", "0.1"):  0,
		series("latency_seconds_bucket", "1.0"):  1, // le normalised as Prometheus does
		series("latency_seconds_bucket", "+Inf"): 1,
		series("latency_seconds_count", ""):      1,
		series("latency_seconds_sum", ""):        0.3,
	}
	if !maps.Equal(got, want) {
		t.Errorf("histogram series %v, want %v", got, want)
	}
}
