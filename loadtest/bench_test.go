package loadtest

import (
	"bytes"
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

// BenchmarkReceiver is the receiver's cost per request of 2,000 samples.
func BenchmarkReceiver(b *testing.B) {
	var wr prompb.WriteRequest
	for i := range 2000 {
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "container_cpu_usage_seconds_total"}, {Name: "pod", Value: "pod-" + string(rune('a'+i%26))}, {Name: "id", Value: string(rune(i))}},
			Samples: []prompb.Sample{{Value: 1}},
		})
	}
	r := NewReceiver()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range wr.Timeseries {
			wr.Timeseries[j].Samples[0].Timestamp = int64(i)
		}
		raw, _ := wr.Marshal()
		req := httptest.NewRequest("POST", "/api/v1/write", bytes.NewReader(snappy.Encode(nil, raw)))
		w := httptest.NewRecorder()
		r.ServeHTTP(w, req)
		if w.Code != 204 {
			b.Fatalf("status %d", w.Code)
		}
	}
	if s := r.Stats(); s.Unique != int64(2000*b.N) {
		b.Fatalf("unique %d, want %d", s.Unique, 2000*b.N)
	}
	b.ReportMetric(float64(2000*b.N)/b.Elapsed().Seconds(), "samples/s")
}
