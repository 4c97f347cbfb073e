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
	defer p.close()
	if err := p.connect(cfg.NATS.URL, "weir-alerter"); err != nil {
		return err
	}
	if err := p.addAlerter(); err != nil {
		return err
	}
	if _, err := p.addHTTP(cfg.Alerter.ListenAddress); err != nil {
		return err
	}
	p.addSignals(ctx)
	return p.runGroup()
}

// addAlerter adds the alerter and an actor that reloads its rules on SIGHUP.
func (p *process) addAlerter() error {
	a, err := alerter.New(p.cfg.Alerter.Config, alerter.Deps{
		Log:      p.log.With("stage", "alerter"),
		Reg:      p.reg,
		JS:       p.js,
		Cluster:  p.cfg.Cluster,
		Replicas: p.cfg.Streams.Replicas,
	})
	if err != nil {
		return err
	}
	p.closers = append(p.closers, func() { _ = a.Close() })
	p.addStage("alerter", context.Background(), a.Run)
	hup := make(chan os.Signal, 1)
	stop := make(chan struct{})
	p.g.Add(func() error {
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				p.log.Info("SIGHUP: reloading rules")
				a.Reload()
			case <-stop:
				return nil
			}
		}
	}, func(error) { close(stop) })
	return nil
}
