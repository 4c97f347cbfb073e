package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/proto"
	"github.com/weirmetrics/weir/sink"
)

// Streams a sink can read (sinks[].stream). A route's stream is the
// normal case; raw and enriched serve a pipeline without a router.
const (
	sinkStreamRoute    = "route"
	sinkStreamRaw      = "raw"
	sinkStreamEnriched = "enriched"
)

// sinkSection is one entry of sinks: a Prometheus remote_write block, plus
// where `weir sink` serves its own metrics and which stream it reads.
type sinkSection struct {
	ListenAddress string `yaml:"listen_address"`
	// Stream is route (the default: the stream of the sink's route), or raw
	// or enriched for a pipeline that has no router.
	Stream      string `yaml:"stream"`
	sink.Config `yaml:",inline"`
}

func defaultSinkSection() sinkSection {
	return sinkSection{ListenAddress: ":9471", Stream: sinkStreamRoute, Config: sink.DefaultConfig()}
}

// UnmarshalYAML gives every sink in the list its defaults before the file's
// values are applied, as Prometheus does for remote_write.
func (s *sinkSection) UnmarshalYAML(unmarshal func(any) error) error {
	*s = defaultSinkSection()
	type plain sinkSection
	return unmarshal((*plain)(s))
}

// Validate checks the sink and the stream it reads.
func (s sinkSection) Validate() error {
	errs := []error{s.Config.Validate()}
	switch s.Stream {
	case sinkStreamRoute, sinkStreamRaw, sinkStreamEnriched:
	default:
		errs = append(errs, fmt.Errorf("sinks[%s].stream: must be %s, %s or %s, got %q",
			s.Name, sinkStreamRoute, sinkStreamRaw, sinkStreamEnriched, s.Stream))
	}
	return errors.Join(errs...)
}

// source is the stream the sink reads, the filter of its consumer and the
// stage that wrote the stream.
func (s sinkSection) source() (stream, filter, stage string) {
	switch s.Stream {
	case sinkStreamRaw:
		return proto.StreamRaw, proto.StreamFilter(proto.StageRaw), proto.StageRaw
	case sinkStreamEnriched:
		return proto.StreamEnriched, proto.StreamFilter(proto.StageEnriched), proto.StageEnriched
	}
	route := s.RouteName()
	return proto.RouteStreamName(route), proto.RouteFilter(route), proto.StageRoute
}

func runSink(ctx context.Context, fs *flag.FlagSet, args []string, _ io.Writer) error {
	name := fs.String("sink", "", "name of the sink to run")
	route := fs.String("route", "", "route whose sink to run (default: the only sink in the file)")
	cfg, err := parseStage(fs, args)
	if err != nil {
		return err
	}
	sc, err := pickSink(cfg.Sinks, *name, *route)
	if err != nil {
		return err
	}
	p, err := newProcess(cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.Connect(cfg.NATS.URL, "weir-sink-"+sc.Name); err != nil {
		return err
	}
	if err := p.addSink(sc); err != nil {
		return err
	}
	if _, err := p.AddHTTP(sc.ListenAddress); err != nil {
		return err
	}
	p.AddSignals(ctx)
	return p.Run()
}

// pickSink finds the sink that --sink or --route names, or the only one.
func pickSink(sinks []sinkSection, name, route string) (sinkSection, error) {
	var names, matches []string
	var found []sinkSection
	for _, s := range sinks {
		names = append(names, s.Name)
		if (name == "" || s.Name == name) && (route == "" || s.RouteName() == route) {
			found = append(found, s)
			matches = append(matches, s.Name)
		}
	}
	switch {
	case len(found) == 1 && (name != "" || route != "" || len(sinks) == 1):
		return found[0], nil
	case len(sinks) == 0:
		return sinkSection{}, errors.New("sinks: empty: nothing to send to")
	case name == "" && route == "":
		return sinkSection{}, fmt.Errorf("--route or --sink: choose one of %s", strings.Join(names, ", "))
	case len(found) == 0:
		return sinkSection{}, fmt.Errorf("--route %q --sink %q: no such sink in sinks (have %s)", route, name, strings.Join(names, ", "))
	}
	return sinkSection{}, fmt.Errorf("--route %q: several sinks read it (%s); choose one with --sink", route, strings.Join(matches, ", "))
}

// addSink adds one sink as an actor. A route's stream is created when it
// does not exist yet, so a sink may start before the router; an existing
// one keeps the limits the router gave it.
// Its replicas share the stream's partitions (internal/partition), so any
// number of them keeps every target's scrapes in order.
func (p *process) addSink(sc sinkSection) error {
	stream, filter, stage := sc.source()
	route := ""
	if stage == proto.StageRoute {
		route = sc.RouteName()
	}
	s, err := sink.New(sc.Config, sink.Deps{
		Log:    p.Log,
		Reg:    p.Reg,
		JS:     p.JS,
		Stream: stream,
		Filter: filter,
		Consume: func(ctx context.Context, template jetstream.ConsumerConfig, work sink.WorkFunc) error {
			return partition.Run(ctx, p.JS, partition.Config{
				Stream: stream, Stage: stage, Route: route, Durable: template.Durable,
				Partitions: p.cfg.Streams.Partitions, Consumer: template,
				Log: p.Log.With("stage", "sink", "sink", sc.Name),
			}, partition.Work(work))
		},
	})
	if err != nil {
		return err
	}
	p.OnClose(func() { _ = s.Close() })
	p.AddStage("sink "+sc.Name, context.Background(), func(ctx context.Context) error {
		if sc.Stream == sinkStreamRoute {
			p.ensureRouteStream(ctx, sc.RouteName())
		}
		return s.Run(ctx)
	})
	return nil
}

// ensureRouteStream retries until the route's stream exists or ctx ends.
func (p *process) ensureRouteStream(ctx context.Context, route string) {
	for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
		err := p.createRouteStream(ctx, route)
		if err == nil || ctx.Err() != nil {
			return
		}
		p.Log.Warn("route stream not created yet, retrying", "route", route, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (p *process) createRouteStream(ctx context.Context, route string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sc := p.cfg.Streams.RouteStream(route)
	_, err := p.JS.Stream(ctx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = p.JS.CreateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil // the router, or another replica, was first
		}
	}
	if err != nil {
		return fmt.Errorf("route %s: stream %s: %w", route, sc.Name, err)
	}
	return nil
}
