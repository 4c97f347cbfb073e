package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/broker"
	"github.com/weirmetrics/weir/internal/cli"
	"github.com/weirmetrics/weir/internal/telemetry"
	"github.com/weirmetrics/weir/proto"
)

// process is the process of a command with the file it was started with.
type process struct {
	*cli.Process
	cfg *fileConfig
}

func newProcess(cfg *fileConfig, logOut io.Writer) (*process, error) {
	p, err := cli.NewProcess(&cfg.Shared, logOut)
	if err != nil {
		return nil, err
	}
	return &process{Process: p, cfg: cfg}, nil
}

// parseStage adds the shared stage flags to fs, parses args and loads the
// configuration they name.
func parseStage(fs *flag.FlagSet, args []string) (*fileConfig, error) {
	configPath, o := cli.Flags(fs)
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
	return cli.RunCollector(ctx, &cfg.Shared, cfg.Collector, os.Stderr)
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
	defer p.Close()
	if _, err := p.addAll(ctx, context.Background()); err != nil {
		return err
	}
	return p.Run()
}

// addAll adds every stage that exists, an embedded NATS server and one
// HTTP server for them all, which it returns. Collectors stop early when
// stopCollectors ends.
func (p *process) addAll(ctx, stopCollectors context.Context) (*telemetry.Server, error) {
	cfg := p.cfg
	store := filepath.Join(cfg.DataDir, "jetstream")
	nsrv, err := broker.StartEmbedded(broker.EmbeddedConfig{
		Host: cfg.NATS.Embedded.Host, Port: cfg.NATS.Embedded.Port, StoreDir: store, Log: p.Log.With("component", "nats"),
	})
	if err != nil {
		return nil, err
	}
	// Closers run in reverse: the connection closes before the server stops.
	p.OnClose(func() { nsrv.Shutdown(); nsrv.WaitForShutdown() })
	p.Log.Info("embedded nats started", "url", nsrv.ClientURL(), "store", store)
	// The stages reach the server in process rather than through loopback
	// TCP, which saves the system calls of every message both ways; the
	// server still listens for stages and tools run apart.
	if err := p.Connect(nsrv.ClientURL(), "weir-all", nats.InProcessServer(nsrv)); err != nil {
		return nil, err
	}
	// The enricher runs when something reads what it writes: `weir all`
	// with no router, sink or alerter is a NATS server for stages run apart.
	routes := len(cfg.routerConfig().Routes) > 0
	enrich := routes || len(cfg.Alerter.RuleFiles) > 0
	if enrich && cfg.PartitionsUnset() {
		// Before any stage reads the count, and before the streams are made.
		if cfg.Streams.Partitions, err = p.partitionsForAll(ctx); err != nil {
			return nil, err
		}
	}
	if cfg.Collector.Wanted() {
		if err := p.AddCollector(&cfg.Shared, cfg.Collector.Config, stopCollectors); err != nil {
			return nil, err
		}
	} else {
		p.Log.Warn("no collector targets configured; running without a collector")
	}
	if enrich {
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
	srv, err := p.AddHTTP(cfg.ListenAddress)
	if err != nil {
		return nil, err
	}
	p.AddSignals(ctx)
	return srv, nil
}

// partitionsForAll is streams.partitions for a `weir all` that runs the
// whole pipeline and whose file leaves it unset. Partitions spread a
// stage's work over replicas in many processes; in one process they only
// let each stage use more than one core, and they multiply the consumers
// (three stages × 12 by default) whose state file the server rewrites
// after deliveries and acks, at most ten times a second each: with a few
// messages a second per partition, that cost more CPU than storing the
// data. So a new store gets one partition per core, at most 12. Streams
// that already exist keep their count: consumers read only the partitions
// that exist now, so messages left in the others would never be delivered.
func (p *process) partitionsForAll(ctx context.Context) (int, error) {
	perCore := min(runtime.GOMAXPROCS(0), proto.DefaultStreamsConfig().Partitions)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := p.JS.Stream(ctx, proto.StreamRaw)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return perCore, nil
	}
	if err != nil {
		return 0, fmt.Errorf("partitions of stream %s: %w", proto.StreamRaw, err)
	}
	n := proto.StreamPartitions(st.CachedInfo().Config)
	if n < 1 {
		return perCore, nil
	}
	if n != perCore {
		p.Log.Info("keeping the partitions of the existing streams; set streams.partitions to change them", "partitions", n)
	}
	return n, nil
}
