package summary

import (
	"testing"

	"github.com/weirmetrics/weir/internal/fixtures"
)

// BenchmarkSummary decodes and converts the real 1.35 summary, as one
// scrape of the summary source does.
func BenchmarkSummary(b *testing.B) {
	body := fixtures.Read(fixtures.Summary135)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var dst []Sample
	n := 0
	for b.Loop() {
		s, err := Decode(body)
		if err != nil {
			b.Fatal(err)
		}
		dst = s.Append(dst[:0])
		if len(dst) == 0 {
			b.Fatal("no samples")
		}
		n += len(dst)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "samples/s")
}
