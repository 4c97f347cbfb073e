package proto

import (
	"errors"
	"reflect"
	"testing"

	"github.com/prometheus/prometheus/prompb"
)

func metricName(ls []prompb.Label) string {
	for _, l := range ls {
		if l.Name == metricNameLabel {
			return l.Value
		}
	}
	return ""
}

// TestBlockReaderSelectsAsDecode: on every real capture, the series a
// reader builds for the names a stage selects are exactly those of the
// capture with these names, in order, labels and samples alike: what the
// full decode gives back of them (TestEncodingsRoundTripCaptures).
func TestBlockReaderSelectsAsDecode(t *testing.T) {
	for _, name := range textCaptures {
		in := Batch{Series: captureSeries(t, name)}
		payload, err := BlockZstd{}.Append(nil, &in)
		if err != nil {
			t.Fatal(err)
		}
		// Every third metric name, in the order they first appear.
		selected := map[string]bool{}
		seen := map[string]bool{}
		var want []prompb.TimeSeries
		for _, s := range in.Series {
			n := metricName(s.Labels)
			if !seen[n] {
				seen[n] = true
				selected[n] = len(seen)%3 == 1
			}
			if selected[n] {
				want = append(want, s)
			}
		}
		var r BlockReader
		if err := r.Reset(payload); err != nil {
			t.Fatal(err)
		}
		if r.Len() != len(in.Series) {
			t.Fatalf("%s: reader has %d series, want %d", name, r.Len(), len(in.Series))
		}
		var got []prompb.TimeSeries
		for i := range r.Len() {
			n, err := r.Name(i)
			if err != nil {
				t.Fatal(err)
			}
			if want := metricName(in.Series[i].Labels); n != want {
				t.Fatalf("%s series %d: Name %q, want %q", name, i, n, want)
			}
			if !selected[n] {
				continue
			}
			ls, err := r.AppendLabels(nil, i)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, prompb.TimeSeries{Labels: ls, Samples: r.AppendSamples(nil, i)})
		}
		if len(got) != len(want) || len(want) == 0 {
			t.Fatalf("%s: reader built %d series, want %d", name, len(got), len(want))
		}
		for i := range want {
			if !reflect.DeepEqual(got[i].Labels, want[i].Labels) || !sameSamples(got[i].Samples, want[i].Samples) {
				t.Fatalf("%s selected series %d: got %v, want %v", name, i, got[i], want[i])
			}
		}
	}
}

// TestBlockReaderLabelsSum: the sum follows the labels and their order,
// not the samples.
func TestBlockReaderLabelsSum(t *testing.T) {
	sum := func(ss []prompb.TimeSeries) uint64 {
		t.Helper()
		payload, err := BlockZstd{}.Append(nil, &Batch{Series: ss})
		if err != nil {
			t.Fatal(err)
		}
		var r BlockReader
		if err := r.Reset(payload); err != nil {
			t.Fatal(err)
		}
		return r.LabelsSum()
	}
	base := sum(series(50))
	later := series(50)
	for i := range later {
		later[i].Samples = append(later[i].Samples, prompb.Sample{Value: 7, Timestamp: later[i].Samples[0].Timestamp + 15000})
	}
	if sum(later) != base {
		t.Error("other samples of the same series changed the sum")
	}
	relabeled := series(50)
	relabeled[20].Labels[2].Value = "changed"
	if sum(relabeled) == base {
		t.Error("a changed label value kept the sum")
	}
	swapped := series(50)
	swapped[3], swapped[4] = swapped[4], swapped[3]
	if sum(swapped) == base {
		t.Error("series in another order kept the sum")
	}
}

// TestBlockReaderResetError: a payload that fails leaves no series.
func TestBlockReaderResetError(t *testing.T) {
	payload, err := BlockZstd{}.Append(nil, &Batch{Series: series(10)})
	if err != nil {
		t.Fatal(err)
	}
	var r BlockReader
	if err := r.Reset(payload); err != nil || r.Len() != 10 {
		t.Fatalf("Reset = %v, %d series", err, r.Len())
	}
	if err := r.Reset(payload[:len(payload)/2]); !errors.Is(err, ErrMalformed) || r.Len() != 0 {
		t.Fatalf("truncated: Reset = %v, %d series; want ErrMalformed and none", err, r.Len())
	}
	// The label refs are checked when the labels are first read.
	bad := block(uv(1, 1), []byte("a"), uv(1, 1, 7, 0, 1), uv(0), make([]byte, 8))
	if err := r.Reset(bad); err != nil || r.Len() != 1 {
		t.Fatalf("Reset = %v, %d series", err, r.Len())
	}
	if _, err := r.Name(0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Name of a label ref past the symbols = %v, want ErrMalformed", err)
	}
	if _, err := r.AppendLabels(nil, 0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("AppendLabels of a label ref past the symbols = %v, want ErrMalformed", err)
	}
}
