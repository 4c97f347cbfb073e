package collector

import (
	"strings"

	"github.com/prometheus/prometheus/model/relabel"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

func TestConfigValidate(t *testing.T) {
	good := func() Config {
		return testConfig(
			targetAt("https://10.0.0.1:10250/metrics", proto.SourceKubelet, ""),
			targetAt("https://10.0.0.1:10250/metrics/cadvisor", proto.SourceCadvisor, ""),
			targetAt("http://10.0.0.1:10249/metrics", proto.SourceKubeProxy, ""),
		)
	}
	tests := []struct {
		name    string
		edit    func(c *Config)
		wantErr []string // every fragment must appear; nil means valid
	}{
		{name: "valid", edit: func(*Config) {}},
		{name: "no targets is valid", edit: func(c *Config) { c.Targets = nil }},
		{
			name:    "unknown source",
			edit:    func(c *Config) { c.Targets[2].Source = "foo" },
			wantErr: []string{`collector.targets[2].source: unknown source "foo"`},
		},
		{name: "summary is a source", edit: func(c *Config) { c.Targets[1].Source = proto.SourceSummary }},
		{
			name:    "negative limit",
			edit:    func(c *Config) { c.Sources.Cadvisor.SampleLimit = -1 },
			wantErr: []string{"collector.sources.cadvisor.sample_limit: must not be negative, got -1"},
		},
		{
			name:    "bad relabel config",
			edit:    func(c *Config) { c.MetricRelabelConfigs = []*relabel.Config{{Action: relabel.Replace}} },
			wantErr: []string{"collector.metric_relabel_configs[0]: relabel configuration for replace action requires 'target_label' value"},
		},
		{
			name:    "unknown discovery mode",
			edit:    func(c *Config) { c.Discovery.Mode = "everywhere" },
			wantErr: []string{`collector.discovery.mode: unknown mode "everywhere"`},
		},
		{
			name:    "missing source",
			edit:    func(c *Config) { c.Targets[0].Source = "" },
			wantErr: []string{"collector.targets[0].source: missing"},
		},
		{
			name:    "missing URL",
			edit:    func(c *Config) { c.Targets[1].URL = config.URL{} },
			wantErr: []string{"collector.targets[1].url: missing"},
		},
		{
			name: "duplicate node and source",
			edit: func(c *Config) {
				c.Targets[2].Source = proto.SourceKubelet
			},
			wantErr: []string{`collector.targets[2]: node "(default node)" and source "kubelet" are already scraped by collector.targets[0]`},
		},
		{
			name: "same source on two nodes",
			edit: func(c *Config) {
				c.Targets[2].Source = proto.SourceKubelet
				c.Targets[2].Node = "node-b"
			},
		},
		{
			name:    "timeout longer than interval",
			edit:    func(c *Config) { c.ScrapeTimeout = time.Second },
			wantErr: []string{"collector.scrape_timeout: must be positive and at most scrape_interval (200ms), got 1s"},
		},
		{
			name:    "target timeout longer than its interval",
			edit:    func(c *Config) { c.Targets[0].Interval, c.Targets[0].Timeout = time.Second, 2*time.Second },
			wantErr: []string{"collector.targets[0].timeout: must be positive and at most the interval (1s), got 2s"},
		},
		{
			name: "source timeout longer than a target's interval",
			edit: func(c *Config) {
				c.Sources.Cadvisor.Interval, c.Sources.Cadvisor.Timeout = 15*time.Second, 10*time.Second
				c.Targets[1].Interval = 2 * time.Second
			},
			wantErr: []string{"collector.targets[1].interval: must be at least collector.sources.cadvisor.timeout (10s), which the target inherits, got 2s; or set collector.targets[1].timeout"},
		},
		{
			name: "source timeout and a shorter target interval with its own timeout",
			edit: func(c *Config) {
				c.Sources.Cadvisor.Interval, c.Sources.Cadvisor.Timeout = 15*time.Second, 10*time.Second
				c.Targets[1].Interval, c.Targets[1].Timeout = 2*time.Second, time.Second
			},
		},
		{
			// resolve caps it at the target's interval.
			name: "collector timeout longer than a target's interval",
			edit: func(c *Config) { c.Targets[1].Interval = 100 * time.Millisecond },
		},
		{
			name:    "target interval too short",
			edit:    func(c *Config) { c.Targets[1].Interval = time.Millisecond },
			wantErr: []string{"collector.targets[1].interval: must be at least 100ms, got 1ms"},
		},
		{
			name:    "message limit too small",
			edit:    func(c *Config) { c.MaxMessageBytes = 100 },
			wantErr: []string{"collector.max_message_bytes: must be at least 1024, got 100"},
		},
		{
			name:    "publish timeout",
			edit:    func(c *Config) { c.PublishTimeout = 0 },
			wantErr: []string{"collector.publish_timeout: must be positive, got 0s"},
		},
		{
			name:    "no buffer",
			edit:    func(c *Config) { c.Buffer.MaxBytes = 0 },
			wantErr: []string{"collector.buffer.max_bytes: must be positive, got 0"},
		},
		{
			name:    "spool without room",
			edit:    func(c *Config) { c.Buffer.SpoolDir, c.Buffer.SpoolMaxBytes = "/var/lib/weir/spool", 0 },
			wantErr: []string{"collector.buffer.spool_max_bytes: must be positive with a spool_dir, got 0"},
		},
		{
			name:    "memory limit under the buffer",
			edit:    func(c *Config) { c.MemoryLimit = c.Buffer.MaxBytes },
			wantErr: []string{"collector.memory_limit: must be 0 (90% of the container's limit) or above buffer.max_bytes (16777216), got 16777216"},
		},
		{
			name: "every error at once",
			edit: func(c *Config) {
				c.ScrapeInterval = 0
				c.Targets[0].URL = config.URL{}
				c.Targets[2].Source = "foo"
			},
			wantErr: []string{"collector.scrape_interval:", "collector.targets[0].url: missing", `collector.targets[2].source: unknown source "foo"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good()
			tt.edit(&c)
			err := c.Validate()
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate: no error, want %q", tt.wantErr)
			}
			for _, frag := range tt.wantErr {
				if !strings.Contains(err.Error(), frag) {
					t.Errorf("error %q does not contain %q", err, frag)
				}
			}
		})
	}
}

// TestConfigLoadsStrictly loads YAML the way cmd/weir does: defaults first,
// then the file, then Validate.
func TestConfigLoadsStrictly(t *testing.T) {
	in := `scrape_interval: 30s
targets:
  - url: https://10.0.0.1:10250/metrics/cadvisor
    source: cadvisor
    bearer_token_file: /var/run/secrets/kubernetes.io/serviceaccount/token
    tls_config:
      ca_file: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
  - url: http://10.0.0.1:10249/metrics
    source: kubeproxy
    interval: 5s
    job: proxy
`
	cfg := DefaultConfig()
	if err := config.Load("weir.yaml", []byte(in), &cfg); err != nil {
		t.Fatal(err)
	}
	cadvisor, proxy := cfg.resolve(cfg.Targets[0], "node-a"), cfg.resolve(cfg.Targets[1], "node-a")
	if cadvisor.interval != 30*time.Second || cadvisor.timeout != 10*time.Second || cadvisor.Job != "kubelet" || cadvisor.Node != "node-a" {
		t.Errorf("cadvisor resolved to %+v", cadvisor)
	}
	if cadvisor.TLS.CAFile == "" || cadvisor.BearerTokenFile == "" {
		t.Errorf("cadvisor lost its credentials: %+v", cadvisor)
	}
	// The inherited 10s timeout is capped at the 5s interval.
	if proxy.interval != 5*time.Second || proxy.timeout != 5*time.Second || proxy.Job != "proxy" {
		t.Errorf("kube-proxy resolved to %+v", proxy)
	}
	if cfg.MaxMessageBytes != 1<<20 || cfg.PublishTimeout != 10*time.Second {
		t.Errorf("defaults lost: %+v", cfg)
	}

	err := config.Load("weir.yaml", []byte("targets:\n  - url: http://k/metrics\n    sourc: kubelet\n"), new(DefaultConfig()))
	if err == nil || !strings.Contains(err.Error(), "weir.yaml:3: targets[0].sourc: field sourc not found") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestNewChecksDeps(t *testing.T) {
	_, js := natstest.Connect(t, natstest.Run(t))
	cfg := testConfig(targetAt("http://10.0.0.1:10250/metrics", proto.SourceKubelet, ""))
	deps := func() Deps { return Deps{JS: js, Cluster: "c", Node: "node-a"} }
	tests := []struct {
		name    string
		cfg     func() Config
		deps    func() Deps
		wantErr string
	}{
		{"valid", func() Config { return cfg }, deps, ""},
		{"config invalid", func() Config { c := cfg; c.PublishTimeout = 0; return c }, deps, "collector.publish_timeout"},
		{"no targets", func() Config { c := cfg; c.Targets = nil; return c }, deps, "collector.targets: empty"},
		{"no JetStream", func() Config { return cfg }, func() Deps { d := deps(); d.JS = nil; return d }, "Deps.JS is nil"},
		{"no cluster", func() Config { return cfg }, func() Deps { d := deps(); d.Cluster = ""; return d }, "Deps.Cluster is empty"},
		{"no node", func() Config { return cfg }, func() Deps { d := deps(); d.Node = ""; return d }, "collector.targets[0].node: empty, and Deps.Node is not set"},
		{
			name: "explicit node equal to the default node",
			cfg: func() Config {
				c := cfg
				c.Targets = append([]TargetConfig{}, cfg.Targets...)
				c.Targets = append(c.Targets, targetAt("http://10.0.0.1:10250/metrics", proto.SourceKubelet, "node-a"))
				return c
			},
			deps:    deps,
			wantErr: "collector.targets[1]: publishes to weir.raw.c.node-a.kubelet like collector.targets[0]",
		},
		{
			name:    "server max_payload leaves no room",
			cfg:     func() Config { return cfg },
			deps:    func() Deps { d := deps(); d.MaxPayload = 600; return d },
			wantErr: "collector.targets[0]: message limit 600 (max_message_bytes 1048576, server max_payload 600) leaves",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg(), tt.deps())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(c.loops) != 1 || c.loops[0].maxPayloadBytes >= int(cfg.MaxMessageBytes) || c.loops[0].maxPayloadBytes < int(cfg.MaxMessageBytes)-400 {
					t.Fatalf("payload limit %d for a message limit of %d", c.loops[0].maxPayloadBytes, cfg.MaxMessageBytes)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
