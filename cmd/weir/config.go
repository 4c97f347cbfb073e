package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/weirmetrics/weir/internal/cli"
	"github.com/weirmetrics/weir/router"
)

// fileConfig is the one YAML file every stage reads; each stage uses its
// own section and the shared ones (identity, NATS, streams, logging).
type fileConfig struct {
	cli.Shared `yaml:",inline"`
	// ListenAddress serves /metrics, /healthz and /readyz for `weir all`,
	// where every stage shares one process and one registry.
	ListenAddress string               `yaml:"listen_address"`
	Collector     cli.CollectorSection `yaml:"collector"`
	Enricher      enricherSection      `yaml:"enricher"`
	Sinks         []sinkSection        `yaml:"sinks"`
	Alerter       alerterSection       `yaml:"alerter"`
	// Routes are what `weir router` publishes to each route's stream;
	// Router is how it runs.
	Routes []router.Route `yaml:"routes"`
	Router routerSection  `yaml:"router"`
}

type routerSection struct {
	ListenAddress string `yaml:"listen_address"`
	router.Config `yaml:",inline"`
}

func defaultConfig() fileConfig {
	return fileConfig{
		Shared:        cli.DefaultShared(),
		ListenAddress: ":9469",
		Collector:     cli.DefaultCollectorSection(),
		Alerter:       defaultAlerterSection(),
		Enricher:      defaultEnricherSection(),
		Router:        routerSection{ListenAddress: ":9473", Config: router.DefaultConfig()},
	}
}

// Validate checks the sections every stage shares and each stage section;
// whether a stage section may be empty is decided by the command that runs it.
func (c *fileConfig) Validate() error {
	errs := []error{c.Shared.Validate()}
	if c.Collector.Wanted() {
		errs = append(errs, c.Collector.Validate())
	}
	if len(c.Alerter.RuleFiles) > 0 {
		errs = append(errs, c.Alerter.Validate())
	}
	errs = append(errs, c.Enricher.Validate())
	names := map[string]bool{}
	for i, s := range c.Sinks {
		if names[s.Name] {
			errs = append(errs, fmt.Errorf("sinks[%d].name: %q used twice", i, s.Name))
		}
		names[s.Name] = true
		errs = append(errs, s.Validate())
	}
	errs = append(errs, c.routerConfig().Validate())
	return errors.Join(errs...)
}

// routerConfig is the router section with the file's routes. A file with
// sinks but no routes gets one route per sink that keeps every series, so
// that the smallest configuration still flows end to end.
func (c *fileConfig) routerConfig() router.Config {
	rc := c.Router.Config
	rc.Routes = c.Routes
	if len(rc.Routes) == 0 {
		seen := map[string]bool{}
		for _, s := range c.Sinks {
			if s.Stream == sinkStreamRoute && !seen[s.RouteName()] {
				seen[s.RouteName()] = true
				rc.Routes = append(rc.Routes, router.Route{Name: s.RouteName()})
			}
		}
	}
	return rc
}

// loadConfig reads path (or only the defaults when path is empty), applies
// the overrides and validates the result.
func loadConfig(path string, o cli.Overrides) (*fileConfig, error) {
	cfg := defaultConfig()
	name, err := cli.Load(path, o, &cfg, &cfg.Shared)
	if err != nil {
		return nil, err
	}
	// As in Prometheus: secret and TLS files of a sink are relative to the
	// configuration file.
	for i := range cfg.Sinks {
		cfg.Sinks[i].HTTPClientConfig.SetDirectory(filepath.Dir(path))
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &cfg, nil
}
