package main

import (
	"context"
	"flag"
	"io"
	"os"

	"github.com/weirmetrics/weir/enricher"
)

// enricherSection is the enricher: section of the configuration file.
type enricherSection struct {
	// ListenAddress serves /metrics, /healthz and /readyz of `weir enricher`.
	ListenAddress   string `yaml:"listen_address"`
	enricher.Config `yaml:",inline"`
}

func defaultEnricherSection() enricherSection {
	return enricherSection{ListenAddress: ":9472", Config: enricher.DefaultConfig()}
}

func runEnricher(ctx context.Context, fs *flag.FlagSet, args []string, _ io.Writer) error {
	cfg, err := parseStage(fs, args)
	if err != nil {
		return err
	}
	p, err := newProcess(cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.Connect(cfg.NATS.URL, "weir-enricher"); err != nil {
		return err
	}
	if err := p.addEnricher(); err != nil {
		return err
	}
	if _, err := p.AddHTTP(cfg.Enricher.ListenAddress); err != nil {
		return err
	}
	p.AddSignals(ctx)
	return p.Run()
}

// addEnricher adds the enricher as a stage. It needs no Kubernetes API:
// with no clusters configured it adds the cluster and node labels only, so
// `weir all` can run it anywhere. /readyz also waits for the metadata of
// the configured clusters, at most enricher.sync_timeout.
func (p *process) addEnricher() error {
	synced := p.Ready.Require()
	e, err := enricher.New(p.cfg.Enricher.Config, enricher.Deps{
		Log:          p.Log,
		Reg:          p.Reg,
		JS:           p.JS,
		MaxPayload:   int(p.NC.MaxPayload()),
		Partitions:   p.cfg.Streams.Partitions,
		LocalCluster: p.cfg.Cluster,
		Ready:        synced.Ready,
	})
	if err != nil {
		return err
	}
	p.OnClose(func() { _ = e.Close() })
	p.AddStage("enricher", context.Background(), e.Run)
	return nil
}
