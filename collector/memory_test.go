package collector

import (
	"math"
	"runtime"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/collector/summary"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// BenchmarkParserRetainedHeap measures what a scrape loop keeps between
// two scrapes of a real capture, per series of the capture: "parser" is
// the parser's caches after two scrapes (the second fills the spare line
// slice too), "loop" adds the batch and the encoder's label columns, which
// a loop keeps as well. The heap is read after a GC, before and after, so
// the figures are bytes still reachable, not bytes allocated.
func BenchmarkParserRetainedHeap(b *testing.B) {
	for _, bc := range []struct{ name, capture string }{
		{"cadvisor", fixtures.Cadvisor135},
		{"kubelet", fixtures.Kubelet121},
		{"resource", fixtures.Resource121},
		{"probes", fixtures.Probes},
		{"kube_proxy", fixtures.KubeProxy121},
		{"summary", fixtures.Summary135},
	} {
		b.Run(bc.name, func(b *testing.B) {
			body := fixtures.Read(bc.capture)
			scrape := func(p *parser, batch *[]proto.LabeledSample, millis int64) {
				*batch = (*batch)[:0]
				var err error
				if bc.capture == fixtures.Summary135 {
					var s *summary.Summary
					if s, err = summary.Decode(body); err == nil {
						_, err = p.parseSamples(batch, s.Append(nil), millis)
					}
				} else {
					_, err = p.parse(batch, body, textType, millis)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			var parserBytes, loopBytes, series float64
			for b.Loop() {
				base := heapAfterGC()
				p, batch, enc := newParser(testTargetLabels), &[]proto.LabeledSample{}, &proto.BlockEncoder{}
				for i := range int64(2) {
					scrape(p, batch, scrapeAt+i*15_000)
					if _, err := proto.EncodeSamples(enc, *batch, 1<<20); err != nil {
						b.Fatal(err)
					}
				}
				series = float64(len(*batch))
				loopBytes = float64(heapAfterGC() - base)
				runtime.KeepAlive(batch)
				runtime.KeepAlive(enc)
				parserBytes = float64(heapAfterGC() - base)
				runtime.KeepAlive(p)
			}
			b.ReportMetric(series, "series")
			b.ReportMetric(parserBytes/series, "retained-B/series")
			b.ReportMetric(loopBytes/series, "loop-retained-B/series")
		})
	}
}

func heapAfterGC() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestSeriesLabelsReadFromText checks that the labels the cached series of
// every text capture give the encoder are those textparse reads, with the
// target labels, and counts the series that keep a copy of their labels
// besides their text: none for the kubelet's own captures.
func TestSeriesLabelsReadFromText(t *testing.T) {
	target := map[string]string{}
	for _, l := range testTargetLabels {
		target[l.Name] = l.Value
	}
	for _, name := range textCaptures {
		t.Run(name, func(t *testing.T) {
			body := fixtures.Read(name)
			p := newParser(testTargetLabels)
			var samples []proto.LabeledSample
			if _, err := p.parse(&samples, body, textType, scrapeAt); err != nil {
				t.Fatal(err)
			}
			want, _ := expectedSeries(t, body, scrapeAt, target)
			if len(samples) != len(want) {
				t.Fatalf("%d series, textparse reads %d", len(samples), len(want))
			}
			for _, ts := range asBatch(samples).Series {
				key := labels.New(prompbToLabels(ts.Labels)...).String()
				if w, ok := want[key]; !ok || w.Timestamp != ts.Samples[0].Timestamp || math.Float64bits(w.Value) != math.Float64bits(ts.Samples[0].Value) {
					t.Fatalf("series %s %v not read by textparse (%v, %v)", key, ts.Samples[0], w, ok)
				}
			}
			copies := 0
			for _, cs := range p.cache {
				if cs.labels != nil {
					copies++
				}
			}
			t.Logf("%d of %d series keep a copy of their labels", copies, len(p.cache))
		})
	}
}

func prompbToLabels(ls []prompb.Label) []labels.Label {
	out := make([]labels.Label, len(ls))
	for i, l := range ls {
		out[i] = labels.Label{Name: l.Name, Value: l.Value}
	}
	return out
}
