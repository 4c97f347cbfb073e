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
	defer p.Close()
	if err := p.Connect(cfg.NATS.URL, "weir-router"); err != nil {
		return err
	}
	if err := p.addRouter(); err != nil {
		return err
	}
	if _, err := p.AddHTTP(cfg.Router.ListenAddress); err != nil {
		return err
	}
	p.AddSignals(ctx)
	return p.Run()
}

// addRouter adds the router of the file's routes; it needs the NATS
// connection of p.connect. The router creates every route's stream.
func (p *process) addRouter() error {
	r, err := router.New(p.cfg.routerConfig(), router.Deps{
		Log:        p.Log,
		Reg:        p.Reg,
		JS:         p.JS,
		Streams:    p.cfg.Streams,
		MaxPayload: int(p.NC.MaxPayload()),
	})
	if err != nil {
		return err
	}
	p.OnClose(func() { _ = r.Close() })
	p.AddStage("router", context.Background(), r.Run)
	return nil
}
