package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weirmetrics/weir/collector"
	"github.com/weirmetrics/weir/internal/memlimit"
	"github.com/weirmetrics/weir/proto"
)

// CollectorSection is the collector: section of the configuration file.
type CollectorSection struct {
	// ListenAddress serves /metrics, /healthz and /readyz of a collector
	// run on its own.
	ListenAddress    string `yaml:"listen_address"`
	collector.Config `yaml:",inline"`
}

// DefaultCollectorSection is the collector: section of an empty file.
func DefaultCollectorSection() CollectorSection {
	return CollectorSection{ListenAddress: ":9470", Config: collector.DefaultConfig()}
}

// Wanted reports whether the section configures anything to scrape:
// static targets, or a discovery mode that finds them.
func (c CollectorSection) Wanted() bool {
	return len(c.Targets) > 0 || (c.Discovery.Mode != "" && c.Discovery.Mode != collector.ModeStatic)
}

// errNothingToScrape is the error of a collector run without targets.
var errNothingToScrape = errors.New("collector.targets: empty and collector.discovery.mode static: nothing to scrape")

// collectorGCPercent is the GOGC of a collector run on its own, unless the
// environment sets one. Its live heap is a few megabytes of series caches,
// and its garbage comes in a burst at each scrape: collecting at 1.4 times
// the live heap instead of twice keeps the agent on every node 2-3 MiB
// smaller, for a few more milliseconds of GC per scrape (BENCHMARKS.md).
const collectorGCPercent = 40

// RunCollector runs the collector of sec on its own until ctx ends or a
// signal stops it.
func RunCollector(ctx context.Context, shared *Shared, sec CollectorSection, logOut io.Writer) error {
	if !sec.Wanted() {
		return errNothingToScrape
	}
	p, err := NewProcess(shared, logOut)
	if err != nil {
		return err
	}
	defer p.Close()
	limit, from := memlimit.Set(int64(sec.MemoryLimit))
	gogc, gogcFrom := memlimit.SetGCPercent(collectorGCPercent)
	// Scrapes are spread over the interval: one encoder seldom makes one
	// wait, and a second would stay in the heap for good.
	proto.SetEncoders(1)
	p.Log.Info("memory", "soft_limit", memlimit.Describe(limit), "soft_limit_from", from, "gogc", gogc, "gogc_from", gogcFrom)
	if err := p.Connect(shared.NATS.URL, "weir-collector"); err != nil {
		return err
	}
	if err := p.AddCollector(shared, sec.Config, context.Background()); err != nil {
		return err
	}
	if _, err := p.AddHTTP(sec.ListenAddress); err != nil {
		return err
	}
	p.AddSignals(ctx)
	return p.Run()
}

// AddCollector adds the collector of cfg, which stops early when stopEarly
// ends.
func (p *Process) AddCollector(shared *Shared, cfg collector.Config, stopEarly context.Context) error {
	nodes, apiServer, err := nodeClient(cfg)
	if err != nil {
		return err
	}
	discovered := p.Ready.Require()
	c, err := collector.New(cfg, collector.Deps{
		Log:        p.Log.With("stage", "collector"),
		Reg:        p.Reg,
		JS:         p.JS,
		Cluster:    shared.Cluster,
		Node:       shared.Node,
		MaxPayload: int(p.NC.MaxPayload()),
		// The downward API sets HOST_IP in the DaemonSet (status.hostIP).
		HostIP:     os.Getenv("HOST_IP"),
		Nodes:      nodes,
		APIServer:  apiServer,
		Discovered: discovered.Ready,
	})
	if err != nil {
		return err
	}
	p.OnClose(func() { _ = c.Close() })
	p.AddStageNow("collector", stopEarly, c.Run)
	return nil
}

// nodeClient builds the Kubernetes client of node and central discovery:
// from $KUBECONFIG when set, else the in-cluster service account. It also
// returns the API server URL for central mode. Static mode needs neither.
func nodeClient(c collector.Config) (collector.NodeClient, string, error) {
	if c.Discovery.Mode == "" || c.Discovery.Mode == collector.ModeStatic {
		return nil, "", nil
	}
	var (
		rc  *rest.Config
		err error
	)
	if path := os.Getenv("KUBECONFIG"); path != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", path)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, "", fmt.Errorf("collector.discovery.mode %s: Kubernetes client: %w", c.Discovery.Mode, err)
	}
	nodes, err := collector.NewNodeClient(rc)
	if err != nil {
		return nil, "", fmt.Errorf("collector.discovery.mode %s: %w", c.Discovery.Mode, err)
	}
	return nodes, rc.Host, nil
}
