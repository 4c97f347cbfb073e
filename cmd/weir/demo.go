package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/weirmetrics/weir/collector"
	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/loadtest"
	"github.com/weirmetrics/weir/proto"
)

// errLost is returned when the demo ends with samples that never arrived.
var errLost = errors.New("samples were lost")

func runDemo(ctx context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	duration := fs.Duration("duration", 0, "stop after this long, drain, and exit non-zero if a sample was lost (0: run until interrupted)")
	nodes := fs.Int("nodes", 3, "number of simulated nodes")
	interval := fs.Duration("interval", 5*time.Second, "scrape interval")
	listen := fs.String("listen", "127.0.0.1:9469", "address of /metrics, /healthz and /readyz")
	report := fs.Duration("report", 5*time.Second, "how often to print progress")
	logLevel := fs.String("log.level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *nodes < 1 || *interval <= 0 || *report <= 0 || *duration < 0 {
		return fmt.Errorf("--nodes, --interval and --report must be positive, --duration not negative: %w", errUsage)
	}

	fleet, err := loadtest.StartFleet("demo-node", *nodes)
	if err != nil {
		return err
	}
	defer fleet.Close()
	receiver := loadtest.NewReceiver()
	rwURL, stopReceiver, err := loadtest.ServeReceiver(receiver)
	if err != nil {
		return err
	}
	defer stopReceiver()
	dataDir, err := os.MkdirTemp("", "weir-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)

	cfg, err := demoConfig(fleet, rwURL, dataDir, *listen, *interval, *logLevel)
	if err != nil {
		return err
	}
	p, err := newProcess(cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer p.Close()
	collectorsCtx, stopCollectors := context.WithCancel(context.Background())
	defer stopCollectors()
	srv, err := p.addAll(ctx, collectorsCtx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "weir demo: %d nodes × %d sources every %s → NATS JetStream → remote write to %s\n",
		*nodes, len(demoSources), *interval, rwURL)
	fmt.Fprintf(stdout, "weir demo: pipeline metrics on http://%s/metrics; Ctrl-C to stop\n", srv.Addr())

	var lost int64
	demoCtx, cancelDemo := context.WithCancel(context.Background())
	p.Add(func() error {
		lost = demoLoop(demoCtx, p, receiver, stdout, *duration, *report, stopCollectors)
		return nil
	}, func(error) { cancelDemo() })
	if err := p.Run(); err != nil {
		return err
	}
	if lost > 0 {
		return fmt.Errorf("%d %w", lost, errLost)
	}
	return nil
}

// demoSources are the sources each simulated node serves, with their paths.
var demoSources = []struct {
	source proto.Source
	path   string
	proxy  bool
}{
	{proto.SourceKubelet, "/metrics", false},
	{proto.SourceCadvisor, "/metrics/cadvisor", false},
	{proto.SourceResource, "/metrics/resource", false},
	{proto.SourceProbes, "/metrics/probes", false},
	{proto.SourceKubeProxy, "/metrics", true},
}

func demoConfig(fleet *loadtest.Fleet, rwURL, dataDir, listen string, interval time.Duration, logLevel string) (*fileConfig, error) {
	cfg := defaultConfig()
	cfg.Cluster = "demo"
	cfg.DataDir = dataDir
	cfg.ListenAddress = listen
	cfg.Log.Level = logLevel
	cfg.NATS.Embedded.Port = -1
	cfg.Collector.ScrapeInterval = interval
	cfg.Collector.ScrapeTimeout = min(interval, 10*time.Second)
	for _, n := range fleet.Nodes {
		for _, s := range demoSources {
			base := n.KubeletURL
			if s.proxy {
				base = n.KubeProxyURL
			}
			u, err := config.ParseURL(base + s.path)
			if err != nil {
				return nil, err
			}
			cfg.Collector.Targets = append(cfg.Collector.Targets, collector.TargetConfig{URL: u, Source: s.source, Node: n.Name})
		}
	}
	sc := defaultSinkSection()
	sc.Name = "demo"
	u, err := config.ParseURL(rwURL)
	if err != nil {
		return nil, err
	}
	sc.URL = u
	cfg.Sinks = []sinkSection{sc}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// demoLoop prints progress until ctx ends or duration passes. After the
// duration it stops the collectors, waits for what they published to
// arrive, prints the final account and returns the samples lost.
func demoLoop(ctx context.Context, p *process, r *loadtest.Receiver, w io.Writer, duration, every time.Duration, stopCollectors func()) int64 {
	start := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	var deadline <-chan time.Time
	if duration > 0 {
		deadline = time.After(duration)
	}
	for {
		select {
		case <-ctx.Done():
			a := demoAccount(p, r)
			fmt.Fprintf(w, "weir demo: interrupted after %s: %s\n", time.Since(start).Round(time.Second), a)
			return 0
		case <-tick.C:
			fmt.Fprintf(w, "  %6s  %s\n", time.Since(start).Round(time.Second), demoAccount(p, r))
			continue
		case <-deadline:
		}
		stopCollectors()
		// Drain: everything published must reach the receiver; give up after a while.
		drainUntil := time.Now().Add(30 * time.Second)
		a := demoAccount(p, r)
		for a.lost() > 0 && time.Now().Before(drainUntil) {
			select {
			case <-ctx.Done():
				return a.lost()
			case <-time.After(200 * time.Millisecond):
			}
			a = demoAccount(p, r)
		}
		verdict := "nothing lost"
		if a.lost() > 0 {
			verdict = fmt.Sprintf("LOST %d samples", a.lost())
		}
		fmt.Fprintf(w, "weir demo: done after %s: %s: %s\n", time.Since(start).Round(time.Second), a, verdict)
		return a.lost()
	}
}

type account struct {
	scrapes, failed, published int64
	delivered                  loadtest.ReceiverStats
}

func (a account) lost() int64 { return max(0, a.published-a.delivered.Unique) }

func (a account) String() string {
	return fmt.Sprintf("scrapes=%d (failed %d) samples published=%d delivered=%d duplicates=%d lost=%d",
		a.scrapes, a.failed, a.published, a.delivered.Unique, a.delivered.Duplicates, a.lost())
}

// demoAccount reads the collector's counters the way a user would, from
// the registry behind /metrics, and the receiver's own count.
func demoAccount(p *process, r *loadtest.Receiver) account {
	sums := map[string]float64{}
	if mfs, err := p.Reg.Gather(); err == nil {
		for _, mf := range mfs {
			sums[mf.GetName()] = sumCounters(mf.GetMetric())
		}
	}
	return account{
		scrapes:   int64(sums["weir_collector_scrapes_total"]),
		failed:    int64(sums["weir_collector_scrape_failures_total"]),
		published: int64(sums["weir_collector_samples_published_total"]),
		delivered: r.Stats(),
	}
}

func sumCounters(ms []*dto.Metric) float64 {
	var s float64
	for _, m := range ms {
		s += m.GetCounter().GetValue()
	}
	return s
}
