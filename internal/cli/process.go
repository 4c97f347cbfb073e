package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	oklogrun "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/weirmetrics/weir/internal/natsclient"
	"github.com/weirmetrics/weir/internal/telemetry"
	"github.com/weirmetrics/weir/proto"
)

// Process is what every command builds once: logger, registry, readiness,
// the NATS connection and one oklogrun.Group actor per component.
type Process struct {
	Log   *slog.Logger
	Reg   *prometheus.Registry
	Ready *telemetry.Readiness
	NC    *nats.Conn
	JS    jetstream.JetStream

	// streams are read when the streams are made, once the command has
	// settled them (the partitions of `weir all`).
	streams *proto.StreamsConfig
	g       oklogrun.Group
	// streamsReady is closed once the streams exist; stages start after it.
	streamsReady chan struct{}
	closers      []func()
}

// NewProcess builds the logger and registry of the shared sections s.
func NewProcess(s *Shared, logOut io.Writer) (*Process, error) {
	log, err := telemetry.NewLogger(logOut, s.Log.Level, s.Log.Format)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weir_build_info", Help: "Always 1; the version label says which Weir runs.",
		ConstLabels: prometheus.Labels{"version": Version()},
	}, func() float64 { return 1 }))
	return &Process{Log: log, Reg: reg, Ready: &telemetry.Readiness{}, streams: &s.Streams, streamsReady: make(chan struct{})}, nil
}

// Connect dials NATS, with opts after natsclient's, and adds the actor
// that creates the streams.
func (p *Process) Connect(url, name string, opts ...nats.Option) error {
	nc, js, err := natsclient.Connect(url, name, p.Log, opts...)
	if err != nil {
		return err
	}
	p.NC, p.JS = nc, js
	p.OnClose(nc.Close)
	ready := p.Ready.Require()
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
func (p *Process) ensureStreams(ctx context.Context) error {
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		attemptCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := proto.EnsureStreams(attemptCtx, p.JS, *p.streams)
		cancel()
		if err == nil {
			return nil
		}
		p.Log.Warn("streams not created yet, retrying", "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// Add adds an actor to the process's group, as oklogrun.Group.Add.
func (p *Process) Add(execute func() error, interrupt func(error)) {
	p.g.Add(execute, interrupt)
}

// AddSignals ends the process on SIGINT or SIGTERM, or when ctx ends.
func (p *Process) AddSignals(ctx context.Context) {
	p.g.Add(oklogrun.SignalHandler(ctx, syscall.SIGINT, syscall.SIGTERM))
}

// AddHTTP serves /metrics, /healthz and /readyz on addr.
func (p *Process) AddHTTP(addr string) (*telemetry.Server, error) {
	srv, err := telemetry.NewServer(addr, p.Reg, p.Ready, p.Log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.g.Add(func() error { return srv.Run(ctx) }, func(error) { cancel() })
	return srv, nil
}

// AddStage runs a stage once the streams exist. The stage also stops when
// stopEarly ends (the demo stops its collectors before the rest to drain
// the pipeline); it then waits for the others instead of ending the group.
func (p *Process) AddStage(name string, stopEarly context.Context, runStage func(context.Context) error) {
	p.addStage(name, p.streamsReady, stopEarly, runStage)
}

// AddStageNow runs a stage at once, before the streams exist: the
// collector, which scrapes into its buffer while NATS cannot be reached and
// publishes once it can, so that a node that restarts during an outage
// loses nothing. The process is still ready only once the streams exist.
func (p *Process) AddStageNow(name string, stopEarly context.Context, runStage func(context.Context) error) {
	p.addStage(name, nil, stopEarly, runStage)
}

// addStage runs a stage once start is closed, or at once when start is nil.
func (p *Process) addStage(name string, start <-chan struct{}, stopEarly context.Context, runStage func(context.Context) error) {
	ready := p.Ready.Require()
	groupCtx, cancel := context.WithCancel(context.Background())
	p.g.Add(func() error {
		if start != nil {
			select {
			case <-start:
			case <-groupCtx.Done():
				return nil
			}
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

// OnClose registers f to run at Close, before what was registered earlier.
func (p *Process) OnClose(f func()) {
	p.closers = append(p.closers, f)
}

// Close releases what the process opened, newest first; it is safe to call
// more than once, so callers defer it right after NewProcess.
func (p *Process) Close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

// Run runs every actor until one ends and all have stopped.
func (p *Process) Run() error {
	err := p.g.Run()
	// A pointer: SignalHandler returns *SignalError, and SignalError's own As
	// method reports a match without filling a value target (Signal stays nil).
	var sig *oklogrun.SignalError
	switch {
	case errors.As(err, &sig):
		p.Log.Info("stopping", "signal", sig.Signal.String())
		return nil
	case errors.Is(err, context.Canceled):
		return nil
	}
	return err
}

// version is set at build time with
// -ldflags "-X github.com/weirmetrics/weir/internal/cli.version=…";
// otherwise it comes from the module's build information.
var version = ""

// Version is the version of this build.
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v = strings.TrimSuffix(v+" "+s.Value[:12], " ")
		}
	}
	return v
}
