package router

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weirmetrics/weir/internal/broker"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natsclient"
	"github.com/weirmetrics/weir/internal/promtest"
	"github.com/weirmetrics/weir/proto"
)

// TestRouterSurvivesNATSRestart stops the NATS server under a running
// router and starts it again on the same store: the router reconnects
// and routes what arrives afterwards, without losing or repeating a scrape.
func TestRouterSurvivesNATSRestart(t *testing.T) {
	_, portStr, err := net.SplitHostPort(promtest.FreePort(t))
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	dir := t.TempDir()
	start := func() func() {
		srv, err := broker.StartEmbedded(broker.EmbeddedConfig{Host: "127.0.0.1", Port: port, StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		stop := func() { srv.Shutdown(); srv.WaitForShutdown() }
		t.Cleanup(stop)
		return stop
	}
	stopServer := start()
	nc, js, err := natsclient.Connect("nats://127.0.0.1:"+portStr, t.Name(), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sc := testStreams()
	sc.Partitions = 2
	if err := proto.EnsureStreams(context.Background(), js, sc); err != nil {
		t.Fatal(err)
	}
	e := &testEnv{js: js, reg: prometheus.NewRegistry(), streams: sc}
	_, stopRouter := e.startRouter(t, testConfig(Route{Name: "all"}))
	defer stopRouter() // before the restarted server's cleanup stops it

	subj := enrichedSubject("node-a", proto.SourceCadvisor)
	series := captureSeries(t, fixtures.Cadvisor135, 0)[:100]
	e.publishScrape(t, subj, 1000, stampedAt(series, 1000))
	e.waitRouted(t)

	stopServer()
	start()
	// JetStream takes a moment to restore its streams after the restart:
	// publish as a collector does, until it is acknowledged.
	waitFor(t, 20*time.Second, "a publish acknowledged after the restart", func() bool {
		_, err := e.tryPublishScrape(subj, 2000, stampedAt(series, 2000))
		return err == nil
	})
	waitFor(t, 20*time.Second, "the scrape after the restart routed", func() bool { return e.streamMsgs(t, "WEIR_ROUTE_ALL") >= 2 })
	e.waitRouted(t)
	got := e.readStream(t, "WEIR_ROUTE_ALL")
	if len(got) != 2 || got[0].series[0].Samples[0].Timestamp != 1000 || got[1].series[0].Samples[0].Timestamp != 2000 {
		t.Fatalf("route holds %d messages after the restart, want the scrapes at 1000 and 2000 in order", len(got))
	}
}
