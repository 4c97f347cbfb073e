package loadtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// Endpoint is one path a simulated node serves, the capture behind it and
// the source a collector target names for it.
type Endpoint struct {
	Source    proto.Source
	Path      string
	File      string
	KubeProxy bool // served on the kube-proxy port, not the kubelet's
	// JSON is /stats/summary's format, not Prometheus text: the peers
	// cannot scrape it, so their fleets leave it out.
	JSON bool
}

// AllEndpoints are the endpoints of a kubelet and kube-proxy, served from
// the newest captures.
var AllEndpoints = []Endpoint{
	{proto.SourceKubelet, "/metrics", fixtures.Kubelet121, false, false},
	{proto.SourceCadvisor, "/metrics/cadvisor", fixtures.Cadvisor135, false, false},
	{proto.SourceResource, "/metrics/resource", fixtures.Resource121, false, false},
	{proto.SourceProbes, "/metrics/probes", fixtures.Probes, false, false},
	{proto.SourceSummary, "/stats/summary", fixtures.Summary135, false, true},
	{proto.SourceKubeProxy, "/metrics", fixtures.KubeProxy121, true, false},
}

// TextOnly returns the endpoints that serve Prometheus text: what a peer
// can scrape.
func TextOnly(endpoints []Endpoint) []Endpoint {
	return slices.DeleteFunc(slices.Clone(endpoints), func(e Endpoint) bool { return e.JSON })
}

// FleetConfig describes a simulated fleet.
type FleetConfig struct {
	Prefix    string     // nodes are named <Prefix>-0 … <Prefix>-(Nodes-1)
	Nodes     int        // number of nodes
	Endpoints []Endpoint // what each node serves; default AllEndpoints
	// ChurnScrapes replaces each pod with a new one (a new name, so new
	// series) every ChurnScrapes scrapes of its target, staggered so that
	// about 1/ChurnScrapes of the pods change at each scrape. 0: no churn.
	ChurnScrapes int
}

func (c FleetConfig) endpoints() []Endpoint {
	if len(c.Endpoints) == 0 {
		return AllEndpoints
	}
	return c.Endpoints
}

// forPeers is the fleet a peer scrapes: the same without JSON endpoints.
func (c FleetConfig) forPeers() FleetConfig {
	c.Endpoints = TextOnly(c.endpoints())
	return c
}

// Node is one simulated node: a kubelet and a kube-proxy, each on its own
// loopback port.
type Node struct {
	Name         string
	KubeletURL   string   // base URL of the kubelet
	KubeProxyURL string   // base URL of kube-proxy
	Targets      []Target // every endpoint the node serves
}

// Target is one endpoint of one node, as a collector or a peer scrapes it.
type Target struct {
	URL    string // full URL
	Source proto.Source
	Path   string
	Host   string // host:port
}

// Fleet is a set of simulated nodes. It counts every sample it serves, so
// that what a scraper was offered is known exactly.
type Fleet struct {
	Nodes []Node

	cfg       FleetConfig
	perScrape int
	sizes     []int        // samples per scrape of each endpoint, as Node.Targets
	offered   atomic.Int64 // samples in scrapes served in full
	scrapes   atomic.Int64 // scrapes served in full
	failed    atomic.Int64 // scrapes whose body could not be written
	// failedSamples is what those scrapes held: the scraper reports them
	// failed, and they were never counted as offered.
	failedSamples atomic.Int64
	// refuseFrom is when the fleet starts to answer 503, in Unix ns; 0
	// while it serves.
	refuseFrom atomic.Int64
	epoch      atomic.Int64 // added to every pod's generation: a churn storm

	servers []*http.Server
	done    chan error
}

// FleetStats is what a fleet has served so far.
type FleetStats struct {
	Scrapes, Failed, Offered int64
	FailedSamples            int64 // samples of the scrapes that could not be written
}

// StartFleet starts n nodes named <prefix>-0 … <prefix>-(n-1) serving every
// endpoint, without churn.
func StartFleet(prefix string, n int) (*Fleet, error) {
	return NewFleet(FleetConfig{Prefix: prefix, Nodes: n})
}

// NewFleet starts the nodes cfg describes on loopback ports.
func NewFleet(cfg FleetConfig) (*Fleet, error) {
	if cfg.Nodes < 1 {
		return nil, fmt.Errorf("fleet: %d nodes: want at least 1", cfg.Nodes)
	}
	cfg.Endpoints = cfg.endpoints()
	bodies := map[string]*body{}
	for _, e := range cfg.Endpoints {
		if bodies[e.File] != nil {
			continue
		}
		b, err := compileBody(e)
		if err != nil {
			return nil, fmt.Errorf("fleet: %s: %w", e.File, err)
		}
		bodies[e.File] = b
	}
	f := &Fleet{cfg: cfg, done: make(chan error, 2*cfg.Nodes)}
	for _, e := range cfg.Endpoints {
		f.perScrape += bodies[e.File].samples
		f.sizes = append(f.sizes, bodies[e.File].samples)
	}
	for i := range cfg.Nodes {
		node := Node{Name: fmt.Sprintf("%s-%d", cfg.Prefix, i)}
		kubelet, proxy := http.NewServeMux(), http.NewServeMux()
		for _, e := range cfg.Endpoints {
			mux := kubelet
			if e.KubeProxy {
				mux = proxy
			}
			mux.Handle("GET "+e.Path, &endpointHandler{fleet: f, body: bodies[e.File]})
		}
		var err error
		if node.KubeletURL, err = f.serve(kubelet); err == nil {
			node.KubeProxyURL, err = f.serve(proxy)
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		for _, e := range cfg.Endpoints {
			base := node.KubeletURL
			if e.KubeProxy {
				base = node.KubeProxyURL
			}
			node.Targets = append(node.Targets, Target{URL: base + e.Path, Source: e.Source, Path: e.Path, Host: base[len("http://"):]})
		}
		f.Nodes = append(f.Nodes, node)
	}
	return f, nil
}

// SamplesPerScrape is the number of samples one scrape of every target of
// one node offers.
func (f *Fleet) SamplesPerScrape() int { return f.perScrape }

// ScrapeSize returns the samples one scrape of a target offers, the target
// named as the up series of a scraper names it: by instance (host:port)
// and metrics_path (Weir's collector) or job (the peers' scrape
// configuration names each job after its source). 0 for an unknown target.
func (f *Fleet) ScrapeSize(instance, path, job string) int {
	for _, n := range f.Nodes {
		for i, t := range n.Targets {
			if t.Host == instance && (t.Path == path || (path == "" && string(t.Source) == job)) {
				return f.sizes[i]
			}
		}
	}
	return 0
}

// Stats returns what the fleet served so far.
func (f *Fleet) Stats() FleetStats {
	return FleetStats{Scrapes: f.scrapes.Load(), Failed: f.failed.Load(), Offered: f.offered.Load(), FailedSamples: f.failedSamples.Load()}
}

// Storm replaces every pod of every node at the next scrape.
func (f *Fleet) Storm() { f.epoch.Add(1) }

// Stop makes every node answer 503 once grace has passed, so that nothing
// more is offered while the pipeline drains. Scrapes that arrive within
// grace are served as before: they may have been stamped before the stop,
// and a scrape refused then would be one the scraper reports failed (up 0)
// while the fleet served, which the fleet never offered. grace is the
// scrape interval: a scrape that takes longer to arrive times out anyway.
func (f *Fleet) Stop(grace time.Duration) { f.refuseFrom.Store(time.Now().Add(grace).UnixNano()) }

// Refusing reports whether the grace of Stop has passed: the fleet offers
// nothing more.
func (f *Fleet) Refusing() bool {
	from := f.refuseFrom.Load()
	return from != 0 && time.Now().UnixNano() >= from
}

func (f *Fleet) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("fleet: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	f.servers = append(f.servers, srv)
	go func() { f.done <- srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), nil
}

// Close stops every node and waits for their servers to end.
func (f *Fleet) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range f.servers {
		_ = s.Shutdown(ctx)
	}
	for range f.servers {
		<-f.done // Serve returns ErrServerClosed once Shutdown is called
	}
	f.servers = nil
}

// body is what an endpoint serves: a capture rendered afresh at each
// scrape, and the samples a collector makes of it.
type body struct {
	render      func(buf []byte, seq, nowMs int64, gen func(pod int) int64) []byte
	samples     int
	contentType string
}

func compileBody(e Endpoint) (*body, error) {
	if e.JSON {
		t, err := compileJSONTemplate(fixtures.Read(e.File))
		if err != nil {
			return nil, err
		}
		return &body{render: t.render, samples: t.samples, contentType: "application/json"}, nil
	}
	t, err := compileTemplate(fixtures.Read(e.File))
	if err != nil {
		return nil, err
	}
	return &body{render: t.render, samples: t.samples, contentType: "text/plain; version=0.0.4; charset=utf-8"}, nil
}

// endpointHandler serves one endpoint of one node.
type endpointHandler struct {
	fleet *Fleet
	body  *body
	seq   atomic.Int64
	bufs  sync.Pool
}

func (h *endpointHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	f := h.fleet
	if f.Refusing() {
		http.Error(w, "load test over", http.StatusServiceUnavailable)
		return
	}
	seq := h.seq.Add(1)
	churn := int64(f.cfg.ChurnScrapes)
	epoch := f.epoch.Load()
	gen := func(pod int) int64 {
		if churn == 0 {
			return epoch
		}
		return (seq+int64(pod))/churn + epoch
	}
	bp, _ := h.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = h.body.render((*bp)[:0], seq, time.Now().UnixMilli(), gen)
	w.Header().Set("Content-Type", h.body.contentType)
	_, err := w.Write(*bp)
	h.bufs.Put(bp)
	if err != nil {
		f.failed.Add(1)
		f.failedSamples.Add(int64(h.body.samples))
		return
	}
	// Counted once written in full: a scrape the scraper never read is not offered.
	f.offered.Add(int64(h.body.samples))
	f.scrapes.Add(1)
}
