package collector

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/value"

	"github.com/weirmetrics/weir/internal/broker"
	"github.com/weirmetrics/weir/internal/buffer"
	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

// stoppableNATS is an embedded JetStream server that a test stops and
// starts again on the same port and store, as a NATS pod restarts.
type stoppableNATS struct {
	t    *testing.T
	dir  string
	port int
	s    *server.Server
}

func startStoppableNATS(t *testing.T) (*stoppableNATS, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	n := &stoppableNATS{t: t, dir: t.TempDir()}
	n.start()
	n.port = n.s.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.stop)
	nc, js := natstest.Connect(t, n.s)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := proto.EnsureStreams(ctx, js, proto.DefaultStreamsConfig()); err != nil {
		t.Fatal(err)
	}
	return n, nc, js
}

func (n *stoppableNATS) start() {
	port := n.port
	if port == 0 {
		port = -1 // the first start picks a free port, the next ones reuse it
	}
	s, err := broker.StartEmbedded(broker.EmbeddedConfig{Port: port, StoreDir: n.dir})
	if err != nil {
		n.t.Fatal(err)
	}
	n.s = s
}

func (n *stoppableNATS) stop() {
	if n.s != nil {
		n.s.Shutdown()
		n.s.WaitForShutdown()
		n.s = nil
	}
}

// bufferConfig scrapes the small probes endpoint every interval and
// retries publishes quickly.
func bufferConfig(t *testing.T, interval time.Duration, maxBytes int64, spoolDir string) (Config, string) {
	srv := httptest.NewServer(fixtures.Handler(fixtures.KubeletEndpoints, time.Now))
	t.Cleanup(srv.Close)
	cfg := testConfig(targetAt(srv.URL+"/metrics/probes", proto.SourceProbes, ""))
	cfg.ScrapeInterval, cfg.ScrapeTimeout = interval, interval
	cfg.PublishTimeout = time.Second
	cfg.Buffer = BufferConfig{MaxBytes: config.ByteSize(maxBytes), SpoolDir: spoolDir, SpoolMaxBytes: 64 << 20}
	return cfg, subjectOf("node-a", proto.SourceProbes)
}

// storedMillis reads the scrape times stored for subject, in stream order,
// failing on a scrape stored twice (readRaw fails on a repeated chunk).
func storedMillis(t *testing.T, js jetstream.JetStream, subject string) []int64 {
	t.Helper()
	var out []int64
	for _, s := range readRaw(t, js) {
		if s.subject != subject {
			continue
		}
		if !s.complete() {
			t.Fatalf("scrape %d of %s is missing chunks", s.millis, subject)
		}
		out = append(out, s.millis)
	}
	return out
}

// checkContiguous fails unless millis rise by about one interval each.
func checkContiguous(t *testing.T, millis []int64, interval time.Duration) {
	t.Helper()
	for i := 1; i < len(millis); i++ {
		gap := time.Duration(millis[i]-millis[i-1]) * time.Millisecond
		if gap <= 0 {
			t.Fatalf("scrape %d (%d) stored after a later one (%d): out of order", i, millis[i], millis[i-1])
		}
		if gap > interval*3/2 {
			t.Fatalf("scrapes %d and %d are %s apart, interval %s: scrapes in between are missing", i-1, i, gap, interval)
		}
	}
}

func bufferGauge(t *testing.T, reg prometheus.Gatherer, name, where string) float64 {
	return metricValue(t, reg, name, map[string]string{"where": where})
}

// TestNATSOutage stops NATS for 30 s while the collector scrapes, then
// starts it again on the same store: every scrape arrives, in scrape order,
// exactly once, none is dropped, and the buffer is empty again.
func TestNATSOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("a 30 s outage")
	}
	n, nc, js := startStoppableNATS(t)
	interval := 500 * time.Millisecond
	cfg, subject := bufferConfig(t, interval, 16<<20, "")
	reg := prometheus.NewRegistry()
	_, stop := startCollector(t, cfg, newDeps(t, nc, js, reg, nil))
	published := func() float64 {
		return metricValue(t, reg, "weir_collector_samples_published_total", map[string]string{"source": "probes"})
	}
	waitUntil(t, "a published scrape", func() bool { return published() > 0 })

	n.stop()
	outage := time.Now()
	time.Sleep(30 * time.Second) // the outage itself: nothing to poll
	waiting := bufferGauge(t, reg, "weir_collector_buffer_scrapes", "memory")
	if waiting < 30*time.Second.Seconds()/interval.Seconds()/2 {
		t.Fatalf("%v scrapes buffered after a 30 s outage at a %s interval", waiting, interval)
	}
	if b := bufferGauge(t, reg, "weir_collector_buffer_bytes", "memory"); b <= 0 {
		t.Fatalf("weir_collector_buffer_bytes{where=memory} = %v while scrapes wait", b)
	}
	n.start()
	waitUntil(t, "the buffer to drain", func() bool {
		return bufferGauge(t, reg, "weir_collector_buffer_scrapes", "memory") == 0
	})
	stop()

	millis := storedMillis(t, js, subject)
	checkContiguous(t, millis, interval)
	during := 0
	for _, m := range millis {
		if m >= outage.UnixMilli() && m < outage.Add(30*time.Second).UnixMilli() {
			during++
		}
	}
	if want := int(30 * time.Second / interval); during < want-2 {
		t.Fatalf("%d scrapes from the 30 s outage stored, want about %d", during, want)
	}
	if v := metricValue(t, reg, "weir_collector_buffer_dropped_scrapes_total", map[string]string{"source": "probes"}); v != 0 {
		t.Fatalf("%v scrapes dropped; the buffer had room for all", v)
	}
}

// TestBufferFullDropsOldest keeps NATS away with a buffer of a few
// scrapes: the oldest are dropped and counted, memory stays within the
// limit, and once NATS is back the newest scrapes arrive, in order.
func TestBufferFullDropsOldest(t *testing.T) {
	n, nc, js := startStoppableNATS(t)
	n.stop()
	interval := 200 * time.Millisecond
	probe, subject := bufferConfig(t, interval, 1<<30, "")
	scrapeSize := func() int64 { // one probes scrape as the buffer counts it
		body := fixtures.Read(fixtures.Probes)
		return int64(len(body)) // an upper bound: the encoding is far smaller than the text
	}()
	cfg := probe
	cfg.Buffer.MaxBytes = config.ByteSize(scrapeSize)
	reg := prometheus.NewRegistry()
	logs, log := newLogRecorder()
	_, stop := startCollector(t, cfg, newDeps(t, nc, js, reg, log))
	dropped := func(name string) float64 {
		return metricValue(t, reg, name, map[string]string{"source": "probes"})
	}
	waitUntil(t, "dropped scrapes", func() bool { return dropped("weir_collector_buffer_dropped_scrapes_total") >= 3 })
	if b := bufferGauge(t, reg, "weir_collector_buffer_bytes", "memory"); b > float64(scrapeSize) || b <= 0 {
		t.Fatalf("weir_collector_buffer_bytes{where=memory} = %v, limit %d", b, scrapeSize)
	}
	if s := dropped("weir_collector_buffer_dropped_samples_total"); s < 3*3 {
		t.Fatalf("weir_collector_buffer_dropped_samples_total = %v for %v scrapes", s, dropped("weir_collector_buffer_dropped_scrapes_total"))
	}
	if len(logs.find("buffer full: dropped the oldest scrapes", nil)) == 0 {
		t.Fatal("drops not logged")
	}

	n.start()
	waitUntil(t, "scrapes after NATS is back", func() bool { return len(storedMillis(t, js, subject)) >= 3 })
	stop()
	scraped := metricValue(t, reg, "weir_collector_scrapes_total", map[string]string{"source": "probes"})
	lost := dropped("weir_collector_buffer_dropped_scrapes_total")
	millis := storedMillis(t, js, subject)
	// Stored without a hole from the first kept scrape on: what was
	// dropped came before it, the oldest. Had the newest been dropped, the
	// hole would be where NATS came back.
	checkContiguous(t, millis, interval)
	if got := float64(len(millis)) + lost; got < scraped-1 || got > scraped {
		t.Fatalf("%d stored + %v dropped, %v scraped: scrapes unaccounted for", len(millis), lost, scraped)
	}
}

// TestSpoolSurvivesRestart stops a collector while NATS is away: its
// scrapes go to the spool, and the next collector on the same directory
// publishes them, in order, although it now scrapes another node: a
// spooled subject without a target still gets its sender.
func TestSpoolSurvivesRestart(t *testing.T) {
	n, nc, js := startStoppableNATS(t)
	n.stop()
	spool := t.TempDir()
	interval := 200 * time.Millisecond
	cfg, subject := bufferConfig(t, interval, 16<<20, spool)

	reg := prometheus.NewRegistry()
	_, stop := startCollector(t, cfg, newDeps(t, nc, js, reg, nil))
	waitUntil(t, "five scrapes", func() bool {
		return metricValue(t, reg, "weir_collector_scrapes_total", map[string]string{"source": "probes"}) >= 5
	})
	stop()
	scraped := metricValue(t, reg, "weir_collector_scrapes_total", map[string]string{"source": "probes"})
	files, _ := filepath.Glob(filepath.Join(spool, "*.scrape"))
	if float64(len(files)) < scraped-1 || len(files) == 0 {
		t.Fatalf("%d spool files after %v scrapes", len(files), scraped)
	}

	n.start()
	cfg2 := cfg
	cfg2.Targets = []TargetConfig{cfg.Targets[0]}
	cfg2.Targets[0].Node = "node-b"
	other := subjectOf("node-b", proto.SourceProbes)
	reg2 := prometheus.NewRegistry()
	_, stop2 := startCollector(t, cfg2, newDeps(t, nc, js, reg2, nil))
	waitUntil(t, "the spooled scrapes and a new one", func() bool {
		return len(storedMillis(t, js, subject)) >= len(files) && len(storedMillis(t, js, other)) > 0
	})
	stop2()
	millis := storedMillis(t, js, subject)
	if len(millis) != len(files) {
		t.Fatalf("%d scrapes of the first run stored, %d were spooled", len(millis), len(files))
	}
	checkContiguous(t, millis, interval)
	if left, _ := filepath.Glob(filepath.Join(spool, "*.scrape")); len(left) > 1 {
		// Published records are removed; only the second run's last
		// scrape, taken as it stopped, may wait there.
		t.Fatalf("%d spool files left after publishing", len(left))
	}
}

// gatedPublisher holds every publish until its gate opens, so that scrapes
// pile up in the buffer while NATS itself is fine.
type gatedPublisher struct {
	js   jetstream.JetStream
	gate chan struct{}
}

func (g gatedPublisher) PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	<-g.gate
	return g.js.PublishMsgAsync(msg, opts...)
}

// TestStopDrainsTheBuffer stops a collector while scrapes wait to be
// published: it publishes them before Run returns, none is lost.
func TestStopDrainsTheBuffer(t *testing.T) {
	nc, js := startJetStream(t)
	interval := 100 * time.Millisecond
	cfg, subject := bufferConfig(t, interval, 16<<20, "")
	reg := prometheus.NewRegistry()
	d := newDeps(t, nc, js, reg, nil)
	gate := make(chan struct{})
	d.JS = gatedPublisher{js: js, gate: gate}
	_, stop := startCollector(t, cfg, d)
	waitUntil(t, "buffered scrapes", func() bool {
		return bufferGauge(t, reg, "weir_collector_buffer_scrapes", "memory") >= 4
	})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		stop()
	}()
	close(gate)
	<-stopped
	scraped := metricValue(t, reg, "weir_collector_scrapes_total", map[string]string{"source": "probes"})
	millis := storedMillis(t, js, subject)
	if float64(len(millis)) != scraped {
		t.Fatalf("%d scrapes stored, %v scraped", len(millis), scraped)
	}
	checkContiguous(t, millis, interval)
}

// TestSendersOfGoneTargetsEnd: in central mode nodes come and go. The
// sender of a gone node publishes what its loop left, staleness markers
// last, though NATS takes them only later, then ends, and the buffer
// forgets the node. A node back before its old sender ended gets a sender
// again, which starts once the old one has ended.
func TestSendersOfGoneTargetsEnd(t *testing.T) {
	nc, js := startJetStream(t)
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		fmt.Fprintln(w, "a 1")
	}))
	t.Cleanup(srv.Close)
	at := func(node string) TargetConfig {
		return targetAt(srv.URL+"/metrics/"+node, proto.SourceKubelet, node)
	}
	cfg := testConfig(at("static"))
	cfg.ScrapeInterval, cfg.ScrapeTimeout = 100*time.Millisecond, 100*time.Millisecond
	d := newDeps(t, nc, js, prometheus.NewRegistry(), nil)
	gate := make(chan struct{})
	openGate := sync.OnceFunc(func() { close(gate) })
	d.JS = gatedPublisher{js: js, gate: gate}
	c, err := New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	buf, err := buffer.Open(buffer.Config{MaxBytes: 16 << 20}, nil, buffer.Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	senders := newSenderSet(c, buf, ctx, ctx)
	p := newPool(c, buf, senders)
	t.Cleanup(func() {
		openGate()
		p.stopAll()
		cancel()
		senders.wait()
		_ = buf.Close()
	})
	loopOf := func(node string) *loop { return c.discovered([]TargetConfig{at(node)})[0] }

	// NATS takes nothing while node-i replaces node-(i-1), and node-back
	// goes and comes back, its old senders blocked.
	const nodes = 6
	for i := range nodes {
		node := fmt.Sprintf("node-%d", i)
		loops := []*loop{loopOf(node)}
		if i%2 == 0 {
			loops = append(loops, loopOf("node-back"))
		}
		p.sync(ctx, loops)
		// A second request comes after the first scrape was queued: the
		// node has series to mark stale when it goes.
		waitUntil(t, node+"'s second scrape", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return hits["/metrics/"+node] >= 2
		})
	}
	p.sync(ctx, []*loop{loopOf("node-back"), loopOf("node-last")})
	live := []string{subjectOf("node-back", proto.SourceKubelet), subjectOf("node-last", proto.SourceKubelet)}
	openGate()

	waitUntil(t, "the senders and queues of the gone nodes to end", func() bool {
		senders.mu.Lock()
		running := slices.Sorted(maps.Keys(senders.running))
		senders.mu.Unlock()
		return slices.Equal(running, live) && slices.Equal(buf.Subjects(), live)
	})
	upStale := func(s *scrapeMsgs) bool { return value.IsStaleNaN(upValue(t, s)) }
	by := waitForScrapes(t, js, func(by map[string][]*scrapeMsgs) bool {
		back := by[subjectOf("node-back", proto.SourceKubelet)]
		return len(back) > 0 && upValue(t, back[len(back)-1]) == 1 && slices.ContainsFunc(back, upStale)
	})
	for i := range nodes {
		scrapes := by[subjectOf(fmt.Sprintf("node-%d", i), proto.SourceKubelet)]
		if len(scrapes) < 2 || !upStale(scrapes[len(scrapes)-1]) {
			t.Errorf("node-%d: %d scrapes published, the last not staleness markers; want its scrapes, then its markers", i, len(scrapes))
		}
	}
}
