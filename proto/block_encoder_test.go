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
// same label slices with new samples, a series gone, the order changed,
// and a batch with the same number of series but other slices.
func TestBlockEncoderWritesBlockZstd(t *testing.T) {
	base := captureSeries(t, fixtures.Cadvisor135)
	withSamples := func(series []prompb.TimeSeries, step int64) []prompb.TimeSeries {
		out := slices.Clone(series)
		for i := range out {
			out[i].Samples = []prompb.Sample{{Value: float64(int64(i) * step), Timestamp: 1_700_000_000_000 + step}}
		}
		return out
	}
	relabeled := withSamples(base, 4)
	for i := range relabeled {
		relabeled[i].Labels = slices.Clone(relabeled[i].Labels)
		relabeled[i].Labels[0].Value += "x"
	}
	reversed := withSamples(base, 3)
	slices.Reverse(reversed)
	scrapes := []struct {
		name   string
		series []prompb.TimeSeries
	}{
		{"first", withSamples(base, 1)},
		{"same labels, new samples", withSamples(base, 2)},
		{"a series gone", withSamples(base[1:], 2)},
		{"back", withSamples(base, 3)},
		{"reversed", reversed},
		{"as many series, other labels", relabeled},
		{"back again", withSamples(base, 5)},
		{"empty", nil},
	}
	var enc BlockEncoder
	for _, s := range scrapes {
		b := Batch{Series: s.series}
		got, err := enc.Append([]byte("prefix"), &b)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
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
