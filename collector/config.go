package collector

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/proto"
)

// Limits that configuration values are checked against.
const (
	// minScrapeInterval keeps scrapes at least this far apart. The scrape
	// time in milliseconds is part of every Nats-Msg-Id, and no kubelet
	// should be scraped faster anyway.
	minScrapeInterval = 100 * time.Millisecond
	// minMessageBytes leaves room for the headers and for at least one
	// large cAdvisor series in every message.
	minMessageBytes = 1 << 10
)

// Config is the collector section of the Weir configuration.
type Config struct {
	// ScrapeInterval is how often each target is scraped, unless the target
	// sets its own interval.
	ScrapeInterval time.Duration `yaml:"scrape_interval"`
	// ScrapeTimeout bounds one scrape, unless the target sets its own. A
	// target with a shorter interval than this uses its interval instead.
	ScrapeTimeout time.Duration `yaml:"scrape_timeout"`
	// MaxMessageBytes bounds one published message. The limit used is the
	// smaller of this and the server's max_payload, minus room for headers;
	// a larger scrape is split into chunks.
	MaxMessageBytes config.ByteSize `yaml:"max_message_bytes"`
	// PublishTimeout is how long to wait for JetStream to acknowledge every
	// message of one scrape.
	PublishTimeout time.Duration `yaml:"publish_timeout"`
	// Buffer holds the scrapes not published yet while NATS is away.
	Buffer BufferConfig `yaml:"buffer"`
	// MemoryLimit is the soft memory limit of `weir collector`, what
	// GOMEMLIMIT sets: the garbage collector works harder near it rather
	// than let the heap grow to twice what is live. 0, the default, is
	// 90% of the container's memory limit (cgroup v2 memory.max), none
	// without one; GOMEMLIMIT in the environment wins over both. `weir all`
	// serves every stage and leaves it to GOMEMLIMIT.
	MemoryLimit config.ByteSize `yaml:"memory_limit"`
	// ScrapeOptions are the defaults of every target; a source or a
	// target can override each.
	ScrapeOptions `yaml:",inline"`
	// Sources turns each source on or off and sets its interval and
	// options; they apply to static and discovered targets alike.
	Sources Sources `yaml:"sources"`
	// Discovery finds the targets in a cluster instead of Targets.
	Discovery Discovery `yaml:"discovery"`
	// Targets are the endpoints to scrape, besides discovered ones.
	Targets []TargetConfig `yaml:"targets"`
}

// BufferConfig bounds what waits while NATS cannot be reached or JetStream
// does not acknowledge: scrapes are published in order once it is back,
// and the oldest are dropped, and counted, when a limit is reached.
type BufferConfig struct {
	// MaxBytes bounds the scrapes held in memory, payloads and overhead.
	MaxBytes config.ByteSize `yaml:"max_bytes"`
	// SpoolDir, when set, receives the oldest scrapes when memory is full,
	// and every waiting scrape at shutdown; a restarted collector publishes
	// them first. One directory per collector process.
	SpoolDir string `yaml:"spool_dir"`
	// SpoolMaxBytes bounds the spool's files.
	SpoolMaxBytes config.ByteSize `yaml:"spool_max_bytes"`
}

// ScrapeOptions are Prometheus's scrape settings, with the same names and
// meaning as in a Prometheus scrape_config. A zero value inherits.
type ScrapeOptions struct {
	// HonorTimestamps keeps the timestamps a target sets (cAdvisor,
	// /stats/summary); false stamps every sample with the scrape time.
	// Default true.
	HonorTimestamps *bool `yaml:"honor_timestamps"`
	// SampleLimit fails a scrape with more samples than this, counted
	// after metric_relabel_configs. 0 is no limit.
	SampleLimit int `yaml:"sample_limit"`
	// BodySizeLimit fails a scrape whose body, decompressed, is larger.
	// 0 is the default of 64MiB: memory stays bounded.
	BodySizeLimit config.ByteSize `yaml:"body_size_limit"`
	// LabelLimit fails a scrape with a series of more labels (the name
	// and the target labels included). 0 is no limit.
	LabelLimit int `yaml:"label_limit"`
	// LabelNameLengthLimit and LabelValueLengthLimit fail a scrape with a
	// longer label name or value. 0 is no limit.
	LabelNameLengthLimit  int `yaml:"label_name_length_limit"`
	LabelValueLengthLimit int `yaml:"label_value_length_limit"`
	// MetricRelabelConfigs rewrite or drop scraped series, exactly as
	// Prometheus's metric_relabel_configs. A non-empty list replaces the
	// inherited one.
	MetricRelabelConfigs []*relabel.Config `yaml:"metric_relabel_configs"`
}

// over returns o with every unset field taken from base.
func (o ScrapeOptions) over(base ScrapeOptions) ScrapeOptions {
	if o.HonorTimestamps == nil {
		o.HonorTimestamps = base.HonorTimestamps
	}
	if o.SampleLimit == 0 {
		o.SampleLimit = base.SampleLimit
	}
	if o.BodySizeLimit == 0 {
		o.BodySizeLimit = base.BodySizeLimit
	}
	if o.LabelLimit == 0 {
		o.LabelLimit = base.LabelLimit
	}
	if o.LabelNameLengthLimit == 0 {
		o.LabelNameLengthLimit = base.LabelNameLengthLimit
	}
	if o.LabelValueLengthLimit == 0 {
		o.LabelValueLengthLimit = base.LabelValueLengthLimit
	}
	if len(o.MetricRelabelConfigs) == 0 {
		o.MetricRelabelConfigs = base.MetricRelabelConfigs
	}
	return o
}

func (o ScrapeOptions) validate(path string, add func(string, ...any)) {
	for name, v := range map[string]int{
		"sample_limit": o.SampleLimit, "label_limit": o.LabelLimit,
		"label_name_length_limit": o.LabelNameLengthLimit, "label_value_length_limit": o.LabelValueLengthLimit,
	} {
		if v < 0 {
			add("%s%s: must not be negative, got %d", path, name, v)
		}
	}
	if o.BodySizeLimit < 0 {
		add("%sbody_size_limit: must not be negative, got %d", path, o.BodySizeLimit)
	}
	for i, rc := range o.MetricRelabelConfigs {
		if rc == nil {
			add("%smetric_relabel_configs[%d]: empty", path, i)
			continue
		}
		if err := rc.Validate(model.UTF8Validation); err != nil {
			add("%smetric_relabel_configs[%d]: %v", path, i, err)
		}
	}
}

// SourceConfig turns one source on or off and overrides the collector
// defaults for its targets.
type SourceConfig struct {
	// Enabled scrapes the source; default true.
	Enabled *bool `yaml:"enabled"`
	// Interval and Timeout override scrape_interval and scrape_timeout.
	Interval time.Duration `yaml:"interval"`
	Timeout  time.Duration `yaml:"timeout"`
	// ScrapeOptions override the collector's.
	ScrapeOptions `yaml:",inline"`
}

// Sources configures each source.
type Sources struct {
	Kubelet     SourceConfig `yaml:"kubelet"`
	Cadvisor    SourceConfig `yaml:"cadvisor"`
	Resource    SourceConfig `yaml:"resource"`
	Probes      SourceConfig `yaml:"probes"`
	Summary     SourceConfig `yaml:"summary"`
	KubeProxy   SourceConfig `yaml:"kubeproxy"`
	ProxyHealth SourceConfig `yaml:"proxyhealth"`
}

// Get returns the configuration of source s.
func (s *Sources) Get(src proto.Source) *SourceConfig {
	switch src {
	case proto.SourceKubelet:
		return &s.Kubelet
	case proto.SourceCadvisor:
		return &s.Cadvisor
	case proto.SourceResource:
		return &s.Resource
	case proto.SourceProbes:
		return &s.Probes
	case proto.SourceSummary:
		return &s.Summary
	case proto.SourceKubeProxy:
		return &s.KubeProxy
	case proto.SourceKubeProxyHealth:
		return &s.ProxyHealth
	}
	return &SourceConfig{}
}

// enabled reports whether src is scraped.
func (s *Sources) enabled(src proto.Source) bool {
	sc := s.Get(src)
	if sc.Enabled == nil {
		return true
	}
	return *sc.Enabled
}

// TargetConfig is one endpoint to scrape.
type TargetConfig struct {
	// URL is the full URL of the endpoint, path included.
	URL config.URL `yaml:"url"`
	// Source is what the endpoint serves; it is the last subject token.
	Source proto.Source `yaml:"source"`
	// Node overrides Deps.Node, so that one collector can scrape several
	// nodes (the demo, and later a central mode).
	Node string `yaml:"node"`
	// Job is the job label; "kubelet" for kubelet sources and "kube-proxy"
	// for kubeproxy by default.
	Job string `yaml:"job"`
	// Interval overrides Config.ScrapeInterval.
	Interval time.Duration `yaml:"interval"`
	// Timeout overrides Config.ScrapeTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// BearerTokenFile holds the token sent as "Authorization: Bearer". It
	// is read again at every scrape so that a rotated token is picked up.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// TLS configures https targets.
	TLS TLSConfig `yaml:"tls_config"`
	// ScrapeOptions override the source's and the collector's.
	ScrapeOptions `yaml:",inline"`
}

// TLSConfig configures how the certificate of an https target is checked.
type TLSConfig struct {
	// CAFile holds the PEM certificates that sign the target's certificate.
	// Empty means the system roots.
	CAFile string `yaml:"ca_file"`
	// InsecureSkipVerify accepts any certificate. For test clusters only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// DefaultConfig scrapes every 15s with a 10s timeout, as Prometheus does,
// and publishes messages of at most 1 MiB, the NATS default max_payload.
func DefaultConfig() Config {
	return Config{
		ScrapeInterval:  15 * time.Second,
		ScrapeTimeout:   10 * time.Second,
		MaxMessageBytes: 1 << 20,
		PublishTimeout:  10 * time.Second,
		Buffer: BufferConfig{
			MaxBytes:      16 << 20,
			SpoolMaxBytes: 256 << 20,
		},
		Discovery: DefaultDiscovery(),
	}
}

// Validate checks the configuration and returns every problem at once,
// each named by its path, such as
// `collector.targets[2].source: unknown source "foo"`. A configuration
// without targets is valid, so that stages other than the collector can
// share the file; New rejects it.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.ScrapeInterval < minScrapeInterval {
		add("collector.scrape_interval: must be at least %s, got %s", minScrapeInterval, c.ScrapeInterval)
	}
	if c.ScrapeTimeout <= 0 || c.ScrapeTimeout > c.ScrapeInterval {
		add("collector.scrape_timeout: must be positive and at most scrape_interval (%s), got %s", c.ScrapeInterval, c.ScrapeTimeout)
	}
	if c.MaxMessageBytes < minMessageBytes {
		add("collector.max_message_bytes: must be at least %d, got %d", minMessageBytes, c.MaxMessageBytes)
	}
	if c.PublishTimeout <= 0 {
		add("collector.publish_timeout: must be positive, got %s", c.PublishTimeout)
	}
	if c.Buffer.MaxBytes <= 0 {
		add("collector.buffer.max_bytes: must be positive, got %d", c.Buffer.MaxBytes)
	}
	if c.Buffer.SpoolDir != "" && c.Buffer.SpoolMaxBytes <= 0 {
		add("collector.buffer.spool_max_bytes: must be positive with a spool_dir, got %d", c.Buffer.SpoolMaxBytes)
	}
	// Below what the buffer alone may hold, an outage of NATS would keep
	// the garbage collector running without end.
	if c.MemoryLimit != 0 && c.MemoryLimit <= c.Buffer.MaxBytes {
		add("collector.memory_limit: must be 0 (90%% of the container's limit) or above buffer.max_bytes (%d), got %d", c.Buffer.MaxBytes, c.MemoryLimit)
	}

	c.ScrapeOptions.validate("collector.", add)
	for _, src := range proto.Sources {
		sc := c.Sources.Get(src)
		path := fmt.Sprintf("collector.sources.%s.", src)
		if sc.Interval != 0 && sc.Interval < minScrapeInterval {
			add("%sinterval: must be at least %s, got %s", path, minScrapeInterval, sc.Interval)
		}
		interval := cmp.Or(sc.Interval, c.ScrapeInterval)
		if sc.Timeout < 0 || sc.Timeout > interval {
			add("%stimeout: must be positive and at most the interval (%s), got %s", path, interval, sc.Timeout)
		}
		sc.ScrapeOptions.validate(path, add)
	}
	if err := c.Discovery.validate(); err != nil {
		errs = append(errs, err)
	}

	// The node and source name the subject, and the subject and scrape time
	// make the Nats-Msg-Id: two targets with the same pair would publish
	// under each other's ids. An empty node is Deps.Node, the same for all.
	type origin struct {
		node   string
		source proto.Source
	}
	seen := map[origin]int{}
	for i, t := range c.Targets {
		path := fmt.Sprintf("collector.targets[%d]", i)
		if t.URL.IsZero() {
			add("%s.url: missing", path)
		}
		switch {
		case t.Source == "":
			add("%s.source: missing; one of %v", path, supportedSources())
		case !t.Source.Valid():
			add("%s.source: unknown source %q; one of %v", path, t.Source, supportedSources())
		}
		sc := c.Sources.Get(t.Source)
		interval := cmp.Or(t.Interval, sc.Interval, c.ScrapeInterval)
		if t.Interval != 0 && t.Interval < minScrapeInterval {
			add("%s.interval: must be at least %s, got %s", path, minScrapeInterval, t.Interval)
		}
		if t.Timeout < 0 || (t.Timeout > 0 && t.Timeout > interval) {
			add("%s.timeout: must be positive and at most the interval (%s), got %s", path, interval, t.Timeout)
		}
		// resolve caps the collector's scrape_timeout at a target's
		// interval, but a source's timeout is used as it is: a target's own
		// shorter interval would let its scrapes overlap. Without an
		// interval of its own, the source's check above covers it.
		if t.Timeout == 0 && t.Interval != 0 && sc.Timeout > t.Interval {
			add("%s.interval: must be at least collector.sources.%s.timeout (%s), which the target inherits, got %s; or set %s.timeout",
				path, t.Source, sc.Timeout, t.Interval, path)
		}
		t.ScrapeOptions.validate(path+".", add)
		o := origin{t.Node, t.Source}
		if first, dup := seen[o]; dup {
			add("%s: node %q and source %q are already scraped by collector.targets[%d]; each pair must be unique because it names the subject and message ids",
				path, nodeName(t.Node), t.Source, first)
		} else {
			seen[o] = i
		}
	}
	return errors.Join(errs...)
}

func nodeName(n string) string {
	if n == "" {
		return "(default node)"
	}
	return n
}

// supportedSources lists the sources a target may name.
func supportedSources() []proto.Source { return proto.Sources }

// defaultJob is the job label Prometheus setups use for each source
// (kube-prometheus and the Prometheus Helm charts).
func defaultJob(s proto.Source) string {
	if s == proto.SourceKubeProxy || s == proto.SourceKubeProxyHealth {
		return "kube-proxy"
	}
	return "kubelet"
}

// target is a TargetConfig with the defaults and Deps applied.
type target struct {
	TargetConfig
	interval time.Duration
	timeout  time.Duration
	opts     ScrapeOptions // resolved: target over source over collector
}

// resolve applies the collector defaults and the default node to t.
func (c Config) resolve(t TargetConfig, defaultNode string) target {
	sc := c.Sources.Get(t.Source)
	r := target{TargetConfig: t, interval: cmp.Or(t.Interval, sc.Interval), timeout: cmp.Or(t.Timeout, sc.Timeout)}
	r.opts = t.ScrapeOptions.over(sc.ScrapeOptions).over(c.ScrapeOptions)
	if r.Node == "" {
		r.Node = defaultNode
	}
	if r.Job == "" {
		r.Job = defaultJob(t.Source)
	}
	if r.interval == 0 {
		r.interval = c.ScrapeInterval
	}
	if r.timeout == 0 {
		// An inherited timeout longer than the target's own interval would
		// let scrapes overlap; the interval is the most it can use.
		r.timeout = min(c.ScrapeTimeout, r.interval)
	}
	return r
}
