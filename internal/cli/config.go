package cli

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/proto"
)

// Shared are the sections of the configuration file that every stage
// reads: identity, NATS, streams and logging. A binary's file type embeds
// it inline.
type Shared struct {
	// Cluster and Node identify where the collector runs. They travel in
	// subjects and headers, never in labels a scraped endpoint could set.
	Cluster string `yaml:"cluster"`
	Node    string `yaml:"node"`
	// DataDir holds the embedded JetStream store of `weir all`.
	DataDir string              `yaml:"data_dir"`
	Log     LogConfig           `yaml:"log"`
	NATS    NATSConfig          `yaml:"nats"`
	Streams proto.StreamsConfig `yaml:"streams"`
	// partitionsUnset says the file left streams.partitions (absent or 0)
	// to the command: 12, or what `weir all` picks.
	partitionsUnset bool
}

// PartitionsUnset reports whether the file left streams.partitions unset.
func (s *Shared) PartitionsUnset() bool { return s.partitionsUnset }

// LogConfig is the log: section.
type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// NATSConfig is the nats: section.
type NATSConfig struct {
	// URL of the NATS servers for a stage run on its own.
	URL string `yaml:"url"`
	// Embedded is the server `weir all` starts in process.
	Embedded EmbeddedConfig `yaml:"embedded"`
}

// EmbeddedConfig is where `weir all` serves its embedded NATS server.
type EmbeddedConfig struct {
	Host string `yaml:"host"`
	Port int    `yaml:"port"`
}

// DefaultShared are the shared sections of an empty file.
func DefaultShared() Shared {
	return Shared{
		Cluster: "default",
		DataDir: "./data",
		Log:     LogConfig{Level: "info", Format: "text"},
		NATS:    NATSConfig{URL: "nats://127.0.0.1:4222", Embedded: EmbeddedConfig{Host: "127.0.0.1", Port: 4222}},
		Streams: proto.DefaultStreamsConfig(),
		// Until a file sets them (Load).
		partitionsUnset: true,
	}
}

// Validate checks the shared sections.
func (s *Shared) Validate() error {
	var errs []error
	if s.Cluster == "" {
		errs = append(errs, errors.New("cluster: empty (set it in the file, with --cluster or WEIR_CLUSTER)"))
	}
	if s.NATS.URL == "" {
		errs = append(errs, errors.New("nats.url: empty"))
	}
	errs = append(errs, s.Streams.Validate())
	return errors.Join(errs...)
}

// Overrides are what a container sets through flags or the environment;
// they win over the file.
type Overrides struct {
	NATSURL, Cluster, Node, DataDir, LogLevel string
}

// Flags registers the flags every stage command shares: the configuration
// file and the values a container sets.
func Flags(fs *flag.FlagSet) (configPath *string, o *Overrides) {
	o = &Overrides{}
	configPath = fs.String("config", "", "path of the YAML configuration file (default: built-in defaults)")
	fs.StringVar(&o.NATSURL, "nats-url", "", "NATS server URLs, comma separated (env NATS_URL; overrides nats.url)")
	fs.StringVar(&o.Cluster, "cluster", "", "name of this cluster (env WEIR_CLUSTER; overrides cluster)")
	fs.StringVar(&o.Node, "node", "", "name of this node (env NODE_NAME; overrides node)")
	fs.StringVar(&o.DataDir, "data-dir", "", "data directory of the embedded server (env WEIR_DATA_DIR; overrides data_dir)")
	fs.StringVar(&o.LogLevel, "log.level", "", "debug, info, warn or error (env WEIR_LOG_LEVEL; overrides log.level)")
	return configPath, o
}

// apply sets what the overrides, or the environment where no flag is set,
// say on s.
func (o Overrides) apply(s *Shared) {
	for _, e := range []struct {
		dst       *string
		flag, env string
	}{
		{&s.NATS.URL, o.NATSURL, "NATS_URL"},
		{&s.Cluster, o.Cluster, "WEIR_CLUSTER"},
		{&s.Node, o.Node, "NODE_NAME"},
		{&s.DataDir, o.DataDir, "WEIR_DATA_DIR"},
		{&s.Log.Level, o.LogLevel, "WEIR_LOG_LEVEL"},
	} {
		if v := cmp.Or(e.flag, os.Getenv(e.env)); v != "" {
			*e.dst = v
		}
	}
}

// Load decodes the file at path (nothing when path is empty) into cfg,
// which holds the defaults and embeds shared, then applies o. It returns
// the name errors of the file are reported under; validating is the
// caller's, once the whole file is known.
func Load(path string, o Overrides, cfg any, shared *Shared) (name string, err error) {
	name = "defaults"
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read config: %w", err)
		}
		// Zero while decoding, to tell whether the file sets it.
		partitions := shared.Streams.Partitions
		shared.Streams.Partitions = 0
		if err := config.Decode(path, data, cfg); err != nil {
			return "", err
		}
		if shared.Streams.Partitions == 0 {
			shared.Streams.Partitions = partitions
		} else {
			shared.partitionsUnset = false
		}
		name = filepath.Base(path)
	}
	o.apply(shared)
	return name, nil
}
