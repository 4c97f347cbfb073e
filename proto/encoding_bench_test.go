package proto

import (
	"fmt"
	"testing"

	"github.com/weirmetrics/weir/internal/cputime"
	"github.com/weirmetrics/weir/internal/fixtures"
)

// BenchmarkEncoding encodes and decodes the Kubernetes 1.35 cAdvisor
// capture, one scrape in one payload, with every encoding: bytes/sample is
// what JetStream stores, ns/sample what a collector (encode) or every later
// stage (decode) spends.
func BenchmarkEncoding(b *testing.B) {
	series := captureSeries(b, fixtures.Cadvisor135)
	in := Batch{Series: series}
	samples := in.Samples()
	for _, enc := range []Encoding{SnappyPRW1{}, BlockZstd{}} {
		payload, err := enc.Append(nil, &in)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("encoding=%s/op=encode", enc.Name()), func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			cpu := cputime.Process()
			for b.Loop() {
				if buf, err = enc.Append(buf[:0], &in); err != nil {
					b.Fatal(err)
				}
			}
			cputime.Report(b, cpu, samples)
			b.ReportMetric(float64(len(buf))/float64(samples), "bytes/sample")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(samples), "ns/sample")
		})
		b.Run(fmt.Sprintf("encoding=%s/op=decode", enc.Name()), func(b *testing.B) {
			b.ReportAllocs()
			var out Batch
			cpu := cputime.Process()
			for b.Loop() {
				if err := enc.Decode(payload, &out); err != nil {
					b.Fatal(err)
				}
				if len(out.Series) != len(series) {
					b.Fatalf("decoded %d series, want %d", len(out.Series), len(series))
				}
			}
			cputime.Report(b, cpu, samples)
			b.ReportMetric(float64(len(payload))/float64(samples), "bytes/sample")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(samples), "ns/sample")
		})
	}
}

// BenchmarkBlockReader reads the Kubernetes 1.35 cAdvisor capture as the
// alerter does: op=same-series is a scrape listing the series of the last
// one (decompress, samples, LabelsSum), op=names one it has not seen (the
// metric name of every series too).
func BenchmarkBlockReader(b *testing.B) {
	in := Batch{Series: captureSeries(b, fixtures.Cadvisor135)}
	samples := in.Samples()
	payload, err := BlockZstd{}.Append(nil, &in)
	if err != nil {
		b.Fatal(err)
	}
	for _, names := range []bool{false, true} {
		op := "same-series"
		if names {
			op = "names"
		}
		b.Run("op="+op, func(b *testing.B) {
			b.ReportAllocs()
			var r BlockReader
			cpu := cputime.Process()
			for b.Loop() {
				if err := r.Reset(payload); err != nil {
					b.Fatal(err)
				}
				_ = r.LabelsSum()
				if !names {
					continue
				}
				for i := range r.Len() {
					if _, err := r.Name(i); err != nil {
						b.Fatal(err)
					}
				}
			}
			cputime.Report(b, cpu, samples)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(samples), "ns/sample")
		})
	}
}
