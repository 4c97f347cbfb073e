package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/promtest"
)

// churnable counts, over a node's endpoints, the series that name a pod:
// those a churn storm replaces.
func churnable(t *testing.T, endpoints []Endpoint) int {
	t.Helper()
	n := 0
	for _, e := range endpoints {
		if e.JSON {
			n += podSeries(t, fixtures.Read(e.File))
			continue
		}
		tmpl, err := compileTemplate(fixtures.Read(e.File))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range tmpl.lines {
			if len(l.pods) > 0 {
				n++
			}
		}
	}
	return n
}

// TestScenarios runs every scenario through real processes of the weir
// binary, small and in parallel, and fails on any lost sample.
func TestScenarios(t *testing.T) {
	// Light enough that no scrape times out on a busy 2-core machine: a
	// scrape the collector abandons counts as lost, as it should.
	const nodes = 1
	for _, tc := range []struct {
		name  string
		cfg   Config
		check func(t *testing.T, r *Report)
	}{
		{name: "steady with peers", cfg: Config{Mode: ModeAll, Scenario: ScenarioSteady, Peers: Peers, Fleet: FleetConfig{ChurnScrapes: 3}},
			check: func(t *testing.T, r *Report) {
				if base := nodes * r.SamplesPerNodeScrape; r.Series <= base {
					t.Errorf("%d series with pods churning every 3 scrapes, want more than the %d of one scrape", r.Series, base)
				}
				for _, peer := range Peers {
					p := r.Peers[peer]
					if p == nil {
						t.Fatalf("no result for peer %s", peer)
					}
					if p.OfferedSamples == 0 || p.LostSamples != 0 || p.DeliveredSamples != p.OfferedSamples {
						t.Errorf("%s: offered %d, delivered %d, lost %d", peer, p.OfferedSamples, p.DeliveredSamples, p.LostSamples)
					}
					if p.CPUSeconds[peer] <= 0 || p.PeakRSSBytes[peer] <= 0 || p.CPUPerSampleRatio <= 0 {
						t.Errorf("%s: cpu %v, rss %v, ratio %v", peer, p.CPUSeconds[peer], p.PeakRSSBytes[peer], p.CPUPerSampleRatio)
					}
				}
			}},
		{name: "outage", cfg: Config{Mode: ModeAll, Scenario: ScenarioOutage},
			check: func(t *testing.T, r *Report) {
				// A quarter of the run was scraped while the backend was down:
				// those samples waited for it, which the p99 must show.
				if r.LatencyP99 == nil || *r.LatencyP99 < 1 {
					t.Errorf("p99 %v after a 2.5 s outage, want at least 1 s", r.LatencyP99)
				}
			}},
		{name: "nats restart", cfg: Config{Mode: ModeStages, Scenario: ScenarioNATSRestart},
			check: func(t *testing.T, r *Report) {
				if r.Starts["nats"] != 2 {
					t.Errorf("nats started %d times, want 2", r.Starts["nats"])
				}
			}},
		{name: "kill sink", cfg: Config{Mode: ModeStages, Scenario: ScenarioKill, KillStage: "weir-sink"},
			check: func(t *testing.T, r *Report) {
				if r.Starts["weir-sink"] != 2 {
					t.Errorf("sink started %d times, want 2", r.Starts["weir-sink"])
				}
			}},
		{name: "churn storm", cfg: Config{Mode: ModeAll, Scenario: ScenarioChurnStorm},
			check: func(t *testing.T, r *Report) {
				// Two storms between 1/3 and 2/3 of the run: every pod series
				// came back under a new name at least once (twice unless a
				// busy machine made a scrape miss a storm).
				base := nodes * r.SamplesPerNodeScrape
				if want := base + nodes*churnable(t, AllEndpoints); r.Series < want {
					t.Errorf("%d series after the storm, want at least %d", r.Series, want)
				}
			}},
		{name: "sink reading the enriched stream", cfg: Config{Mode: ModeAll, Scenario: ScenarioSteady, SinkStream: SinkStreamEnriched},
			check: func(t *testing.T, r *Report) {
				for stream := range r.JetStreamStreamBytes {
					if strings.HasPrefix(stream, "WEIR_ROUTE") {
						t.Errorf("stream %s exists: a router ran", stream)
					}
				}
				if r.JetStreamStreamBytes["WEIR_ENRICHED"] == 0 {
					t.Errorf("streams %v: nothing enriched", r.JetStreamStreamBytes)
				}
			}},
		{name: "collector alone", cfg: Config{Mode: ModeCollector, Scenario: ScenarioSteady, Peers: []string{PeerVMAgent}},
			check: func(t *testing.T, r *Report) {
				if r.DeliveryMeasured || r.CPUSeconds["weir-collector"] <= 0 || r.PeakRSSBytes["weir-collector"] <= 0 {
					t.Errorf("collector alone: delivery measured %v, cpu %v, rss %v", r.DeliveryMeasured, r.CPUSeconds["weir-collector"], r.PeakRSSBytes["weir-collector"])
				}
				anon, file := r.RSSAnonBytes["weir-collector"], r.RSSFileBytes["weir-collector"]
				if anon <= 0 || file <= 0 || anon+file > r.PeakRSSBytes["weir-collector"] {
					t.Errorf("collector alone: rss anon %d + file %d at the end, peak %d", anon, file, r.PeakRSSBytes["weir-collector"])
				}
				if r.Peers[PeerVMAgent] == nil || r.Peers[PeerVMAgent].LostSamples != 0 {
					t.Errorf("vmagent beside the collector: %+v", r.Peers[PeerVMAgent])
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, p := range tc.cfg.Peers {
				promtest.Binary(t, PeerPrograms[p])
			}
			cfg := tc.cfg
			cfg.Weir, cfg.Dir = weirBin, t.TempDir()
			cfg.Fleet.Prefix, cfg.Fleet.Nodes = "node", nodes
			cfg.Interval, cfg.Duration, cfg.Drain, cfg.AckWait = 2*time.Second, 10*time.Second, 15*time.Second, 2*time.Second
			var progress, log bytes.Buffer
			cfg.Progress, cfg.ProgressEvery, cfg.Log = &progress, 3*time.Second, &log
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			r, err := Run(ctx, cfg)
			if err != nil {
				t.Fatalf("run: %v\nprocess output:\n%s", err, tail(log.String()))
			}
			var text bytes.Buffer
			r.WriteText(&text)
			t.Logf("progress:\n%sreport:\n%s", progress.String(), text.String())
			if !strings.Contains(progress.String(), "offered=") {
				t.Errorf("no progress line in %q", progress.String())
			}
			if len(r.Notes) > 0 {
				t.Errorf("notes: %v\nprocess output:\n%s", r.Notes, tail(log.String()))
			}
			if r.OfferedSamples == 0 || r.Scrapes < int64(nodes*len(AllEndpoints)) {
				t.Fatalf("offered %d samples in %d scrapes: the fleet was hardly scraped", r.OfferedSamples, r.Scrapes)
			}
			if r.DeliveryMeasured && (r.LostSamples != 0 || r.DeliveredSamples != r.OfferedSamples) {
				t.Errorf("offered %d, delivered %d, lost %d\nprocess output:\n%s", r.OfferedSamples, r.DeliveredSamples, r.LostSamples, tail(log.String()))
			}
			if r.CPUSeconds["total"] <= 0 || r.PeakRSSBytes["total"] <= 0 || r.JetStreamStreamBytes["WEIR_RAW"] <= 0 || r.JetStreamBytesPerSample <= 0 {
				t.Errorf("cpu %v, rss %v, jetstream %v: want every measure", r.CPUSeconds, r.PeakRSSBytes, r.JetStreamStreamBytes)
			}
			var js bytes.Buffer
			if err := r.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var keys map[string]any
			if err := json.Unmarshal(js.Bytes(), &keys); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"offered_samples", "delivered_samples", "lost_samples", "duplicate_samples", "samples_per_second",
				"latency_p50_seconds", "latency_p99_seconds", "latency_p99_after_warmup_seconds", "cpu_seconds_per_million_samples", "peak_rss_bytes", "rss_anon_bytes", "rss_file_bytes", "jetstream_bytes_per_sample", "peers"} {
				if _, ok := keys[k]; !ok {
					t.Errorf("JSON report has no %q", k)
				}
			}
			tc.check(t, r)
		})
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return "…" + s[len(s)-4000:]
	}
	return s
}
