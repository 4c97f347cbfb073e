// Command weir-collector is the collector of Weir alone: what the
// DaemonSet runs on every node. It reads the same configuration file as
// `weir collector`, whose other stages' sections it accepts and ignores,
// and links none of their code, so that the agent on the node stays small.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/weirmetrics/weir/internal/cli"
)

// fileConfig is the configuration file as the collector reads it.
type fileConfig struct {
	cli.Shared `yaml:",inline"`
	Collector  cli.CollectorSection `yaml:"collector"`
	// The sections of the other stages, kept out of this binary: a key
	// they do not know is still an error of the file.
	ListenAddress yaml.Node `yaml:"listen_address"`
	Enricher      yaml.Node `yaml:"enricher"`
	Sinks         yaml.Node `yaml:"sinks"`
	Alerter       yaml.Node `yaml:"alerter"`
	Routes        yaml.Node `yaml:"routes"`
	Router        yaml.Node `yaml:"router"`
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stderr))
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("weir-collector", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath, o := cli.Flags(fs)
	printVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *printVersion {
		fmt.Fprintln(stderr, "weir-collector", cli.Version())
		return 0
	}
	if err := runCollector(ctx, *configPath, *o, stderr); err != nil {
		fmt.Fprintf(stderr, "weir-collector: %v\n", err)
		return 1
	}
	return 0
}

func runCollector(ctx context.Context, path string, o cli.Overrides, logOut io.Writer) error {
	cfg, err := loadConfig(path, o)
	if err != nil {
		return err
	}
	return cli.RunCollector(ctx, &cfg.Shared, cfg.Collector, logOut)
}

// loadConfig reads path (or only the defaults when path is empty), applies
// the overrides and validates the result.
func loadConfig(path string, o cli.Overrides) (*fileConfig, error) {
	cfg := fileConfig{Shared: cli.DefaultShared(), Collector: cli.DefaultCollectorSection()}
	name, err := cli.Load(path, o, &cfg, &cfg.Shared)
	if err != nil {
		return nil, err
	}
	errs := []error{cfg.Shared.Validate()}
	if cfg.Collector.Wanted() {
		errs = append(errs, cfg.Collector.Validate())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &cfg, nil
}
