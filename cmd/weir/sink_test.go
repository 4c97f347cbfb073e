package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/cli"
	"github.com/weirmetrics/weir/proto"
	"github.com/weirmetrics/weir/sink"
)

// promRemoteWrite is a remote_write entry as a Prometheus 3 configuration
// holds it (Grafana Cloud's documented shape, with every queue_config key),
// pasted under sinks: with only route added.
const promRemoteWrite = `
sinks:
  - name: grafana-cloud
    route: all
    url: https://prometheus-prod-01-eu-west-0.grafana.net/api/prom/push
    remote_timeout: 20s
    headers:
      X-Scope-OrgID: team-a
    basic_auth:
      username: "123456"
      password_file: /etc/secrets/grafana-cloud
    tls_config:
      ca_file: /etc/ssl/certs/ca-certificates.crt
      server_name: prometheus-prod-01-eu-west-0.grafana.net
      insecure_skip_verify: false
    proxy_url: http://proxy.internal:3128
    follow_redirects: true
    enable_http2: true
    protobuf_message: io.prometheus.write.v2.Request
    send_exemplars: true
    send_native_histograms: false
    queue_config:
      capacity: 2500
      max_shards: 200
      min_shards: 2
      max_samples_per_send: 500
      batch_send_deadline: 5s
      min_backoff: 30ms
      max_backoff: 5s
      retry_on_http_429: false
    metadata_config:
      send: true
      send_interval: 1m
      max_samples_per_send: 500
  - name: mimir
    url: http://mimir:8080/api/v1/push
    authorization:
      type: Bearer
      credentials_file: /var/run/secrets/mimir-token
  - name: thanos
    url: http://thanos-receive:19291/api/v1/receive
    bearer_token_file: secrets/thanos-token
`

func TestPrometheusRemoteWriteBlockLoads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weir.yaml")
	writeFile(t, path, promRemoteWrite)
	cfg, err := loadConfig(path, cli.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Sinks) != 3 {
		t.Fatalf("%d sinks, want 3", len(cfg.Sinks))
	}
	g := cfg.Sinks[0]
	h := g.HTTPClientConfig
	checks := []struct {
		what string
		ok   bool
	}{
		{"route", g.RouteName() == "all"},
		{"remote_timeout", g.RemoteTimeout == 20*time.Second},
		{"headers", g.Headers["X-Scope-OrgID"] == "team-a"},
		{"basic_auth", h.BasicAuth != nil && h.BasicAuth.Username == "123456" && h.BasicAuth.PasswordFile == "/etc/secrets/grafana-cloud"},
		{"tls_config", h.TLSConfig.CAFile == "/etc/ssl/certs/ca-certificates.crt" && h.TLSConfig.ServerName == "prometheus-prod-01-eu-west-0.grafana.net"},
		{"proxy_url", h.ProxyURL.URL != nil && h.ProxyURL.Host == "proxy.internal:3128"},
		{"enable_http2", h.EnableHTTP2},
		{"protobuf_message", g.ProtobufMessage == sink.MessageV2},
		{"send_native_histograms", !g.SendNativeHistograms && g.SendExemplars},
		{"queue_config", g.QueueConfig.Capacity == 2500 && g.QueueConfig.MaxShards == 200 && g.QueueConfig.MinShards == 2 &&
			g.QueueConfig.MaxSamplesPerSend == 500 && g.QueueConfig.BatchSendDeadline == 5*time.Second &&
			g.QueueConfig.MinBackoff == 30*time.Millisecond && g.QueueConfig.MaxBackoff == 5*time.Second && !g.QueueConfig.RetryOnRateLimit},
		{"authorization", cfg.Sinks[1].HTTPClientConfig.Authorization != nil && cfg.Sinks[1].HTTPClientConfig.Authorization.CredentialsFile == "/var/run/secrets/mimir-token"},
		{"bearer_token_file, relative to the file", cfg.Sinks[2].HTTPClientConfig.BearerTokenFile == filepath.Join(filepath.Dir(path), "secrets/thanos-token")},
		{"defaults of a short entry", cfg.Sinks[1].ProtobufMessage == sink.MessageV1 && cfg.Sinks[1].QueueConfig.MaxSamplesPerSend == 2000 && cfg.Sinks[1].RouteName() == "mimir"},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("%s not read from the pasted block: %+v", c.what, g)
		}
	}
	if stream, filter, _ := cfg.Sinks[0].source(); stream != proto.RouteStreamName("all") || filter != proto.RouteFilter("all") {
		t.Errorf("sink reads %s %s, want its route's stream", stream, filter)
	}
}

func TestSinkConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"relabeling belongs to the router", "sinks:\n  - name: a\n    url: http://a/\n    write_relabel_configs:\n      - action: drop\n        regex: go_.*\n        source_labels: [__name__]\n",
			[]string{"sinks[a].write_relabel_configs: line 5: the sink does not relabel", "router"}},
		{"unknown key in basic_auth", "sinks:\n  - name: a\n    url: http://a/\n    basic_auth:\n      user: x\n", []string{"weir.yaml:5:", "field user not found"}},
		{"two kinds of auth", "sinks:\n  - name: a\n    url: http://a/\n    bearer_token: x\n    basic_auth:\n      username: u\n", []string{"sinks[a]: at most one of basic_auth, oauth2, bearer_token & bearer_token_file must be configured"}},
		{"unknown protocol", "sinks:\n  - name: a\n    url: http://a/\n    protobuf_message: v3\n", []string{`sinks[a].protobuf_message: must be "prometheus.WriteRequest" or "io.prometheus.write.v2.Request", got "v3"`}},
		{"min above max shards", "sinks:\n  - name: a\n    url: http://a/\n    queue_config:\n      min_shards: 9\n      max_shards: 2\n", []string{"sinks[a].queue_config.min_shards: must be 1 to max_shards (2), got 9"}},
		{"bad stream", "sinks:\n  - name: a\n    url: http://a/\n    stream: everything\n", []string{`sinks[a].stream: must be route, raw or enriched, got "everything"`}},
		{"bad route", "sinks:\n  - name: a\n    url: http://a/\n    route: A.B\n", []string{`sinks[a].route: must match [a-z0-9_-]+, got "A.B"`}},
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

func TestPickSink(t *testing.T) {
	mk := func(name, route string) sinkSection {
		s := defaultSinkSection()
		s.Name, s.Route = name, route
		return s
	}
	sinks := []sinkSection{mk("prom", ""), mk("vm", "containers"), mk("vm-copy", "containers")}
	tests := []struct {
		name, sink, route string
		want              string
		wantErr           string
	}{
		{name: "by route defaulting to the name", route: "prom", want: "prom"},
		{name: "by sink", sink: "vm", want: "vm"},
		{name: "by route and sink", sink: "vm-copy", route: "containers", want: "vm-copy"},
		{name: "route read by two", route: "containers", wantErr: "several sinks read it (vm, vm-copy)"},
		{name: "none chosen", wantErr: "choose one of prom, vm, vm-copy"},
		{name: "unknown route", route: "nope", wantErr: `--route "nope" --sink "": no such sink`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickSink(sinks, tt.sink, tt.route)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("pickSink = %v, want an error with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.Name != tt.want {
				t.Fatalf("pickSink = %s, %v; want %s", got.Name, err, tt.want)
			}
		})
	}
	if got, err := pickSink(sinks[:1], "", ""); err != nil || got.Name != "prom" {
		t.Errorf("the only sink: %s, %v", got.Name, err)
	}
}
