package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"

	"github.com/weirmetrics/weir/collector"
	"github.com/weirmetrics/weir/internal/broker"
	"github.com/weirmetrics/weir/internal/memlimit"
	"github.com/weirmetrics/weir/internal/telemetry"
)

// parseStage adds the shared stage flags to fs, parses args and loads the
// configuration they name.
func parseStage(fs *flag.FlagSet, args []string) (*fileConfig, error) {
	configPath, o := stageFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return loadConfig(*configPath, *o)
}

func runCollector(ctx context.Context, fs *flag.FlagSet, args []string, _ io.Writer) error {
	cfg, err := parseStage(fs, args)
	if err != nil {
		return err
	}
	if !collectorWanted(cfg.Collector.Config) {
		return errors.New("collector.targets: empty and collector.discovery.mode static: nothing to scrape")
	}
	p, err := newProcess(cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer p.close()
	limit, from := memlimit.Set(int64(cfg.Collector.MemoryLimit))
	p.log.Info("soft memory limit", "limit", memlimit.Describe(limit), "from", from)
	if err := p.connect(cfg.NATS.URL, "weir-collector"); err != nil {
		return err
	}
	if err := p.addCollector(context.Background()); err != nil {
		return err
	}
	if _, err := p.addHTTP(cfg.Collector.ListenAddress); err != nil {
		return err
	}
	p.addSignals(ctx)
	return p.runGroup()
}

func runAll(ctx context.Context, fs *flag.FlagSet, args []string, _ io.Writer) error {
	cfg, err := parseStage(fs, args)
	if err != nil {
		return err
	}
	p, err := newProcess(cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer p.close()
	if _, err := p.addAll(ctx, context.Background()); err != nil {
		return err
	}
	return p.runGroup()
}

// addAll adds every stage that exists, an embedded NATS server and one
// HTTP server for them all, which it returns. Collectors stop early when
// stopCollectors ends.
func (p *process) addAll(ctx, stopCollectors context.Context) (*telemetry.Server, error) {
	cfg := p.cfg
	store := filepath.Join(cfg.DataDir, "jetstream")
	nsrv, err := broker.StartEmbedded(broker.EmbeddedConfig{
		Host: cfg.NATS.Embedded.Host, Port: cfg.NATS.Embedded.Port, StoreDir: store, Log: p.log.With("component", "nats"),
	})
	if err != nil {
		return nil, err
	}
	// Closers run in reverse: the connection closes before the server stops.
	p.closers = append(p.closers, func() { nsrv.Shutdown(); nsrv.WaitForShutdown() })
	p.log.Info("embedded nats started", "url", nsrv.ClientURL(), "store", store)
	if err := p.connect(nsrv.ClientURL(), "weir-all"); err != nil {
		return nil, err
	}
	if collectorWanted(cfg.Collector.Config) {
		if err := p.addCollector(stopCollectors); err != nil {
			return nil, err
		}
	} else {
		p.log.Warn("no collector targets configured; running without a collector")
	}
	// The enricher runs when something reads what it writes: `weir all`
	// with no router, sink or alerter is a NATS server for stages run apart.
	routes := len(cfg.routerConfig().Routes) > 0
	if routes || len(cfg.Alerter.RuleFiles) > 0 {
		if err := p.addEnricher(); err != nil {
			return nil, err
		}
	}
	if routes {
		if err := p.addRouter(); err != nil {
			return nil, err
		}
	}
	for _, s := range cfg.Sinks {
		if err := p.addSink(s); err != nil {
			return nil, err
		}
	}
	if len(cfg.Alerter.RuleFiles) > 0 {
		if err := p.addAlerter(); err != nil {
			return nil, err
		}
	}
	srv, err := p.addHTTP(cfg.ListenAddress)
	if err != nil {
		return nil, err
	}
	p.addSignals(ctx)
	return srv, nil
}

func (p *process) addCollector(stopEarly context.Context) error {
	kube, apiServer, err := collectorKube(p.cfg.Collector.Config)
	if err != nil {
		return err
	}
	c, err := collector.New(p.cfg.Collector.Config, collector.Deps{
		Log:        p.log.With("stage", "collector"),
		Reg:        p.reg,
		JS:         p.js,
		Cluster:    p.cfg.Cluster,
		Node:       p.cfg.Node,
		MaxPayload: int(p.nc.MaxPayload()),
		// The downward API sets HOST_IP in the DaemonSet (status.hostIP).
		HostIP:    os.Getenv("HOST_IP"),
		Kube:      kube,
		APIServer: apiServer,
	})
	if err != nil {
		return err
	}
	p.closers = append(p.closers, func() { _ = c.Close() })
	p.addStage("collector", stopEarly, c.Run)
	return nil
}
