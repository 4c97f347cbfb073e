package alerter

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/weirmetrics/weir/internal/config"
)

// Config is the alerter section of the Weir file.
type Config struct {
	// RuleFiles are paths or globs of rule files (the Prometheus layout,
	// expr-lang expressions).
	RuleFiles []string `yaml:"rule_files"`
	// EvaluationInterval is the interval of a group that names none.
	EvaluationInterval time.Duration `yaml:"evaluation_interval"`
	// ResendDelay is how often a firing alert is sent again to keep it
	// alive in Alertmanager, as Prometheus's --rules.alert.resend-delay.
	ResendDelay time.Duration `yaml:"resend_delay"`
	// LookbackDelta is how old a sample may be and still be a series'
	// latest value.
	LookbackDelta time.Duration `yaml:"lookback_delta"`
	// ReloadCheckInterval is how often the rule files are checked for
	// changes (SIGHUP reloads at once).
	ReloadCheckInterval time.Duration `yaml:"reload_check_interval"`
	// Alertmanagers receive every alert (API v2).
	Alertmanagers []AlertmanagerConfig `yaml:"alertmanagers"`
	// Durable names the consumer on WEIR_ENRICHED. Aggregations need every
	// series in one process, so the consumer has a pinned priority group:
	// one alerter of a durable reads and evaluates, the others stand by.
	Durable string `yaml:"durable"`
	// PinnedTTL is how long after the active alerter stopped pulling a
	// standby one takes over.
	PinnedTTL time.Duration `yaml:"pinned_ttl"`
	// StateBucket is the JetStream key-value bucket that holds alert state.
	StateBucket string `yaml:"state_bucket"`
	// Warmup is how long a restarted alerter keeps the alerts it restored
	// while their series are not back in its windows yet: at least a few
	// scrape intervals, so a restart neither resolves a firing alert nor
	// restarts the for clock of a pending one.
	Warmup time.Duration `yaml:"warmup"`
	// MaxSeries bounds the series whose windows the alerter holds; a new
	// series past it is not kept (weir_alerter_series_dropped_total).
	MaxSeries int `yaml:"max_series"`
	// AckWait is how long the alerter may hold a message before it is
	// delivered again.
	AckWait time.Duration `yaml:"ack_wait"`
}

// AlertmanagerConfig is one Alertmanager.
type AlertmanagerConfig struct {
	// URL is the Alertmanager's base URL; /api/v2/alerts is appended.
	URL     config.URL    `yaml:"url"`
	Timeout time.Duration `yaml:"timeout"`
}

// DefaultConfig evaluates every 30s and re-sends firing alerts every minute,
// as Prometheus does.
func DefaultConfig() Config {
	return Config{
		EvaluationInterval:  30 * time.Second,
		ResendDelay:         time.Minute,
		LookbackDelta:       5 * time.Minute,
		ReloadCheckInterval: 10 * time.Second,
		Durable:             "weir-alerter",
		StateBucket:         "WEIR_ALERTER_STATE",
		AckWait:             30 * time.Second,
		Warmup:              time.Minute,
		PinnedTTL:           30 * time.Second,
		MaxSeries:           1_000_000,
	}
}

// UnmarshalYAML gives every Alertmanager its default timeout.
func (a *AlertmanagerConfig) UnmarshalYAML(unmarshal func(any) error) error {
	*a = AlertmanagerConfig{Timeout: 10 * time.Second}
	type plain AlertmanagerConfig
	return unmarshal((*plain)(a))
}

// Validate checks the configuration; the rule files are checked when they
// are loaded.
func (c Config) Validate() error {
	var errs []error
	if len(c.RuleFiles) == 0 {
		errs = append(errs, errors.New("alerter.rule_files: empty"))
	}
	for i, f := range c.RuleFiles {
		if _, err := filepath.Match(f, ""); err != nil {
			errs = append(errs, fmt.Errorf("alerter.rule_files[%d]: %q: %w", i, f, err))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"evaluation_interval", c.EvaluationInterval}, {"resend_delay", c.ResendDelay}, {"lookback_delta", c.LookbackDelta},
		{"reload_check_interval", c.ReloadCheckInterval}, {"ack_wait", c.AckWait}, {"warmup", c.Warmup}, {"pinned_ttl", c.PinnedTTL}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("alerter.%s: must be positive, got %s", d.name, d.v))
		}
	}
	for i, am := range c.Alertmanagers {
		if am.URL.IsZero() {
			errs = append(errs, fmt.Errorf("alerter.alertmanagers[%d].url: empty", i))
		}
		if am.Timeout <= 0 {
			errs = append(errs, fmt.Errorf("alerter.alertmanagers[%d].timeout: must be positive, got %s", i, am.Timeout))
		}
	}
	if c.MaxSeries < 1 {
		errs = append(errs, fmt.Errorf("alerter.max_series: must be positive, got %d", c.MaxSeries))
	}
	if c.Durable == "" {
		errs = append(errs, errors.New("alerter.durable: empty"))
	}
	if c.StateBucket == "" {
		errs = append(errs, errors.New("alerter.state_bucket: empty"))
	}
	return errors.Join(errs...)
}

// ruleFiles expands the globs; a pattern that matches nothing is an error,
// since a typo would otherwise silently disable every rule in it.
func (c Config) ruleFiles() ([]string, error) {
	var out []string
	for _, p := range c.RuleFiles {
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("alerter.rule_files: %q: %w", p, err)
		}
		if len(m) == 0 {
			return nil, fmt.Errorf("alerter.rule_files: %q matches no file", p)
		}
		out = append(out, m...)
	}
	return out, nil
}
