package collector

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/value"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

func onlySources(srcs ...proto.Source) Sources {
	var s Sources
	off := false
	for _, src := range proto.Sources {
		s.Get(src).Enabled = &off
	}
	for _, src := range srcs {
		s.Get(src).Enabled = nil
	}
	return s
}

func TestKubeletPortFromNode(t *testing.T) {
	kube, _ := newNodeClient(t, node("with-port", 11250), node("without", 0))
	for name, want := range map[string]int{"with-port": 11250, "without": 10250} {
		got, err := kubeletPort(t.Context(), kube, name)
		if err != nil || got != want {
			t.Errorf("%s: port %d, %v; want %d", name, got, err, want)
		}
	}
	if _, err := kubeletPort(t.Context(), kube, "missing"); err == nil || !strings.Contains(err.Error(), `get node "missing"`) {
		t.Errorf("missing node: err = %v", err)
	}
}

// kubeletServer serves the kubelet captures over TLS, checking the bearer
// token, and returns its URL and a CA file that trusts it.
func kubeletServer(t *testing.T, token string) (*httptest.Server, string) {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/metrics", fixtures.Handler(fixtures.KubeletEndpoints, time.Now))
	mux.Handle("/metrics/", fixtures.Handler(fixtures.KubeletEndpoints, time.Now))
	mux.HandleFunc("GET /stats/summary", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write(fixtures.Read(fixtures.Summary135))
	})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, caFile
}

// TestNodeMode runs the DaemonSet way: node name and host IP from the
// downward API, the kubelet port from the Node object, the service-account
// token and CA.
func TestNodeMode(t *testing.T) {
	nc, js := startJetStream(t)
	srv, caFile := kubeletServer(t, "sa-token")
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFileAtomic(t, tokenFile, "sa-token\n")

	cfg := slowerTestConfig()
	cfg.Sources = onlySources(proto.SourceKubelet, proto.SourceCadvisor, proto.SourceResource, proto.SourceProbes, proto.SourceSummary)
	cfg.Discovery.Mode = ModeNode
	cfg.Discovery.BearerTokenFile = tokenFile
	cfg.Discovery.TLS = TLSConfig{CAFile: caFile}
	d := newDeps(t, nc, js, prometheus.NewRegistry(), nil)
	d.Node, d.HostIP = "kind-worker", "127.0.0.1"
	d.Nodes, _ = newNodeClient(t, node("kind-worker", int32(port)), node("other", 1))
	_, stop := startCollector(t, cfg, d)

	var subjects []string
	for _, s := range []proto.Source{proto.SourceKubelet, proto.SourceCadvisor, proto.SourceResource, proto.SourceProbes, proto.SourceSummary} {
		subjects = append(subjects, subjectOf("kind-worker", s))
	}
	// A scrape that worked on every subject, through token and CA (a
	// loaded machine may time out the first ones).
	upOne := func(s *scrapeMsgs) bool { return upValue(t, s) == 1 }
	by := waitForScrapes(t, js, eachHas(1, upOne, subjects...))
	stop()
	for _, subj := range subjects {
		for _, s := range by[subj] {
			if !upOne(s) {
				continue
			}
			for k := range s.series(t) {
				if !strings.Contains(k, `instance="127.0.0.1:`+u.Port()+`"`) {
					t.Fatalf("%s: series %s not from the discovered kubelet address", subj, k)
				}
			}
			break
		}
	}
	if n := len(by); n != len(subjects) {
		t.Errorf("published to %d subjects, want %d: disabled sources must not be scraped", n, len(subjects))
	}
}

// TestNodeModeIsDiscoveredOnceTheNodeIsRead: a collector that cannot read
// its Node (no RBAC, no API server, a node not registered yet) scrapes
// nothing and must not report ready, or a node would go unmonitored with
// every pod of the DaemonSet ready.
func TestNodeModeIsDiscoveredOnceTheNodeIsRead(t *testing.T) {
	nc, js := startJetStream(t)
	cfg := testConfig()
	cfg.Sources = onlySources(proto.SourceProbes)
	cfg.Discovery.Mode = ModeNode
	d := newDeps(t, nc, js, prometheus.NewRegistry(), nil)
	d.Node, d.HostIP = "kind-worker", "127.0.0.1"
	var api *nodeAPI
	d.Nodes, api = newNodeClient(t, node("other", 1))
	var discovered atomic.Bool
	d.Discovered = func() { discovered.Store(true) }
	startCollector(t, cfg, d)

	time.Sleep(1500 * time.Millisecond) // the first lookup and its retry
	if discovered.Load() {
		t.Fatal("discovered while the collector's Node cannot be read")
	}
	api.add(node("kind-worker", 10250))
	for deadline := time.Now().Add(10 * time.Second); !discovered.Load(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not discovered within 10 s of the Node appearing")
		}
	}
}

// TestNodeModeRejectsAnUntrustedKubelet: the default verifies the kubelet
// against the configured CA; a kubelet it does not sign fails the scrape
// with reason tls, and nothing falls back to an unverified connection.
func TestNodeModeRejectsAnUntrustedKubelet(t *testing.T) {
	nc, js := startJetStream(t)
	srv, _ := kubeletServer(t, "sa-token")
	otherCA := otherCAFile(t)
	u, _ := url.Parse(srv.URL)
	port, _ := strconv.Atoi(u.Port())
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFileAtomic(t, tokenFile, "sa-token")

	cfg := testConfig()
	cfg.Sources = onlySources(proto.SourceProbes)
	cfg.Discovery.Mode = ModeNode
	cfg.Discovery.BearerTokenFile = tokenFile
	cfg.Discovery.TLS = TLSConfig{CAFile: otherCA}
	reg := prometheus.NewRegistry()
	d := newDeps(t, nc, js, reg, nil)
	d.Node, d.HostIP = "kind-worker", "127.0.0.1"
	d.Nodes, _ = newNodeClient(t, node("kind-worker", int32(port)))
	_, stop := startCollector(t, cfg, d)
	subj := subjectOf("kind-worker", proto.SourceProbes)
	by := waitForScrapes(t, js, eachHas(2, nil, subj))
	stop()
	for _, s := range by[subj] {
		if up := upValue(t, s); up != 0 || len(s.series(t)) != 3 {
			t.Fatalf("untrusted kubelet: up = %v with %d series; want 0 with the 3 report series", up, len(s.series(t)))
		}
	}
	if v := metricValue(t, reg, "weir_collector_scrape_failures_total", map[string]string{"source": "probes", "reason": reasonTLS}); v < 2 {
		t.Errorf("tls failures = %v, want at least 2", v)
	}
}

// slowerTestConfig leaves TLS and the 1.4 MB cAdvisor capture time on a
// loaded machine.
func slowerTestConfig() Config {
	cfg := testConfig()
	cfg.ScrapeInterval, cfg.ScrapeTimeout = 500*time.Millisecond, 500*time.Millisecond
	return cfg
}

// otherCAFile writes a CA certificate that signed nothing the tests serve.
func otherCAFile(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other cluster CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "other-ca.crt")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCentralMode scrapes every node through the API server's node proxy,
// served here from the captures, and follows nodes as they are added and
// deleted: a deleted node's series are marked stale.
func TestCentralMode(t *testing.T) {
	nc, js := startJetStream(t)
	kubelet := fixtures.Handler(fixtures.KubeletEndpoints, time.Now)
	var mu sync.Mutex
	asked := map[string]bool{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/nodes/{node}/proxy/{path...}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer central-token" {
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		asked[r.PathValue("node")+"/"+r.PathValue("path")] = true
		mu.Unlock()
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + r.PathValue("path")
		kubelet.ServeHTTP(w, r2)
	})
	api := httptest.NewTLSServer(mux)
	t.Cleanup(api.Close)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFileAtomic(t, tokenFile, "central-token")

	cfg := slowerTestConfig()
	cfg.Sources = onlySources(proto.SourceCadvisor, proto.SourceProbes)
	cfg.Discovery.Mode = ModeCentral
	cfg.Discovery.BearerTokenFile = tokenFile
	cfg.Discovery.TLS = TLSConfig{CAFile: caFile}
	d := newDeps(t, nc, js, prometheus.NewRegistry(), nil)
	d.Node = ""
	d.APIServer = api.URL
	var nodes *nodeAPI
	d.Nodes, nodes = newNodeClient(t, node("n1", 10250), node("n2", 10250))
	var discovered atomic.Int32
	d.Discovered = func() { discovered.Add(1) }
	_, stop := startCollector(t, cfg, d)

	subj := func(n string, s proto.Source) string { return subjectOf(n, s) }
	upOne := func(s *scrapeMsgs) bool { return upValue(t, s) == 1 }
	by := waitForScrapes(t, js, eachHas(1, upOne, subj("n1", proto.SourceCadvisor), subj("n2", proto.SourceCadvisor), subj("n1", proto.SourceProbes), subj("n2", proto.SourceProbes)))
	for _, s := range by[subj("n2", proto.SourceCadvisor)] {
		if upOne(s) && len(s.series(t)) < 4000 {
			t.Fatalf("n2 cadvisor through the proxy: %d series, want the capture's", len(s.series(t)))
		}
	}
	mu.Lock()
	for _, p := range []string{"n1/metrics/cadvisor", "n2/metrics/probes"} {
		if !asked[p] {
			t.Errorf("proxy path %s never asked; asked %v", p, asked)
		}
	}
	mu.Unlock()

	if n := discovered.Load(); n != 1 {
		t.Errorf("Discovered called %d times once the nodes were listed, want once", n)
	}

	nodes.delete("n2")
	nodes.add(node("n3", 10250))
	upStale := func(s *scrapeMsgs) bool { return value.IsStaleNaN(upValue(t, s)) }
	by = waitForScrapes(t, js, func(by map[string][]*scrapeMsgs) bool {
		return eachHas(1, upStale, subj("n2", proto.SourceProbes))(by) && eachHas(1, nil, subj("n3", proto.SourceProbes))(by)
	})
	for _, s := range by[subj("n2", proto.SourceProbes)] {
		if !upStale(s) {
			continue
		}
		for k, smp := range s.series(t) {
			if !value.IsStaleNaN(smp.Value) {
				t.Errorf("gone node's last message has %s = %v, want StaleNaN", k, smp.Value)
			}
		}
		if n := len(s.series(t)); n != 13+3 {
			t.Errorf("gone node marked %d series stale, want its 13 and the 3 report series", n)
		}
	}
	// Nothing of n2 after its staleness markers.
	time.Sleep(3 * cfg.ScrapeInterval)
	stop()
	for _, src := range []proto.Source{proto.SourceProbes, proto.SourceCadvisor} {
		scrapes := waitForScrapes(t, js, func(map[string][]*scrapeMsgs) bool { return true })[subj("n2", src)]
		if last := scrapes[len(scrapes)-1]; !upStale(last) {
			t.Errorf("%s of deleted n2 published after its staleness markers", src)
		}
	}
}
