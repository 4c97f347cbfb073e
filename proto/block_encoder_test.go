package proto

import (
	"bytes"
	"slices"
	"testing"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
)

// TestBlockEncoderWritesBlockZstd checks that a BlockEncoder, whatever it
// encoded before, writes the payload BlockZstd writes: over scrapes of the
// same label sets with new samples, a series gone, new ones among known
// ones, the order changed, and a batch with the same number of series but
// other label sets.
func TestBlockEncoderWritesBlockZstd(t *testing.T) {
	var base []LabelSet
	for _, ts := range captureSeries(t, fixtures.Cadvisor135) {
		base = append(base, new(FixedLabels(ts.Labels)))
	}
	withSamples := func(sets []LabelSet, step int64) []LabeledSample {
		out := make([]LabeledSample, len(sets))
		for i, ls := range sets {
			out[i] = LabeledSample{Labels: ls, Value: float64(int64(i) * step), Timestamp: 1_700_000_000_000 + step}
		}
		return out
	}
	var relabeled []LabelSet
	for _, ls := range base {
		l := slices.Clone(*ls.(*FixedLabels))
		l[0].Value += "x"
		relabeled = append(relabeled, &l)
	}
	mixed := slices.Clone(base)
	for i := 0; i < len(mixed); i += 100 {
		mixed[i] = relabeled[i]
	}
	reversed := withSamples(base, 3)
	slices.Reverse(reversed)
	scrapes := []struct {
		name    string
		samples []LabeledSample
	}{
		{"first", withSamples(base, 1)},
		{"same labels, new samples", withSamples(base, 2)},
		{"a series gone", withSamples(base[1:], 2)},
		{"back", withSamples(base, 3)},
		{"every 100th series new", withSamples(mixed, 3)},
		{"back from that", withSamples(base, 3)},
		{"reversed", reversed},
		{"as many series, other labels", withSamples(relabeled, 4)},
		{"back again", withSamples(base, 5)},
		{"empty", nil},
	}
	var enc BlockEncoder
	for _, s := range scrapes {
		got, err := enc.AppendSamples([]byte("prefix"), s.samples)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		var b Batch
		for _, smp := range s.samples {
			b.Series = append(b.Series, prompb.TimeSeries{
				Labels:  smp.Labels.AppendLabels(nil),
				Samples: []prompb.Sample{{Value: smp.Value, Timestamp: smp.Timestamp}},
			})
		}
		want, err := BlockZstd{}.Append([]byte("prefix"), &b)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: BlockEncoder wrote %d bytes that differ from BlockZstd's %d", s.name, len(got), len(want))
		}
	}
}
