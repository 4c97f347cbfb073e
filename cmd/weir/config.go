package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weirmetrics/weir/collector"
	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/proto"
	"github.com/weirmetrics/weir/router"
)

// fileConfig is the one YAML file every stage reads; each stage uses its
// own section and the shared ones (identity, NATS, streams, logging).
type fileConfig struct {
	// Cluster and Node identify where the collector runs. They travel in
	// subjects and headers, never in labels a scraped endpoint could set.
	Cluster string `yaml:"cluster"`
	Node    string `yaml:"node"`
	// DataDir holds the embedded JetStream store of `weir all`.
	DataDir string `yaml:"data_dir"`
	// ListenAddress serves /metrics, /healthz and /readyz for `weir all`,
	// where every stage shares one process and one registry.
	ListenAddress string              `yaml:"listen_address"`
	Log           logConfig           `yaml:"log"`
	NATS          natsConfig          `yaml:"nats"`
	Streams       proto.StreamsConfig `yaml:"streams"`
	Collector     collectorSection    `yaml:"collector"`
	Enricher      enricherSection     `yaml:"enricher"`
	Sinks         []sinkSection       `yaml:"sinks"`
	Alerter       alerterSection      `yaml:"alerter"`
	// Routes are what `weir router` publishes to each route's stream;
	// Router is how it runs.
	Routes []router.Route `yaml:"routes"`
	Router routerSection  `yaml:"router"`
}

type routerSection struct {
	ListenAddress string `yaml:"listen_address"`
	router.Config `yaml:",inline"`
}

type logConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

type natsConfig struct {
	// URL of the NATS servers for a stage run on its own.
	URL string `yaml:"url"`
	// Embedded is the server `weir all` starts in process.
	Embedded embeddedConfig `yaml:"embedded"`
}

type embeddedConfig struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
}

type collectorSection struct {
	ListenAddress    string `yaml:"listen_address"`
	collector.Config `yaml:",inline"`
}

func defaultConfig() fileConfig {
	return fileConfig{
		Cluster:       "default",
		DataDir:       "./data",
		ListenAddress: ":9469",
		Log:           logConfig{Level: "info", Format: "text"},
		NATS:          natsConfig{URL: "nats://127.0.0.1:4222", Embedded: embeddedConfig{Host: "127.0.0.1", Port: 4222}},
		Streams:       proto.DefaultStreamsConfig(),
		Collector:     collectorSection{ListenAddress: ":9470", Config: collector.DefaultConfig()},
		Alerter:       defaultAlerterSection(),
		Enricher:      defaultEnricherSection(),
		Router:        routerSection{ListenAddress: ":9473", Config: router.DefaultConfig()},
	}
}

// Validate checks the sections every stage shares and each stage section;
// whether a stage section may be empty is decided by the command that runs it.
func (c *fileConfig) Validate() error {
	var errs []error
	if c.Cluster == "" {
		errs = append(errs, errors.New("cluster: empty (set it in the file, with --cluster or WEIR_CLUSTER)"))
	}
	if c.NATS.URL == "" {
		errs = append(errs, errors.New("nats.url: empty"))
	}
	errs = append(errs, c.Streams.Validate())
	if collectorWanted(c.Collector.Config) {
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

// overrides are what a container sets through flags or the environment;
// they win over the file.
type overrides struct {
	natsURL, cluster, node, dataDir, logLevel string
}

// env fills the overrides that no flag set from the environment.
func (o *overrides) env() {
	for _, e := range []struct {
		dst *string
		key string
	}{{&o.natsURL, "NATS_URL"}, {&o.cluster, "WEIR_CLUSTER"}, {&o.node, "NODE_NAME"}, {&o.dataDir, "WEIR_DATA_DIR"}, {&o.logLevel, "WEIR_LOG_LEVEL"}} {
		if *e.dst == "" {
			*e.dst = os.Getenv(e.key)
		}
	}
}

// loadConfig reads path (or only the defaults when path is empty), applies
// the overrides and validates the result.
func loadConfig(path string, o overrides) (*fileConfig, error) {
	cfg := defaultConfig()
	name := "defaults"
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("read config: %w", err)
		}
		// Validation waits until the overrides are applied.
		if err := config.Decode(path, data, &cfg); err != nil {
			return nil, err
		}
		name = filepath.Base(path)
		// As in Prometheus: secret and TLS files of a sink are relative to
		// the configuration file.
		for i := range cfg.Sinks {
			cfg.Sinks[i].HTTPClientConfig.SetDirectory(filepath.Dir(path))
		}
	}
	o.env()
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.NATS.URL, o.natsURL)
	set(&cfg.Cluster, o.cluster)
	set(&cfg.Node, o.node)
	set(&cfg.DataDir, o.dataDir)
	set(&cfg.Log.Level, o.logLevel)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &cfg, nil
}
