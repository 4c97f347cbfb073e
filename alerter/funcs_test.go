package alerter

import (
	"math"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// TestHistogramQuantileOddCounts: bucket counts that no classic histogram
// has (a NaN from a division, a negative delta, +Inf) give one value for
// their group, never a panic: the rule would fail for every group.
func TestHistogramQuantileOddCounts(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	buckets := func(node string, counts ...float64) []Sample {
		les := []string{"0.1", "1", "+Inf"}
		out := make([]Sample, len(counts))
		for i, c := range counts {
			out[i] = Sample{Labels: labels.FromStrings("le", les[i], "node", node), Value: c}
		}
		return out
	}
	for _, c := range []struct {
		name   string
		q      float64
		counts []float64
		want   float64
	}{
		{"all NaN", 0.99, []float64{nan, nan, nan}, nan},
		{"one NaN bucket", 0.5, []float64{1, nan, 4}, nan},
		{"NaN total", 0.5, []float64{1, 2, nan}, nan},
		{"negative total", 0.5, []float64{-1, -2, -3}, 1},
		{"q 0 of +Inf", 0, []float64{inf, inf, inf}, 1},
		{"well formed", 0.5, []float64{1, 2, 4}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The well formed group beside it keeps the value it has alone.
			got := quantiles(t, c.q, append(buckets("odd", c.counts...), buckets("ok", 1, 2, 4)...))
			if g := got["odd"]; !(g == c.want || math.IsNaN(g) && math.IsNaN(c.want)) {
				t.Errorf("histogram_quantile(%g, %v) = %g, want %g", c.q, c.counts, g, c.want)
			}
			if want := quantiles(t, c.q, buckets("ok", 1, 2, 4))["ok"]; got["ok"] != want {
				t.Errorf("well formed group beside it = %g, want %g", got["ok"], want)
			}
		})
	}
}

// quantiles is histogram_quantile(q, samples) by node.
func quantiles(t *testing.T, q float64, samples []Sample) map[string]float64 {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("histogram_quantile(%g) panicked: %v", q, r)
		}
	}()
	res, err := histogramQuantile(q, Vector{Samples: samples})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, s := range res.(Vector).Samples {
		out[s.Labels.Get("node")] = s.Value
	}
	return out
}
