package sink

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

func TestDesiredShards(t *testing.T) {
	tests := []struct {
		name                    string
		active                  int
		busy, blocked, interval time.Duration
		want                    int
	}{
		{"idle shrinks to min", 4, 0, 0, 10 * time.Second, 1},
		{"busy all the time grows", 2, 20 * time.Second, 0, 10 * time.Second, 3},
		{"at the target stays", 4, 28 * time.Second, 0, 10 * time.Second, 4},
		{"never above max", 8, 80 * time.Second, 0, 10 * time.Second, 10},
		{"half busy shrinks", 10, 50 * time.Second, 0, 10 * time.Second, 8},
		{"one full shard holds the consumer back: grows by half", 4, 20 * time.Second, 5 * time.Second, 10 * time.Second, 6},
		{"one of two full: grows by one", 2, 10 * time.Second, 3 * time.Second, 10 * time.Second, 3},
		{"consumers held back all the time: doubles", 2, 10 * time.Second, 15 * time.Second, 10 * time.Second, 4},
		{"waited a little: the average decides", 4, 20 * time.Second, time.Second, 10 * time.Second, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := desiredShards(tt.active, tt.busy, tt.blocked, tt.interval, 1, 10); got != tt.want {
				t.Errorf("desiredShards(%d, %s, %s, %s) = %d, want %d", tt.active, tt.busy, tt.blocked, tt.interval, got, tt.want)
			}
		})
	}
}

// TestShardsGrowOnBacklogAndKeepOrder: with a slow backend and a backlog,
// the sink moves from min_shards up, and every series still arrives in
// order across the resharding.
func TestShardsGrowOnBacklogAndKeepOrder(t *testing.T) {
	env := newEnv(t)
	var mu sync.Mutex
	inFlight, most := 0, 0
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) int {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		mu.Lock()
		inFlight--
		mu.Unlock()
		return http.StatusNoContent
	})
	base := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)[:20]
	nodes := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	const scrapes = 15
	var lastSeq uint64
	for scrape := range scrapes {
		millis := int64(scrapeMillis + scrape*15_000)
		for _, node := range nodes {
			lastSeq = env.publishScrape(t, subject(node, proto.SourceKubeProxy), millis, forTarget(stamped(base, millis), node))
		}
	}
	cfg := testConfig("grow", rc.url())
	cfg.QueueConfig.MinShards, cfg.QueueConfig.MaxShards = 1, 4
	s, err := New(cfg, Deps{JS: env.js, Reg: env.reg, Stream: proto.StreamRaw, Filter: proto.StreamFilter(proto.StageRaw)})
	if err != nil {
		t.Fatal(err)
	}
	s.reshardEvery = 200 * time.Millisecond
	env.run(t, s)

	waitFor(t, 10*time.Second, "more than one shard", func() bool { return metricValue(t, s.metrics.shards) > 1 })
	rc.waitSamples(t, uniqueKeys(base)*scrapes*len(nodes), 20*time.Second)
	env.waitAcked(t, "grow", lastSeq)
	mu.Lock()
	if most < 2 {
		t.Errorf("at most %d requests at once; the added shards did not send in parallel", most)
	}
	mu.Unlock()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for key, stamps := range rc.order {
		if !slices.IsSorted(stamps) || len(stamps) != scrapes {
			t.Fatalf("series %s arrived as %v: out of order or incomplete", key, stamps)
		}
	}
	// Once the backlog is gone the shards are idle, and the count falls back.
	waitFor(t, 10*time.Second, "shards back to min", func() bool { return metricValue(t, s.metrics.shards) == 1 })
}

// TestBearerTokenFileIsReadAgain: a rotated token file is used for the
// next request without a restart, as Prometheus does.
func TestBearerTokenFileIsReadAgain(t *testing.T) {
	env := newEnv(t)
	rc := newReceiver(t, nil)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)[:10]
	subj := subject("node-1", proto.SourceKubeProxy)
	seq := env.publishScrape(t, subj, scrapeMillis, series)
	cfg := testConfig("token", rc.url())
	cfg.HTTPClientConfig.BearerTokenFile = tokenFile
	env.startSink(t, cfg)
	env.waitAcked(t, "token", seq)

	if err := os.WriteFile(tokenFile, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	seq = env.publishScrape(t, subj, scrapeMillis+15_000, stamped(series, scrapeMillis+15_000))
	env.waitAcked(t, "token", seq)
	calls := rc.requests()
	if len(calls) != 2 {
		t.Fatalf("%d requests, want 2", len(calls))
	}
	for i, want := range []string{"Bearer first", "Bearer second"} {
		if got := calls[i].header.Get("Authorization"); got != want {
			t.Errorf("request %d: Authorization %q, want %q", i, got, want)
		}
	}
}

// TestLagMetrics: while the backend fails, the sink reports the messages
// it has not acknowledged and the age of the oldest; once the backend is
// back, both return to 0.
func TestLagMetrics(t *testing.T) {
	env := newEnv(t)
	var down atomic.Bool
	down.Store(true)
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)[:10]
	var seq uint64
	for _, node := range []string{"a", "b", "c", "d", "e"} {
		seq = env.publishScrape(t, subject(node, proto.SourceKubeProxy), scrapeMillis, forTarget(stamped(series, scrapeMillis), node))
	}
	s, err := New(testConfig("lag", rc.url()), Deps{JS: env.js, Reg: env.reg, Stream: proto.StreamRaw, Filter: proto.StreamFilter(proto.StageRaw)})
	if err != nil {
		t.Fatal(err)
	}
	s.lagEvery = 50 * time.Millisecond
	env.run(t, s)

	waitFor(t, 5*time.Second, "lag of 5 messages, 200ms old", func() bool {
		return metricValue(t, s.metrics.lagMessages) == 5 && metricValue(t, s.metrics.lagSeconds) >= 0.2
	})
	if got := metricValue(t, s.metrics.pending); got < 1 {
		t.Errorf("pending messages = %v while the backend is down, want at least 1", got)
	}
	down.Store(false)
	env.waitAcked(t, "lag", seq)
	waitFor(t, 5*time.Second, "lag back to 0", func() bool {
		return metricValue(t, s.metrics.lagMessages) == 0 && metricValue(t, s.metrics.lagSeconds) == 0
	})
}
