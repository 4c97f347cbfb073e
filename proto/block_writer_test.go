package proto

import (
	"bytes"
	"testing"

	"github.com/prometheus/prometheus/prompb"
)

// TestAppendBlockAsAppend: a payload assembled from labels kept from an
// earlier scrape and the samples of a new one is byte for byte what
// BlockZstd makes of the same series, with every series and with some,
// from a block2+zstd payload (whose samples frame is copied) and from a
// block1+zstd one.
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
		var r, r1 BlockReader
		if err := r.Reset(payload); err != nil {
			t.Fatal(err)
		}
		if err := r1.Reset(appendBlock1(nil, &in)); err != nil {
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
			labels, err := AppendBlockLabels(nil, c.series)
			if err != nil {
				t.Fatal(err)
			}
			for _, from := range []struct {
				what string
				r    *BlockReader
			}{{"block2", &r}, {"block1", &r1}} {
				got, samples, err := AppendBlock([]byte("prefix"), labels, from.r, c.from)
				if err != nil {
					t.Fatal(err)
				}
				if want := (&Batch{Series: c.series}).Samples(); samples != want {
					t.Errorf("%s, %s from %s: %d samples, want %d", name, c.what, from.what, samples, want)
				}
				if !bytes.Equal(got[6:], want) {
					t.Errorf("%s, %s from %s: assembled payload differs from BlockZstd's (%d and %d bytes)", name, c.what, from.what, len(got)-6, len(want))
				}
			}
		}
	}
}
