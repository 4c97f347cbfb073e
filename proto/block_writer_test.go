package proto

import (
	"bytes"
	"testing"

	"github.com/prometheus/prometheus/prompb"
)

// TestAppendBlockAsAppend: a payload assembled from label columns kept from
// an earlier scrape and the samples of a new one is byte for byte what
// BlockZstd makes of the same series, with every series and with some.
func TestAppendBlockAsAppend(t *testing.T) {
	for _, name := range textCaptures {
		in := Batch{Series: captureSeries(t, name)}
		for i := range in.Series {
			in.Series[i].Samples = []prompb.Sample{{Timestamp: 1_700_000_000_000 + int64(i%3), Value: float64(i) * 1.5}}
		}
		payload, err := BlockZstd{}.Append(nil, &in)
		if err != nil {
			t.Fatal(err)
		}
		var r BlockReader
		if err := r.Reset(payload); err != nil {
			t.Fatal(err)
		}
		var every, odd []prompb.TimeSeries
		var oddIndex []int32
		for i, s := range in.Series {
			every = append(every, s)
			if i%2 == 1 {
				odd = append(odd, s)
				oddIndex = append(oddIndex, int32(i))
			}
		}
		for _, c := range []struct {
			what   string
			series []prompb.TimeSeries
			from   []int32
		}{{"every series", every, nil}, {"odd series", odd, oddIndex}} {
			want, err := BlockZstd{}.Append(nil, &Batch{Series: c.series})
			if err != nil {
				t.Fatal(err)
			}
			got, samples, err := AppendBlock(nil, AppendBlockLabels(nil, c.series), &r, c.from)
			if err != nil {
				t.Fatal(err)
			}
			if want := (&Batch{Series: c.series}).Samples(); samples != want {
				t.Errorf("%s, %s: %d samples, want %d", name, c.what, samples, want)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s, %s: assembled payload differs from BlockZstd's (%d and %d bytes)", name, c.what, len(got), len(want))
			}
		}
	}
}
