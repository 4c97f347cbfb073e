package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/broker"
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

// TestScrapesWhileNATSIsAwayAtStart: a collector that starts while NATS
// cannot be reached (a node rebooting during an outage) scrapes into its
// buffer from the start, and publishes those scrapes once NATS is up.
func TestScrapesWhileNATSIsAwayAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	var scrapes atomic.Int64
	serve := fixtures.Handler(fixtures.KubeletEndpoints, time.Now)
	kubelet := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scrapes.Add(1)
		serve.ServeHTTP(w, r)
	}))
	defer kubelet.Close()
	path := filepath.Join(t.TempDir(), "weir.yaml")
	writeFile(t, path, fmt.Sprintf(`cluster: c1
node: node-a
collector:
  listen_address: 127.0.0.1:0
  scrape_interval: 1s
  scrape_timeout: 1s
  targets:
    - {url: %s/metrics/probes, source: probes}
`, kubelet.URL))
	ctx, cancel := context.WithCancel(t.Context())
	exit := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		exit <- run(ctx, []string{"--config", path, "--nats-url", fmt.Sprintf("nats://127.0.0.1:%d", port)}, &stderr)
	}()
	defer func() {
		cancel()
		select {
		case <-exit:
		case <-time.After(30 * time.Second):
			t.Error("weir-collector did not stop within 30 s of its context ending")
		}
	}()

	for deadline := time.Now().Add(15 * time.Second); scrapes.Load() < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d scrapes in 15 s while NATS was away; stderr:\n%s", scrapes.Load(), stderr.String())
		}
	}
	natsUp := time.Now()
	srv, err := broker.StartEmbedded(broker.EmbeddedConfig{Port: port, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	_, js := natstest.Connect(t, srv)
	subject := proto.Subject{Stage: proto.StageRaw, Cluster: "c1", Node: "node-a", Source: proto.SourceProbes}.String() + ".*"
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no scrape from before NATS was up reached %s within 30 s; stderr:\n%s", proto.StreamRaw, stderr.String())
		}
		s, err := js.Stream(ctx, proto.StreamRaw)
		if err != nil {
			continue
		}
		first, err := s.GetMsg(ctx, 1)
		if err != nil {
			continue
		}
		meta, err := proto.ParseMeta(first.Header)
		if err != nil {
			t.Fatalf("first message %s: %v", first.Subject, err)
		}
		if ok, _ := filepath.Match(subject, first.Subject); !ok || meta.ScrapeMillis >= natsUp.UnixMilli() {
			t.Fatalf("first message %s scraped at %d, want one of %s scraped before NATS was up (%d)",
				first.Subject, meta.ScrapeMillis, subject, natsUp.UnixMilli())
		}
		return
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
