package alerter

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// TestStoreKeepsOnlySelected: of the 4,621 series of a cAdvisor scrape,
// the store keeps the ones a rule selects, each with a bounded window.
func TestStoreKeepsOnlySelected(t *testing.T) {
	f := writeFile(t, t.TempDir(), "r.yaml", "groups:\n  - name: g\n    rules:\n      - alert: OOM\n        expr: increase(series(\"container_oom_events_total\", `container!=\"\"`), \"10m\") > 0\n")
	rs, err := LoadRules([]string{f}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	series := captureSeries(t, fixtures.Cadvisor135, "/metrics/cadvisor")
	want, named := 0, 0
	for _, s := range series {
		if metricName(s.Labels) == "container_oom_events_total" {
			named++
			for _, l := range s.Labels {
				if l.Name == "container" && l.Value != "" {
					want++
				}
			}
		}
	}
	if want == 0 {
		t.Fatal("capture has no container_oom_events_total of a container")
	}
	for _, enc := range []proto.Encoding{proto.SnappyPRW1{}, proto.BlockZstd{}} {
		t.Run(enc.Name(), func(t *testing.T) {
			st := newStore(rs.sels, 30000, 300000)
			var bufs decodeBuffers
			const scrapes = 80 // 20 minutes at 15s, twice the window
			for i := range scrapes {
				for j := range series {
					series[j].Samples[0].Timestamp = int64(i) * 15000
				}
				payload, err := enc.Append(nil, &proto.Batch{Series: series})
				if err != nil {
					t.Fatal(err)
				}
				for _, node := range []string{"a", "b"} {
					if _, err := st.ingestPayload(Target{Cluster: "c", Node: node, Source: proto.SourceCadvisor}, enc.Name(), payload, &bufs); err != nil {
						t.Fatal(err)
					}
				}
			}
			sel, held := st.selected()
			if sel != 2*want {
				t.Errorf("%d series kept, want %d (the selected ones of two nodes, of %d in all)", sel, 2*want, 2*len(series))
			}
			// 10m range + 30s interval at 15s: at most 42 samples each.
			if max := sel * 42; held > max || held < sel*40 {
				t.Errorf("%d samples held for %d series, want about 42 each", held, sel)
			}
			// What the store keeps per target to skip the labels is one
			// entry per series of a selected name, not per series.
			for tgt, tc := range st.targets {
				if n := len(tc.entries) + len(tc.block); n > named {
					t.Errorf("%v: %d series remembered, want at most the %d of the selected name", tgt, n, named)
				}
			}
		})
	}
}

// TestStoreMaxSeries: past max_series new series are counted, not kept.
func TestStoreMaxSeries(t *testing.T) {
	f := writeFile(t, t.TempDir(), "r.yaml", "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: series(\"container_oom_events_total\") > 0\n")
	rs, err := LoadRules([]string{f}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(rs.sels, 30000, 300000)
	st.maxSeries = 10
	series := captureSeries(t, fixtures.Cadvisor135, "/metrics/cadvisor")
	st.Ingest("c", "n", series)
	sel, _ := st.selected()
	total := 0
	for _, s := range series {
		if metricName(s.Labels) == "container_oom_events_total" {
			total++
		}
	}
	if sel != 10 || st.droppedSeries() != int64(total-10) {
		t.Errorf("kept %d, dropped %d; want 10 kept and %d dropped", sel, st.droppedSeries(), total-10)
	}
}

// TestIngestBlockAsIngest: a store fed BlockZstd payloads through the
// per-target cache holds exactly what one fed the decoded series holds,
// while series change labels, disappear, and are forgotten by gc.
func TestIngestBlockAsIngest(t *testing.T) {
	rs := loadPackAndUserRules(t, 10)
	viaBlock := newStore(rs.sels, 30000, 300000)
	viaBatch := newStore(rs.sels, 30000, 300000)
	var bufs decodeBuffers
	series := captureSeries(t, fixtures.Cadvisor135, "/metrics/cadvisor")
	cpu := slices.IndexFunc(series, func(s prompb.TimeSeries) bool {
		return metricName(s.Labels) == "container_cpu_usage_seconds_total" && slices.ContainsFunc(s.Labels, func(l prompb.Label) bool {
			return l.Name == "container" && l.Value != ""
		})
	})
	if cpu < 0 {
		t.Fatal("capture has no container_cpu_usage_seconds_total of a container")
	}
	const nodes = 2
	round := func(i int) {
		t.Helper()
		for j := range series {
			series[j].Samples[0] = prompb.Sample{Timestamp: int64(i) * 15000, Value: float64(i*10000 + j)}
		}
		payload, err := proto.BlockZstd{}.Append(nil, &proto.Batch{Series: series})
		if err != nil {
			t.Fatal(err)
		}
		for n := range nodes {
			node := fmt.Sprintf("node-%d", n)
			kept, err := viaBlock.ingestPayload(Target{Cluster: "c", Node: node, Source: proto.SourceCadvisor}, proto.BlockZstd{}.Name(), payload, &bufs)
			if err != nil {
				t.Fatal(err)
			}
			if want := viaBatch.Ingest("c", node, series); kept != want {
				t.Fatalf("round %d %s: %d samples kept, want %d", i, node, kept, want)
			}
		}
		got, want := storeContents(viaBlock), storeContents(viaBatch)
		if len(want) == 0 {
			t.Fatalf("round %d: nothing selected", i)
		}
		for k, w := range want {
			if g, ok := got[k]; g != w {
				t.Fatalf("round %d: %s holds %s (%t), want %s", i, k, g, ok, w)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("round %d: %d series, want %d", i, len(got), len(want))
		}
	}
	for i := range 3 {
		round(i)
	}
	// A pod restarts under another name: the labels, hence the sum, change.
	for j, l := range series[cpu].Labels {
		if l.Name == "pod" {
			series[cpu].Labels[j].Value += "-restarted"
		}
	}
	round(3)
	// Series go away: the ones after them move to other indexes.
	series = slices.Delete(series, 0, 100)
	round(4)
	round(5)
	// gc forgets every series while the targets still send them.
	for _, st := range []*Store{viaBlock, viaBatch} {
		if st.gc(1<<50) == 0 {
			t.Fatal("gc removed nothing")
		}
	}
	round(6)
	round(7)
}

// storeContents is every selected series of st with its window.
func storeContents(st *Store) map[string]string {
	out := map[string]string{}
	for _, ms := range st.series {
		if ms.sels != nil {
			out[ms.lset.String()] = fmt.Sprint(ms.ts, ms.vs)
		}
	}
	return out
}

// TestWindowDropsStalenessMarkers: a failed scrape ends every series of the
// target with a staleness marker, and a kubelet restart brings its counters
// back from zero. As in PromQL's range vectors, every range function reads
// a window with markers as the same window without them: the reset across
// the marker counts, a marker is no change, and no marker turns into NaN.
// The markers still end the series for series() and absent_over_time.
func TestWindowDropsStalenessMarkers(t *testing.T) {
	stale := math.Float64frombits(value.StaleNaN)
	const step, rng = 15_000, 300_000
	for _, vals := range [][]float64{
		{100, 110, stale, 5, 10},             // counter reset across a failed scrape
		{7, 7, stale, 7, 7, stale, 7, 7},     // constant gauge, two failed scrapes
		{3, stale, 5},                        // *_over_time around the marker
		{1, stale, stale, 2, 4, stale, 8, 9}, // runs of markers
	} {
		withMarkers, without := &memSeries{retention: rng}, &memSeries{retention: rng}
		for i, v := range vals {
			ts := int64(i+1) * step
			withMarkers.append(ts, v)
			if !value.IsStaleNaN(v) {
				without.append(ts, v)
			}
		}
		now := int64(len(vals)) * step
		var scratch windowScratch
		for name, f := range rangeFuncs {
			ts, vs := withMarkers.window(now, rng, &scratch)
			got, gotOK := f(ts, vs, now, rng)
			ts, vs = without.window(now, rng, &scratch)
			want, wantOK := f(ts, vs, now, rng)
			if got != want || gotOK != wantOK {
				t.Errorf("%s over %v = %g %t, want %g %t as without the markers", name, vals, got, gotOK, want, wantOK)
			}
		}
		// Evaluation reads such a window at every interval: once the
		// scratch has grown, reading it again allocates nothing.
		if n := testing.AllocsPerRun(100, func() { withMarkers.window(now, rng, &scratch) }); n != 0 {
			t.Errorf("window over %v allocates %g times per read", vals, n)
		}
	}

	sel, err := parseSelection("up", nil)
	if err != nil {
		t.Fatal(err)
	}
	sel.window = rng
	st := newStore([]*selection{sel}, 30_000, 300_000)
	up := labels.FromStrings(labels.MetricName, "up", "node", "n1")
	st.ingestLabels(up, 1*step, 1)
	st.ingestLabels(up, 2*step, stale)
	ec := &evalCtx{}
	for _, c := range []struct {
		now    int64
		latest int
		absent bool
		what   string
	}{
		{1 * step, 1, false, "before the marker"},
		{2 * step, 0, false, "at the marker: the series ended, its sample still in range"},
		{1*step + rng, 0, true, "the range holds only the marker"},
	} {
		ec.reset(st, c.now)
		if got := len(st.latest(sel, c.now)); got != c.latest {
			t.Errorf("%s: series() returns %d samples, want %d", c.what, got, c.latest)
		}
		if got := len(ec.absent(sel, rng).Samples) == 1; got != c.absent {
			t.Errorf("%s: absent_over_time %t, want %t", c.what, got, c.absent)
		}
	}
}
