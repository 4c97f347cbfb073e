package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/weirmetrics/weir/alerter"
)

// alerterSection is the alerter's part of the Weir file.
type alerterSection struct {
	ListenAddress  string `yaml:"listen_address"`
	alerter.Config `yaml:",inline"`
}

func defaultAlerterSection() alerterSection {
	return alerterSection{ListenAddress: ":9472", Config: alerter.DefaultConfig()}
}

func runAlerter(ctx context.Context, fs *flag.FlagSet, args []string, _ io.Writer) error {
	cfg, err := parseStage(fs, args)
	if err != nil {
		return err
	}
	if len(cfg.Alerter.RuleFiles) == 0 {
		return errors.New("alerter.rule_files: empty: no rules to evaluate")
	}
	p, err := newProcess(cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer p.Close()
	if err := p.Connect(cfg.NATS.URL, "weir-alerter"); err != nil {
		return err
	}
	if err := p.addAlerter(); err != nil {
		return err
	}
	if _, err := p.AddHTTP(cfg.Alerter.ListenAddress); err != nil {
		return err
	}
	p.AddSignals(ctx)
	return p.Run()
}

// addAlerter adds the alerter and an actor that reloads its rules on SIGHUP.
func (p *process) addAlerter() error {
	a, err := alerter.New(p.cfg.Alerter.Config, alerter.Deps{
		Log:      p.Log.With("stage", "alerter"),
		Reg:      p.Reg,
		JS:       p.JS,
		Cluster:  p.cfg.Cluster,
		Replicas: p.cfg.Streams.Replicas,
	})
	if err != nil {
		return err
	}
	p.OnClose(func() { _ = a.Close() })
	p.AddStage("alerter", context.Background(), a.Run)
	hup := make(chan os.Signal, 1)
	stop := make(chan struct{})
	p.Add(func() error {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				p.Log.Info("SIGHUP: reloading rules")
				a.Reload()
			case <-stop:
				return nil
			}
		}
	}, func(error) { close(stop) })
	return nil
}
