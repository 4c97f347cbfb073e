package sink

import (
	"strings"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/config"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		c := DefaultConfig()
		c.Name = "default"
		c.URL = config.MustParseURL("http://prometheus:9090/api/v1/write")
		return c
	}
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr []string // every fragment must appear; none means valid
	}{
		{name: "defaults with name and url", mutate: func(*Config) {}},
		{name: "authorization header allowed", mutate: func(c *Config) { c.Headers = map[string]string{"Authorization": "Bearer x", "X-Scope-OrgID": "t"} }},
		{name: "no name", mutate: func(c *Config) { c.Name = "" }, wantErr: []string{"sinks[].name: required"}},
		{name: "bad name", mutate: func(c *Config) { c.Name = "a.b" }, wantErr: []string{`sinks[a.b].name: must match [a-zA-Z0-9_-]+, got "a.b"`}},
		{name: "no url", mutate: func(c *Config) { c.URL = config.URL{} }, wantErr: []string{"sinks[default].url: required"}},
		{name: "zero remote timeout", mutate: func(c *Config) { c.RemoteTimeout = 0 }, wantErr: []string{"sinks[default].remote_timeout: must be positive"}},
		{name: "negative label cache", mutate: func(c *Config) { c.LabelCacheSize = -1 }, wantErr: []string{"sinks[default].label_cache_size: must not be negative, got -1"}},
		{name: "no label cache", mutate: func(c *Config) { c.LabelCacheSize = 0 }},
		{
			name:    "protocol header overridden",
			mutate:  func(c *Config) { c.Headers = map[string]string{"content-type": "text/plain"} },
			wantErr: []string{`sinks[default].headers: header "Content-Type" is set by the sink`},
		},
		{
			name:    "header value with a line break",
			mutate:  func(c *Config) { c.Headers = map[string]string{"X-A": "a\r\nX-B: b"} },
			wantErr: []string{`sinks[default].headers: header "X-A": value holds a line break`},
		},
		{
			name:    "header name with a colon",
			mutate:  func(c *Config) { c.Headers = map[string]string{"X:A": "a"} },
			wantErr: []string{`sinks[default].headers: header name "X:A": invalid character ':'`},
		},
		{
			name:    "max samples per send",
			mutate:  func(c *Config) { c.QueueConfig.MaxSamplesPerSend = 0 },
			wantErr: []string{"sinks[default].queue_config.max_samples_per_send: must be positive"},
		},
		{name: "max shards", mutate: func(c *Config) { c.QueueConfig.MaxShards = -1 }, wantErr: []string{"sinks[default].queue_config.max_shards: must be 1 to 1024, got -1"}},
		{name: "min backoff", mutate: func(c *Config) { c.QueueConfig.MinBackoff = 0 }, wantErr: []string{"sinks[default].queue_config.min_backoff: must be positive"}},
		{
			name:    "max backoff below min",
			mutate:  func(c *Config) { c.QueueConfig.MaxBackoff = time.Millisecond },
			wantErr: []string{"sinks[default].queue_config.max_backoff: must be at least min_backoff (30ms), got 1ms"},
		},
		{name: "ack wait", mutate: func(c *Config) { c.AckWait = 10 * time.Millisecond }, wantErr: []string{"sinks[default].ack_wait: must be at least 1s"}},
		{name: "max ack pending", mutate: func(c *Config) { c.MaxAckPending = 0 }, wantErr: []string{"sinks[default].max_ack_pending: must be positive"}},
		{
			name: "every error at once",
			mutate: func(c *Config) {
				c.URL = config.URL{}
				c.QueueConfig.MaxShards = 0
				c.MaxAckPending = -5
			},
			wantErr: []string{"sinks[default].url", "sinks[default].queue_config.max_shards", "sinks[default].max_ack_pending"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mutate(&c)
			err := c.Validate()
			if len(tt.wantErr) == 0 {
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

// TestConfigLoad checks the YAML keys through the strict loader.
func TestConfigLoad(t *testing.T) {
	in := `
name: vm
url: http://vm:8428/api/v1/write
remote_timeout: 10s
headers:
  X-Scope-OrgID: team-a
queue_config:
  max_samples_per_send: 500
  max_shards: 8
  min_backoff: 50ms
  max_backoff: 10s
ack_wait: 1m
max_ack_pending: 200
`
	c := DefaultConfig()
	if err := config.Load("sink.yaml", []byte(in), &c); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Name, want.URL, want.RemoteTimeout = "vm", config.MustParseURL("http://vm:8428/api/v1/write"), 10*time.Second
	want.Headers = map[string]string{"X-Scope-OrgID": "team-a"}
	want.QueueConfig.MaxSamplesPerSend, want.QueueConfig.MaxShards = 500, 8
	want.QueueConfig.MinBackoff, want.QueueConfig.MaxBackoff = 50*time.Millisecond, 10*time.Second
	want.AckWait, want.MaxAckPending = time.Minute, 200
	if c.Name != want.Name || c.URL.String() != want.URL.String() || c.RemoteTimeout != want.RemoteTimeout ||
		c.Headers["X-Scope-OrgID"] != "team-a" || c.QueueConfig != want.QueueConfig || c.AckWait != want.AckWait || c.MaxAckPending != want.MaxAckPending {
		t.Fatalf("Load = %+v, want %+v", c, want)
	}

	c = DefaultConfig()
	err := config.Load("sink.yaml", []byte("name: vm\nurl: http://vm/\nqueue_config:\n  max_shard: 2\n"), &c)
	if err == nil || !strings.Contains(err.Error(), "sink.yaml:4: queue_config.max_shard: field max_shard not found") {
		t.Fatalf("Load with a typo = %v, want the file, line and key", err)
	}
}
