package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/cli"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// The example file configures every stage: the collector binary reads its
// sections and accepts the others.
func TestReadsTheExampleFile(t *testing.T) {
	cfg, err := loadConfig("../../examples/weir.yaml", cli.Overrides{Node: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != "prod-eu-1" || cfg.Node != "node-a" || len(cfg.Collector.Targets) != 3 || cfg.Collector.ScrapeInterval != 15*time.Second {
		t.Errorf("cluster %q node %q, %d targets every %s; want prod-eu-1, node-a, 3 every 15s",
			cfg.Cluster, cfg.Node, len(cfg.Collector.Targets), cfg.Collector.ScrapeInterval)
	}
}

func TestRejectsAnUnknownKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "weir.yaml")
	writeFile(t, path, "cluster: c\ncollector:\n  scrape_intervall: 15s\n")
	var stderr bytes.Buffer
	if code := run(t.Context(), []string{"--config", path}, &stderr); code != 1 {
		t.Fatalf("exit code %d, want 1; stderr:\n%s", code, stderr.String())
	}
	if want := "weir.yaml:3: collector.scrape_intervall: field scrape_intervall not found"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not say %q", stderr.String(), want)
	}
}

// TestPublishesScrapes runs the binary's command against a test kubelet
// serving the real captures and a NATS server, with a file that also
// configures the other stages, and reads the scrapes from the stream.
func TestPublishesScrapes(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	kubelet := httptest.NewServer(fixtures.Handler(fixtures.KubeletEndpoints, time.Now))
	defer kubelet.Close()
	path := filepath.Join(t.TempDir(), "weir.yaml")
	writeFile(t, path, fmt.Sprintf(`cluster: c1
node: node-a
listen_address: 127.0.0.1:0
collector:
  listen_address: 127.0.0.1:0
  scrape_interval: 1s
  scrape_timeout: 1s
  targets:
    - {url: %[1]s/metrics/cadvisor, source: cadvisor}
    - {url: %[1]s/metrics/probes, source: probes}
enricher:
  local_in_cluster: false
sinks:
  - {name: vm, url: http://127.0.0.1:8428/api/v1/write}
routes:
  - {name: vm}
alerter:
  rule_files: []
`, kubelet.URL))

	ctx, cancel := context.WithCancel(t.Context())
	exit := make(chan int, 1)
	var stderr bytes.Buffer
	go func() { exit <- run(ctx, []string{"--config", path, "--nats-url", srv.ClientURL()}, &stderr) }()

	var want []string
	for _, src := range []proto.Source{proto.SourceCadvisor, proto.SourceProbes} {
		// The stream stores each subject with its partition appended.
		want = append(want, proto.Subject{Stage: proto.StageRaw, Cluster: "c1", Node: "node-a", Source: src}.String()+".*")
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, subject := range want {
		for {
			msg, err := getLast(t.Context(), js, subject)
			if err == nil && len(msg.Data) > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no scrape on %s within 20 s (%v); stderr:\n%s", subject, err, stderr.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Errorf("exit code %d after the context ended; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Error("weir-collector did not stop within 30 s of its context ending")
	}
}

func getLast(ctx context.Context, js jetstream.JetStream, subject string) (*jetstream.RawStreamMsg, error) {
	s, err := js.Stream(ctx, proto.StreamRaw)
	if err != nil {
		return nil, err
	}
	return s.GetLastMsgForSubject(ctx, subject)
}

// The agent on every node must not carry the other stages, the NATS server
// or client-go's typed clientset, whose package inits alone touch tens of
// MiB of the binary.
func TestLinksTheCollectorAlone(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/weirmetrics/weir/enricher", "github.com/weirmetrics/weir/router",
			"github.com/weirmetrics/weir/sink", "github.com/weirmetrics/weir/alerter",
			"github.com/nats-io/nats-server/", "k8s.io/client-go/kubernetes", "github.com/expr-lang/",
		} {
			if strings.HasPrefix(pkg, banned) {
				t.Errorf("weir-collector links %s", pkg)
			}
		}
	}
}
