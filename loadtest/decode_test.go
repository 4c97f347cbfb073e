package loadtest

import (
	"math"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/prompb"
)

// hashLabels is the series hash as walkWriteRequest computes it.
func hashLabels(ls []prompb.Label) uint64 {
	var d xxhash.Digest
	for _, l := range ls {
		_, _ = d.WriteString(l.Name)
		_, _ = d.Write([]byte{0xff})
		_, _ = d.WriteString(l.Value)
		_, _ = d.Write([]byte{0xfe})
	}
	return d.Sum64()
}

// checkWalk decodes raw with walkWriteRequest and with prompb and fails
// when both decode it and disagree on any series or sample.
func checkWalk(t *testing.T, raw []byte) {
	t.Helper()
	var want prompb.WriteRequest
	wantErr := want.Unmarshal(raw)
	var got []series
	var s series
	err := walkWriteRequest(raw, &s, func(s *series) {
		c := *s
		c.samples = append([]sample(nil), s.samples...)
		got = append(got, c)
	})
	if wantErr != nil || err != nil {
		// On garbage the two may differ (gogo's prompb skips groups and
		// field numbers protowire refuses); the clients a load test
		// measures send neither. Where both decode, they must agree.
		return
	}
	if len(got) != len(want.Timeseries) {
		t.Fatalf("%d series, prompb has %d", len(got), len(want.Timeseries))
	}
	for i, ts := range want.Timeseries {
		if got[i].hash != hashLabels(ts.Labels) {
			t.Fatalf("series %d: hash differs from prompb's labels %v", i, ts.Labels)
		}
		if len(got[i].samples) != len(ts.Samples) {
			t.Fatalf("series %d: %d samples, prompb has %d", i, len(got[i].samples), len(ts.Samples))
		}
		for j, smp := range ts.Samples {
			g := got[i].samples[j]
			if g.ts != smp.Timestamp || math.Float64bits(g.value) != math.Float64bits(smp.Value) {
				t.Fatalf("series %d sample %d: %v, prompb has %v", i, j, g, smp)
			}
		}
	}
}

func TestWalkWriteRequest(t *testing.T) {
	wr := prompb.WriteRequest{
		Timeseries: []prompb.TimeSeries{
			{Labels: []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "instance", Value: "a:1"}, {Name: "job", Value: "kubelet"}, {Name: "metrics_path", Value: "/metrics"}},
				Samples: []prompb.Sample{{Value: 0, Timestamp: 5}, {Value: math.Inf(-1), Timestamp: -3}}},
			{Labels: []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "", Value: ""}},
				Exemplars: []prompb.Exemplar{{Value: 1, Timestamp: 2}}, Samples: []prompb.Sample{{Value: 2.5, Timestamp: 7}}},
			{},
		},
		Metadata: []prompb.MetricMetadata{{MetricFamilyName: "m", Help: "h"}},
	}
	raw, err := wr.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	checkWalk(t, raw)
	var s series
	if err := walkWriteRequest(raw, &s, func(*series) {}); err != nil {
		t.Fatalf("a request prompb wrote: %v", err)
	}
	if err := walkWriteRequest(raw[:len(raw)-1], &s, func(*series) {}); err == nil {
		t.Fatal("a request cut short inside its last field decoded")
	}
	var names []string
	if err := walkWriteRequest(raw, &s, func(s *series) {
		names = append(names, string(s.name)+"|"+string(s.instance)+"|"+string(s.path)+"|"+string(s.job))
	}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"up|a:1|/metrics|kubelet", "m|||", "|||"}; len(names) != 3 || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
		t.Fatalf("series %q, want %q", names, want)
	}
}

func FuzzWalkWriteRequest(f *testing.F) {
	wr := prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "instance", Value: "a:1"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: 2}},
	}}}
	raw, _ := wr.Marshal()
	f.Add(raw)
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 'a'})
	f.Fuzz(func(t *testing.T, raw []byte) { checkWalk(t, raw) })
}
