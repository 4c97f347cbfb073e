package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/cli"
)

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := loadConfig("../../examples/weir.yaml", cli.Overrides{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != "prod-eu-1" || len(cfg.Collector.Targets) != 3 || len(cfg.Sinks) != 1 {
		t.Fatalf("example loaded as %+v", cfg)
	}
	if got := cfg.Collector.Targets[2].Interval; got != 30*time.Second {
		t.Errorf("kube-proxy interval = %s, want 30s", got)
	}
	if got := cfg.Sinks[0].QueueConfig.MaxSamplesPerSend; got != 2000 {
		t.Errorf("max_samples_per_send = %d, want 2000", got)
	}
	if int64(cfg.Streams.MaxBytes) != 10<<30 {
		t.Errorf("streams.max_bytes = %d, want 10GiB", cfg.Streams.MaxBytes)
	}
}

func TestSinkDefaultsApplyToEveryListEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weir.yaml")
	writeFile(t, path, "sinks:\n  - name: a\n    url: http://a/api/v1/write\n  - name: b\n    url: http://b/api/v1/write\n    queue_config:\n      max_shards: 2\n")
	cfg, err := loadConfig(path, cli.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	def := defaultSinkSection()
	for _, s := range cfg.Sinks {
		if s.RemoteTimeout != def.RemoteTimeout || s.QueueConfig.MaxSamplesPerSend != def.QueueConfig.MaxSamplesPerSend {
			t.Errorf("sink %s did not get the defaults: %+v", s.Name, s.Config)
		}
	}
	if cfg.Sinks[1].QueueConfig.MaxShards != 2 || cfg.Sinks[1].QueueConfig.MinBackoff != def.QueueConfig.MinBackoff {
		t.Errorf("sink b: a partial queue_config lost its other defaults: %+v", cfg.Sinks[1].QueueConfig)
	}
}

func TestConfigErrorsNameKeyAndLine(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"unknown key in a sink", "sinks:\n  - name: a\n    url: http://a/\n    remote_timout: 5s\n", []string{"weir.yaml:4: sinks[0].remote_timout: field remote_timout not found"}},
		{"bad duration", "collector:\n  scrape_interval: often\n", []string{"weir.yaml:2: collector.scrape_interval:", "often"}},
		{"bad URL", "sinks:\n  - name: a\n    url: localhost:9090\n", []string{"weir.yaml:3: sinks[0].url: bad URL"}},
		{"bad size", "streams:\n  max_bytes: lots\n", []string{"weir.yaml:2: streams.max_bytes: bad size"}},
		{"unknown top-level key", "clustr: x\n", []string{"weir.yaml:1: clustr: field clustr not found"}},
		{"duplicate sink", "sinks:\n  - name: a\n    url: http://a/\n  - name: a\n    url: http://b/\n", []string{`sinks[1].name: "a" used twice`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "weir.yaml")
			writeFile(t, path, tt.in)
			_, err := loadConfig(path, cli.Overrides{})
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestOverrides(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weir.yaml")
	writeFile(t, path, "cluster: from-file\nnode: file-node\nnats:\n  url: nats://file:4222\n")
	t.Setenv("NATS_URL", "nats://env:4222")
	t.Setenv("NODE_NAME", "env-node")
	t.Setenv("WEIR_CLUSTER", "env-cluster")
	cfg, err := loadConfig(path, cli.Overrides{Cluster: "flag-cluster"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != "flag-cluster" || cfg.Node != "env-node" || cfg.NATS.URL != "nats://env:4222" {
		t.Fatalf("got cluster=%q node=%q nats=%q; want the flag, then the environment, over the file", cfg.Cluster, cfg.Node, cfg.NATS.URL)
	}
}

func TestPartitionsUnsetOnlyWhenTheFileLeavesThem(t *testing.T) {
	for _, tc := range []struct {
		yaml      string
		want      int
		wantUnset bool
	}{
		{"cluster: c\n", 12, true},
		{"streams:\n  partitions: 0\n", 12, true},
		{"streams:\n  partitions: 4\n", 4, false},
		{"streams:\n  partitions: 12\n", 12, false},
	} {
		path := filepath.Join(t.TempDir(), "weir.yaml")
		writeFile(t, path, tc.yaml)
		cfg, err := loadConfig(path, cli.Overrides{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Streams.Partitions != tc.want || cfg.PartitionsUnset() != tc.wantUnset {
			t.Errorf("%q: partitions %d, unset %v; want %d, %v", tc.yaml, cfg.Streams.Partitions, cfg.PartitionsUnset(), tc.want, tc.wantUnset)
		}
	}
}
