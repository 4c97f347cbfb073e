package sink

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/weirmetrics/weir/internal/config"
)

// Config is one remote-write backend. Field names follow Prometheus'
// remote_write block where the meaning is the same.
type Config struct {
	// Name identifies the sink in metrics and logs and names its durable
	// consumer "sink-<name>", so a restarted sink resumes where it stopped.
	Name string `yaml:"name"`
	// URL is the remote-write endpoint.
	URL config.URL `yaml:"url"`
	// RemoteTimeout bounds one HTTP request, including reading the answer.
	RemoteTimeout time.Duration `yaml:"remote_timeout"`
	// Headers are added to every request. They may not replace the headers
	// the protocol needs (see reservedHeaders).
	Headers     map[string]string `yaml:"headers"`
	QueueConfig QueueConfig       `yaml:"queue_config"`
	// AckWait is how long the server waits for an ack before redelivering;
	// the sink extends it with InProgress for as long as it holds a message.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxAckPending bounds the messages delivered to the sink and not yet
	// acknowledged, across all its replicas.
	MaxAckPending int `yaml:"max_ack_pending"`
}

// QueueConfig tunes sending. The names are those of Prometheus'
// remote_write queue_config.
type QueueConfig struct {
	// MaxSamplesPerSend bounds the samples of one request; a larger message
	// is sent as several requests, splitting a series if needed.
	MaxSamplesPerSend int `yaml:"max_samples_per_send"`
	// MaxShards is the fixed number of goroutines sending in parallel. A
	// target's messages always go to the same shard, in order.
	MaxShards int `yaml:"max_shards"`
	// MinBackoff is the first wait before a retry; it doubles up to MaxBackoff.
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// DefaultConfig returns the defaults a configuration file overrides.
// Name and URL have no default.
func DefaultConfig() Config {
	return Config{
		RemoteTimeout: 30 * time.Second,
		QueueConfig: QueueConfig{
			MaxSamplesPerSend: 2000,
			MaxShards:         4,
			MinBackoff:        30 * time.Millisecond,
			MaxBackoff:        5 * time.Second,
		},
		AckWait:       30 * time.Second,
		MaxAckPending: 1000,
	}
}

// Limits that keep a typo from turning into a resource problem.
const (
	maxShardsLimit = 1024
	minAckWait     = time.Second // below this, redelivery races an ordinary request
)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// reservedHeaders are set by the sink for the protocol to work; a
// configured header may not replace them. Authorization is allowed, since
// bearer tokens and basic auth are configured as headers.
var reservedHeaders = map[string]bool{
	"Content-Encoding":                  true,
	"Content-Length":                    true,
	"Content-Type":                      true,
	"Connection":                        true,
	"Host":                              true,
	"Transfer-Encoding":                 true,
	"User-Agent":                        true,
	"X-Prometheus-Remote-Write-Version": true,
}

// Validate reports every invalid field at once. Each error names its path
// as in the configuration file: "sinks[<name>].queue_config.max_shards".
func (c Config) Validate() error {
	path := "sinks[" + c.Name + "]"
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", path, field, fmt.Sprintf(format, args...)))
	}
	switch {
	case c.Name == "":
		bad("name", "required")
	case !nameRE.MatchString(c.Name):
		bad("name", "must match [a-zA-Z0-9_-]+, got %q", c.Name)
	}
	if c.URL.IsZero() {
		bad("url", "required")
	}
	if c.RemoteTimeout <= 0 {
		bad("remote_timeout", "must be positive, got %s", c.RemoteTimeout)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		if err := checkHeader(name, c.Headers[name]); err != nil {
			bad("headers", "%v", err)
		}
	}
	q := c.QueueConfig
	if q.MaxSamplesPerSend <= 0 {
		bad("queue_config.max_samples_per_send", "must be positive, got %d", q.MaxSamplesPerSend)
	}
	if q.MaxShards <= 0 || q.MaxShards > maxShardsLimit {
		bad("queue_config.max_shards", "must be 1 to %d, got %d", maxShardsLimit, q.MaxShards)
	}
	if q.MinBackoff <= 0 {
		bad("queue_config.min_backoff", "must be positive, got %s", q.MinBackoff)
	}
	if q.MaxBackoff < q.MinBackoff {
		bad("queue_config.max_backoff", "must be at least min_backoff (%s), got %s", q.MinBackoff, q.MaxBackoff)
	}
	if c.AckWait < minAckWait {
		bad("ack_wait", "must be at least %s, got %s", minAckWait, c.AckWait)
	}
	if c.MaxAckPending <= 0 {
		bad("max_ack_pending", "must be positive, got %d", c.MaxAckPending)
	}
	return errors.Join(errs...)
}

// checkHeader rejects a header the protocol owns, and a name or value that
// would not survive on the wire.
func checkHeader(name, value string) error {
	if name == "" {
		return errors.New("empty header name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return fmt.Errorf("header name %q: invalid character %q", name, c)
		}
	}
	if canonical := http.CanonicalHeaderKey(name); reservedHeaders[canonical] {
		return fmt.Errorf("header %q is set by the sink and cannot be overridden", canonical)
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return fmt.Errorf("header %q: value holds a line break or NUL", name)
	}
	return nil
}
