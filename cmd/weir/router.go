package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"

	"github.com/weirmetrics/weir/router"
)

func runRouter(ctx context.Context, fs *flag.FlagSet, args []string, _ io.Writer) error {
	cfg, err := parseStage(fs, args)
	if err != nil {
		return err
	}
	if len(cfg.routerConfig().Routes) == 0 {
		return errors.New("routes: empty, and no sink reads a route: nothing to route")
	}
	p, err := newProcess(cfg, os.Stderr)
	if err != nil {
		return err
	}
	defer p.close()
	if err := p.connect(cfg.NATS.URL, "weir-router"); err != nil {
		return err
	}
	if err := p.addRouter(); err != nil {
		return err
	}
	if _, err := p.addHTTP(cfg.Router.ListenAddress); err != nil {
		return err
	}
	p.addSignals(ctx)
	return p.runGroup()
}

// addRouter adds the router of the file's routes; it needs the NATS
// connection of p.connect. The router creates every route's stream.
func (p *process) addRouter() error {
	r, err := router.New(p.cfg.routerConfig(), router.Deps{
		Log:        p.log,
		Reg:        p.reg,
		JS:         p.js,
		Streams:    p.cfg.Streams,
		MaxPayload: int(p.nc.MaxPayload()),
	})
	if err != nil {
		return err
	}
	p.closers = append(p.closers, func() { _ = r.Close() })
	p.addStage("router", context.Background(), r.Run)
	return nil
}
