package loadtest

import (
	"bytes"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
)

// BenchmarkRender is the fleet's cost per scrape of the 1.35 cAdvisor
// capture: the load test's own share of the machine.
func BenchmarkRender(b *testing.B) {
	tmpl, err := compileTemplate(fixtures.Read(fixtures.Cadvisor135))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	var buf []byte
	for i := 0; b.Loop(); i++ {
		buf = tmpl.render(buf[:0], int64(i), 1_700_000_000_000, func(p int) int64 { return int64(i+p) / 10 })
	}
	if len(buf) == 0 {
		b.Fatal("empty scrape")
	}
	b.ReportMetric(float64(tmpl.samples*b.N)/b.Elapsed().Seconds(), "samples/s")
}

// BenchmarkReceiver is the receiver's cost per request of 2,000 samples
// (replays after the first: every sample is still decoded and looked up).
func BenchmarkReceiver(b *testing.B) {
	var wr prompb.WriteRequest
	for i := range 2000 {
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels: []prompb.Label{
				{Name: "__name__", Value: "container_cpu_usage_seconds_total"}, {Name: "container", Value: "app"},
				{Name: "id", Value: fmt.Sprintf("/kubepods/burstable/pod%d", i)}, {Name: "instance", Value: "10.0.0.1:10250"},
				{Name: "job", Value: "kubelet"}, {Name: "namespace", Value: "default"}, {Name: "pod", Value: fmt.Sprintf("app-%d", i)},
			},
			Samples: []prompb.Sample{{Value: 1, Timestamp: 1_700_000_000_000}},
		})
	}
	raw, err := wr.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	body := snappy.Encode(nil, raw)
	r := NewReceiver()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("POST", "/api/v1/write", bytes.NewReader(body)))
		if w.Code != 204 {
			b.Fatalf("status %d", w.Code)
		}
	}
	if s := r.Stats(); s.Samples != int64(2000*b.N) || s.Unique != 2000 {
		b.Fatalf("samples %d unique %d, want %d and 2000", s.Samples, s.Unique, 2000*b.N)
	}
	b.ReportMetric(float64(2000*b.N)/b.Elapsed().Seconds(), "samples/s")
}
