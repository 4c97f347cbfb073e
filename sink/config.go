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

	promconfig "github.com/prometheus/common/config"
	"go.yaml.in/yaml/v3"

	"github.com/weirmetrics/weir/internal/config"
)

// The two remote-write messages, named as Prometheus' protobuf_message key
// names them.
const (
	MessageV1 = "prometheus.WriteRequest"        // remote write 1.0
	MessageV2 = "io.prometheus.write.v2.Request" // remote write 2.0
)

// Config is one remote-write backend. The keys are those of a Prometheus
// remote_write entry, so that a user can paste theirs; the keys Weir adds
// (route, ack_wait, max_ack_pending) are about the stream it reads.
type Config struct {
	// Name identifies the sink in metrics and logs and names its durable
	// consumer "sink-<name>", so a restarted sink resumes where it stopped.
	Name string `yaml:"name"`
	// Route is the route whose stream the sink reads; empty means Name.
	Route string `yaml:"route"`
	// URL is the remote-write endpoint.
	URL config.URL `yaml:"url"`
	// RemoteTimeout bounds one HTTP request, including reading the answer.
	RemoteTimeout time.Duration `yaml:"remote_timeout"`
	// Headers are added to every request. They may not replace the headers
	// the protocol needs (see reservedHeaders).
	Headers map[string]string `yaml:"headers"`
	// ProtobufMessage chooses remote write 1.0 (MessageV1) or 2.0
	// (MessageV2). A 2.0 sink whose backend answers 415 falls back to 1.0.
	ProtobufMessage string `yaml:"protobuf_message"`
	// SendExemplars and SendNativeHistograms are Prometheus' switches: off,
	// exemplars and native histograms are left out of the requests.
	SendExemplars        bool `yaml:"send_exemplars"`
	SendNativeHistograms bool `yaml:"send_native_histograms"`
	// HTTPClientConfig holds basic_auth, authorization, bearer_token(_file),
	// oauth2, tls_config, proxy_url, follow_redirects and enable_http2,
	// exactly as Prometheus reads them. Files (bearer_token_file,
	// password_file, credentials_file, TLS files) are read again for every
	// request or connection, so a rotated secret is used without a restart.
	HTTPClientConfig promconfig.HTTPClientConfig `yaml:",inline"`
	QueueConfig      QueueConfig                 `yaml:"queue_config"`
	// MetadataConfig is accepted so a pasted block loads; Weir sends no
	// metadata (the scrapes it carries have none).
	MetadataConfig yaml.Node `yaml:"metadata_config"`
	// WriteRelabelConfigs is not applied by the sink: relabeling belongs to
	// the router (routes[].write_relabel_configs), which writes each
	// route's series once for every replica. Validate says so.
	WriteRelabelConfigs yaml.Node `yaml:"write_relabel_configs"`
	// AckWait is how long the server waits for an ack before redelivering;
	// the sink extends it with InProgress for as long as it holds a message.
	AckWait time.Duration `yaml:"ack_wait"`
	// MaxAckPending bounds the messages delivered to the sink and not yet
	// acknowledged, across all its replicas.
	MaxAckPending int `yaml:"max_ack_pending"`
	// LabelCacheSize bounds the labels the sink keeps of each target's last
	// payload, so that a payload of the same series is sent without reading
	// its labels: about 100 bytes a series, 500 for remote write 1.0
	// (cAdvisor). The targets beyond it have their labels read and marshalled
	// again from every payload, the largest cost of a sink; 0 keeps none.
	LabelCacheSize config.ByteSize `yaml:"label_cache_size"`
}

// QueueConfig tunes sending. The keys are those of Prometheus'
// remote_write queue_config.
type QueueConfig struct {
	// Capacity is how many samples may wait for one shard; it sets the
	// length of the shard's queue of messages (at least one).
	Capacity int `yaml:"capacity"`
	// MaxSamplesPerSend bounds the samples of one request; a larger message
	// is sent as several requests, splitting a series if needed.
	MaxSamplesPerSend int `yaml:"max_samples_per_send"`
	// BatchSendDeadline is how long a sample may wait in a shard before it
	// is sent. A shard sends each message as soon as it has it, so the
	// deadline always holds; it is accepted for compatibility.
	BatchSendDeadline time.Duration `yaml:"batch_send_deadline"`
	// MinShards and MaxShards bound the goroutines sending in parallel. The
	// sink starts at MinShards and moves between them on how busy the
	// shards are. A target's messages always go to the same shard, in order.
	MinShards int `yaml:"min_shards"`
	MaxShards int `yaml:"max_shards"`
	// MinBackoff is the first wait before a retry; it doubles up to MaxBackoff.
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// RetryOnRateLimit retries a 429 (after its Retry-After); off, a 429 is
	// a rejection like any other 4xx.
	RetryOnRateLimit bool `yaml:"retry_on_http_429"`
	// SampleAgeLimit is accepted for compatibility; zero (the default)
	// keeps every sample, which is what at-least-once asks. Other values
	// are refused.
	SampleAgeLimit time.Duration `yaml:"sample_age_limit"`
}

// DefaultConfig returns the defaults a configuration file overrides.
// Name and URL have no default.
func DefaultConfig() Config {
	http := promconfig.DefaultHTTPClientConfig
	http.EnableHTTP2 = false // as Prometheus' remote_write: one request per connection is faster
	return Config{
		RemoteTimeout:        30 * time.Second,
		ProtobufMessage:      MessageV1,
		SendExemplars:        true,
		SendNativeHistograms: true,
		HTTPClientConfig:     http,
		QueueConfig: QueueConfig{
			Capacity:          10000,
			MaxSamplesPerSend: 2000,
			BatchSendDeadline: 5 * time.Second,
			MinShards:         1,
			MaxShards:         50,
			MinBackoff:        30 * time.Millisecond,
			MaxBackoff:        5 * time.Second,
			RetryOnRateLimit:  true,
		},
		AckWait:        30 * time.Second,
		MaxAckPending:  1000,
		LabelCacheSize: maxCachedBytes,
	}
}

// RouteName is the route the sink reads: Route, or Name when it is empty.
func (c Config) RouteName() string {
	if c.Route != "" {
		return c.Route
	}
	return c.Name
}

// Limits that keep a typo from turning into a resource problem.
const (
	maxShardsLimit = 1024
	minAckWait     = time.Second // below this, redelivery races an ordinary request
)

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// routeRE is what the router accepts as a route name.
var routeRE = regexp.MustCompile(`^[a-z0-9_-]+$`)

// reservedHeaders are set by the sink for the protocol to work; a
// configured header may not replace them. Authorization is allowed, for
// backends whose scheme has no key of its own.
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
	if c.Route != "" && !routeRE.MatchString(c.Route) {
		bad("route", "must match [a-z0-9_-]+, got %q", c.Route)
	}
	if c.URL.IsZero() {
		bad("url", "required")
	}
	if c.RemoteTimeout <= 0 {
		bad("remote_timeout", "must be positive, got %s", c.RemoteTimeout)
	}
	switch c.ProtobufMessage {
	case MessageV1, MessageV2:
	default:
		bad("protobuf_message", "must be %q or %q, got %q", MessageV1, MessageV2, c.ProtobufMessage)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Headers)) {
		if err := checkHeader(name, c.Headers[name]); err != nil {
			bad("headers", "%v", err)
		}
	}
	if err := c.HTTPClientConfig.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	if c.WriteRelabelConfigs.Kind != 0 && len(c.WriteRelabelConfigs.Content) > 0 {
		bad("write_relabel_configs", "line %d: the sink does not relabel; move these rules to the route's write_relabel_configs in the router",
			c.WriteRelabelConfigs.Line)
	}
	q := c.QueueConfig
	if q.Capacity <= 0 {
		bad("queue_config.capacity", "must be positive, got %d", q.Capacity)
	}
	if q.MaxSamplesPerSend <= 0 {
		bad("queue_config.max_samples_per_send", "must be positive, got %d", q.MaxSamplesPerSend)
	}
	if q.BatchSendDeadline <= 0 {
		bad("queue_config.batch_send_deadline", "must be positive, got %s", q.BatchSendDeadline)
	}
	if q.MaxShards <= 0 || q.MaxShards > maxShardsLimit {
		bad("queue_config.max_shards", "must be 1 to %d, got %d", maxShardsLimit, q.MaxShards)
	}
	if q.MinShards <= 0 || q.MinShards > q.MaxShards {
		bad("queue_config.min_shards", "must be 1 to max_shards (%d), got %d", q.MaxShards, q.MinShards)
	}
	if q.MinBackoff <= 0 {
		bad("queue_config.min_backoff", "must be positive, got %s", q.MinBackoff)
	}
	if q.MaxBackoff < q.MinBackoff {
		bad("queue_config.max_backoff", "must be at least min_backoff (%s), got %s", q.MinBackoff, q.MaxBackoff)
	}
	if q.SampleAgeLimit != 0 {
		bad("queue_config.sample_age_limit", "not supported (the sink keeps every sample until the backend takes it); remove it or set 0s, got %s", q.SampleAgeLimit)
	}
	if c.AckWait < minAckWait {
		bad("ack_wait", "must be at least %s, got %s", minAckWait, c.AckWait)
	}
	if c.LabelCacheSize < 0 {
		bad("label_cache_size", "must not be negative, got %d", c.LabelCacheSize)
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
