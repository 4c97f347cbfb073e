package enricher

import (
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"
	"go.yaml.in/yaml/v3"

	"github.com/weirmetrics/weir/proto"
)

func batchOf(prefix string, from, to int) proto.Batch {
	var b proto.Batch
	for i := from; i < to; i++ {
		b.Series = append(b.Series, series("__name__", prefix, "i", strconv.Itoa(i)))
	}
	return b
}

func names(b proto.Batch) map[string]bool {
	out := map[string]bool{}
	for _, s := range b.Series {
		for _, l := range s.Labels {
			if l.Name == "i" {
				out[l.Value] = true
			}
		}
	}
	return out
}

func testEnricher(t *testing.T, cfg Config, now func() time.Time) (*Enricher, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e := &Enricher{cfg: cfg, log: discard(), guard: newGuard(cfg.Cardinality, now), relabel: cfg.RelabelConfigs,
		deadLog: throttle{every: time.Hour}}
	e.metrics = newMetrics(reg, func() float64 { return float64(e.guard.size()) })
	return e, reg
}

// The guard lets a target start a limited number of series a minute;
// known series always pass, other targets are not affected, and a series
// absent for forget_after counts as new again.
func TestCardinalityGuard(t *testing.T) {
	clock := time.Unix(1_700_000_000, 0)
	cfg := DefaultConfig()
	cfg.Cardinality = CardinalityConfig{NewSeriesPerMinute: 10, Forget: 2 * time.Minute, MaxSeries: 25}
	e, reg := testEnricher(t, cfg, func() time.Time { return clock })
	w := &worker{join: testJoiner()}
	a := proto.Subject{Stage: proto.StageRaw, Cluster: "c", Node: "a", Source: proto.SourceCadvisor, Partitioned: true, Partition: 3}
	b := proto.Subject{Stage: proto.StageRaw, Cluster: "c", Node: "b", Source: proto.SourceCadvisor}
	pass := func(subj proto.Subject, in proto.Batch) map[string]bool {
		w.batch = in
		e.filter(w, guardTarget(subj))
		return names(w.batch)
	}

	if got := pass(a, batchOf("m", 0, 15)); len(got) != 10 || !got["0"] || !got["9"] || got["10"] {
		t.Fatalf("first minute: passed %v, want series 0-9", got)
	}
	if got := pass(a, batchOf("m", 0, 15)); len(got) != 10 {
		t.Fatalf("same minute again: passed %d, want the 10 known", len(got))
	}
	if got := pass(b, batchOf("m", 0, 12)); len(got) != 10 {
		t.Fatalf("another target: passed %d, want its own 10", len(got))
	}
	if got := metricValue(t, reg, "weir_enricher_cardinality_series"); got != 20 {
		t.Errorf("guard remembers %v series, want 20", got)
	}
	clock = clock.Add(time.Minute)
	// 5 new series left before max_series (25) is reached.
	if got := pass(a, batchOf("m", 0, 15)); len(got) != 15 {
		t.Fatalf("next minute: passed %d, want 15", len(got))
	}
	if got := pass(b, batchOf("m", 0, 15)); len(got) != 10 {
		t.Fatalf("max_series reached: passed %d, want only the 10 known", len(got))
	}
	clock = clock.Add(4 * time.Minute) // b is silent; a's series 10-14 too
	pass(a, batchOf("m", 0, 10))
	if got := metricValue(t, reg, "weir_enricher_cardinality_series"); got != 10 {
		t.Errorf("after forget_after the guard remembers %v series, want a's 10", got)
	}
	dropped := e.metrics.seriesDropped.WithLabelValues(reasonCardinality)
	if got := gaugeValue(t, dropped); got != 5+5+2+5 {
		t.Errorf(`weir_enricher_series_dropped_total{reason="cardinality"} = %v, want 17`, got)
	}
}

func TestRelabelAfterTheJoin(t *testing.T) {
	var rules []*relabel.Config
	if err := yaml.Unmarshal([]byte(`
- source_labels: [__name__]
  regex: drop_me
  action: drop
- source_labels: [cluster, i]
  separator: /
  target_label: where
- regex: i
  action: labeldrop
`), &rules); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.RelabelConfigs = rules
	cfg.Cardinality.NewSeriesPerMinute = 0
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e, _ := testEnricher(t, cfg, time.Now)
	w := &worker{join: testJoiner(), lb: nil}
	w.lb = newBuilder()
	w.batch = proto.Batch{Series: []prompb.TimeSeries{series("__name__", "keep", "i", "1"), series("__name__", "drop_me", "i", "2")}}
	w.join.begin(nil, "c1", "n1")
	w.join.enrich(nil, &w.batch)
	e.filter(w, guardTarget(proto.Subject{Stage: proto.StageRaw, Cluster: "c1", Node: "n1", Source: proto.SourceKubelet}))
	if len(w.batch.Series) != 1 {
		t.Fatalf("%d series left, want 1", len(w.batch.Series))
	}
	got := labelMap(t, w.batch.Series[0].Labels)
	want := map[string]string{"__name__": "keep", "cluster": "c1", "node": "n1", "where": "c1/1"}
	if len(got) != len(want) || got["where"] != "c1/1" || got["i"] != "" {
		t.Fatalf("relabelled to %v, want %v", got, want)
	}
	if v := gaugeValue(t, e.metrics.seriesDropped.WithLabelValues(reasonRelabel)); v != 1 {
		t.Errorf(`dropped{reason="relabel"} = %v, want 1`, v)
	}
}

// The guard tells series apart however their bytes split between names and
// values, and knows a series again from its labels alone.
func TestHashLabelsSeparatesNamesAndValues(t *testing.T) {
	var buf []byte
	hash := func(s prompb.TimeSeries) uint64 {
		var h uint64
		buf, h = hashLabels(buf, s.Labels)
		return h
	}
	distinct := []prompb.TimeSeries{
		series("a", "bc"), series("ab", "c"), series("a", "b", "c", "d"), series("a", "b", "cd", ""),
	}
	seen := map[uint64]int{}
	for i, s := range distinct {
		h := hash(s)
		if j, ok := seen[h]; ok {
			t.Errorf("series %d and %d hash alike: %v, %v", j, i, distinct[j].Labels, s.Labels)
		}
		seen[h] = i
	}
	if hash(series("a", "bc")) != hash(distinct[0]) {
		t.Error("the same labels hash differently")
	}
}
