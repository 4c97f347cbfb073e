package alerter

import (
	"testing"
	"time"

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
	st := newStore(rs.sels, 30000, 300000)
	series := captureSeries(t, fixtures.Cadvisor135, "/metrics/cadvisor")
	want := 0
	for _, s := range series {
		if metricName(s.Labels) == "container_oom_events_total" {
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
	const scrapes = 80 // 20 minutes at 15s, twice the window
	for i := range scrapes {
		for j := range series {
			series[j].Samples[0].Timestamp = int64(i) * 15000
		}
		raw, err := (&prompb.WriteRequest{Timeseries: series}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		for _, node := range []string{"a", "b"} {
			if _, err := st.IngestWire(Target{Cluster: "c", Node: node, Source: proto.SourceCadvisor}, raw); err != nil {
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
