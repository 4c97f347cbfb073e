package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/cli"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

func TestRouterRefusesBadRoutes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weir.yaml")
	writeFile(t, path, `cluster: c
routes:
  - name: ok
  - name: containers
    match: ['{__name__=~"container_.*"']
    expr: 'label("namespace") ='
`)
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"router", "--config", path}, &stdout, &stderr)
	for _, want := range []string{"weir.yaml:5: routes[1].match: selector", "weir.yaml:6: routes[1].expr: expr"} {
		if code != 1 || !strings.Contains(stderr.String(), want) {
			t.Errorf("exit %d, stderr %q: want 1 and %q", code, stderr.String(), want)
		}
	}
}

// TestRouterCommand runs `weir router` against a real NATS server: it
// creates the route streams and routes what the enricher publishes.
func TestRouterCommand(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	path := filepath.Join(t.TempDir(), "weir.yaml")
	writeFile(t, path, fmt.Sprintf(`cluster: c
nats:
  url: %s
streams:
  max_bytes: 256MiB
router:
  listen_address: 127.0.0.1:0
  publish_timeout: 5s
routes:
  - name: cpu
    match: '{__name__=~".*_cpu_.*"}'
    max_age: 1h
`, srv.ClientURL()))

	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		exit <- run(ctx, []string{"router", "--config", path}, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		select {
		case code := <-exit:
			if code != 0 {
				t.Errorf("weir router exited %d; stderr:\n%s", code, stderr.String())
			}
		case <-time.After(15 * time.Second):
			t.Error("weir router did not stop within 15s of its context ending")
		}
	}()

	waitUntil(t, 15*time.Second, "the route stream", func() bool {
		s, err := js.Stream(context.Background(), "WEIR_ROUTE_CPU")
		return err == nil && s.CachedInfo().Config.MaxAge == time.Hour
	})
	subj := proto.Subject{Stage: proto.StageEnriched, Cluster: "c", Node: "n", Source: proto.SourceCadvisor}
	series := []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "container_cpu_usage_seconds_total"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}},
		{Labels: []prompb.Label{{Name: "__name__", Value: "container_memory_rss"}}, Samples: []prompb.Sample{{Value: 2, Timestamp: 1}}},
	}
	payload, err := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: series})
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(subj.String())
	proto.Meta{MsgID: proto.MsgID(subj, 1, 0), Encoding: proto.DefaultEncoding.Name(), ScrapeMillis: 1, Chunks: 1, Samples: 2}.SetHeaders(msg.Header)
	msg.Data = payload
	if _, err := js.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 15*time.Second, "one message in the route stream", func() bool {
		s, err := js.Stream(context.Background(), "WEIR_ROUTE_CPU")
		if err != nil {
			return false
		}
		info, err := s.Info(context.Background())
		return err == nil && info.State.Msgs == 1
	})
	s, _ := js.Stream(context.Background(), "WEIR_ROUTE_CPU")
	raw, err := s.GetLastMsgForSubject(context.Background(), "weir.route.cpu.>")
	if err != nil {
		t.Fatal(err)
	}
	var b proto.Batch
	if err := proto.DefaultEncoding.Decode(raw.Data, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Series) != 1 || b.Series[0].Labels[0].Value != "container_cpu_usage_seconds_total" {
		t.Errorf("route cpu holds %v, want only the cpu series", b.Series)
	}
}

func TestExampleRoutesLoad(t *testing.T) {
	cfg, err := loadConfig("../../examples/weir.yaml", cli.Overrides{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Routes) != 2 || cfg.Routes[0].Name != "prometheus" || cfg.Routes[0].MaxAge != 48*time.Hour ||
		len(cfg.Routes[1].Match) != 2 || len(cfg.Routes[1].WriteRelabelConfigs) != 2 {
		t.Fatalf("example routes loaded as %+v", cfg.Routes)
	}
}
