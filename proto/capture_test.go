package proto

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
)

// textCaptures are the captures in the Prometheus text format.
var textCaptures = []string{
	fixtures.Cadvisor135, fixtures.Cadvisor121, fixtures.CadvisorPre116,
	fixtures.Kubelet121, fixtures.Kubelet110, fixtures.Resource121,
	fixtures.Probes, fixtures.KubeProxy121, fixtures.KubeStateMetrics,
}

// captureScrapeMillis stamps the samples of a capture that carry no
// timestamp, as a scrape at that time would.
const captureScrapeMillis = 1_700_000_000_000

// captureSeries parses a real capture into series the way the collector
// publishes them: labels sorted by name, one sample each, the scrape time
// where the line has no timestamp.
func captureSeries(t testing.TB, name string) []prompb.TimeSeries {
	t.Helper()
	return captureFirstSeries(t, name, -1)
}

// captureFirstSeries is captureSeries up to max series; max < 0 is all.
func captureFirstSeries(t testing.TB, name string, max int) []prompb.TimeSeries {
	t.Helper()
	p := textparse.NewPromParser(fixtures.Read(name), labels.NewSymbolTable(), false)
	var (
		out  []prompb.TimeSeries
		lset labels.Labels
	)
	for len(out) != max {
		entry, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if entry != textparse.EntrySeries {
			continue
		}
		_, ts, v := p.Series()
		p.Labels(&lset)
		var ls []prompb.Label
		lset.Range(func(l labels.Label) {
			if l.Value != "" {
				ls = append(ls, prompb.Label{Name: l.Name, Value: l.Value})
			}
		})
		slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
		stamp := int64(captureScrapeMillis)
		if ts != nil {
			stamp = *ts
		}
		out = append(out, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: v, Timestamp: stamp}}})
	}
	if len(out) == 0 {
		t.Fatalf("%s: no series", name)
	}
	return out
}
