package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	oklogrun "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/weirmetrics/weir/internal/broker"
	"github.com/weirmetrics/weir/internal/telemetry"
	"github.com/weirmetrics/weir/proto"
)

// stageFlags registers the flags every stage command shares: the config
// file and the values a container sets.
func stageFlags(fs *flag.FlagSet) (configPath *string, o *overrides) {
	o = &overrides{}
	configPath = fs.String("config", "", "path of the YAML configuration file (default: built-in defaults)")
	fs.StringVar(&o.natsURL, "nats-url", "", "NATS server URLs, comma separated (env NATS_URL; overrides nats.url)")
	fs.StringVar(&o.cluster, "cluster", "", "name of this cluster (env WEIR_CLUSTER; overrides cluster)")
	fs.StringVar(&o.node, "node", "", "name of this node (env NODE_NAME; overrides node)")
	fs.StringVar(&o.dataDir, "data-dir", "", "data directory of the embedded server (env WEIR_DATA_DIR; overrides data_dir)")
	fs.StringVar(&o.logLevel, "log.level", "", "debug, info, warn or error (env WEIR_LOG_LEVEL; overrides log.level)")
	return configPath, o
}

// process is what every command builds once: logger, registry, readiness,
// the NATS connection and one oklogrun.Group actor per component.
type process struct {
	cfg   *fileConfig
	log   *slog.Logger
	reg   *prometheus.Registry
	ready *telemetry.Readiness
	g     oklogrun.Group

	nc *nats.Conn
	js jetstream.JetStream
	// streamsReady is closed once the streams exist; stages start after it.
	streamsReady chan struct{}
	closers      []func()
}

func newProcess(cfg *fileConfig, logOut io.Writer) (*process, error) {
	log, err := telemetry.NewLogger(logOut, cfg.Log.Level, cfg.Log.Format)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weir_build_info", Help: "Always 1; the version label says which Weir runs.",
		ConstLabels: prometheus.Labels{"version": versionString()},
	}, func() float64 { return 1 }))
	return &process{cfg: cfg, log: log, reg: reg, ready: &telemetry.Readiness{}, streamsReady: make(chan struct{})}, nil
}

// connect dials NATS and adds the actor that creates the streams.
func (p *process) connect(url, name string) error {
	nc, js, err := broker.Connect(url, name, p.log)
	if err != nil {
		return err
	}
	p.nc, p.js = nc, js
	p.closers = append(p.closers, nc.Close)
	ready := p.ready.Require()
	ctx, cancel := context.WithCancel(context.Background())
	p.g.Add(func() error {
		if err := p.ensureStreams(ctx); err != nil {
			return err
		}
		ready.Ready()
		close(p.streamsReady)
		<-ctx.Done()
		return nil
	}, func(error) { cancel() })
	return nil
}

// ensureStreams retries until the streams exist: NATS may start after us.
func (p *process) ensureStreams(ctx context.Context) error {
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		attemptCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := proto.EnsureStreams(attemptCtx, p.js, p.cfg.Streams)
		cancel()
		if err == nil {
			return nil
		}
		p.log.Warn("streams not created yet, retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// addSignals ends the process on SIGINT or SIGTERM, or when ctx ends.
func (p *process) addSignals(ctx context.Context) {
	p.g.Add(oklogrun.SignalHandler(ctx, syscall.SIGINT, syscall.SIGTERM))
}

// addHTTP serves /metrics, /healthz and /readyz on addr.
func (p *process) addHTTP(addr string) (*telemetry.Server, error) {
	srv, err := telemetry.NewServer(addr, p.reg, p.ready, p.log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.g.Add(func() error { return srv.Run(ctx) }, func(error) { cancel() })
	return srv, nil
}

// addStage runs a stage once the streams exist. The stage also stops when
// stopEarly ends (the demo stops its collectors before the rest to drain
// the pipeline); it then waits for the others instead of ending the group.
func (p *process) addStage(name string, stopEarly context.Context, runStage func(context.Context) error) {
	ready := p.ready.Require()
	groupCtx, cancel := context.WithCancel(context.Background())
	p.g.Add(func() error {
		select {
		case <-p.streamsReady:
		case <-groupCtx.Done():
			return nil
		}
		ready.Ready()
		stageCtx, stop := context.WithCancel(groupCtx)
		defer stop()
		unhook := context.AfterFunc(stopEarly, stop)
		defer unhook()
		if err := runStage(stageCtx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		<-groupCtx.Done()
		return nil
	}, func(error) { cancel() })
}

// close releases what the process opened, newest first; it is safe to call
// more than once, so callers defer it right after newProcess.
func (p *process) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// runGroup runs every actor until one ends and all have stopped.
func (p *process) runGroup() error {
	err := p.g.Run()
	// A pointer: SignalHandler returns *SignalError, and SignalError's own As
	// method reports a match without filling a value target (Signal stays nil).
	var sig *oklogrun.SignalError
	switch {
	case errors.As(err, &sig):
		p.log.Info("stopping", "signal", sig.Signal.String())
		return nil
	case errors.Is(err, context.Canceled):
		return nil
	}
	return err
}
