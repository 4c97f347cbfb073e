package sink

import (
	"testing"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// BenchmarkDecodeBuildRequest is a shard's work per message, without the
// network: decode one real cAdvisor scrape (Kubernetes 1.35) as the
// collector encodes it, and build its remote-write requests (marshal and
// snappy) at the default max_samples_per_send.
func BenchmarkDecodeBuildRequest(b *testing.B) {
	series := captureSeries(b, fixtures.Cadvisor135, scrapeMillis)
	payload, err := proto.DefaultEncoding.Append(nil, &proto.Batch{Series: series})
	if err != nil {
		b.Fatal(err)
	}
	enc, err := proto.EncodingByName(proto.DefaultEncoding.Name())
	if err != nil {
		b.Fatal(err)
	}
	var batch proto.Batch
	w := requestBuilder{limit: DefaultConfig().QueueConfig.MaxSamplesPerSend, exemplars: true, histograms: true}
	want := len(series)
	wantRequests := (want + w.limit - 1) / w.limit
	var samples, requests int
	e := newEncoder()
	send := func(r request) error {
		body, err := e.encode(r, protoV1)
		if err != nil || len(body) == 0 || r.samples > w.limit {
			b.Fatalf("request of %d bytes, %d samples: %v", len(body), r.samples, err)
		}
		samples += r.samples
		requests++
		return nil
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		if err := enc.Decode(payload, &batch); err != nil {
			b.Fatal(err)
		}
		samples, requests = 0, 0
		if err := w.build(&batch, send); err != nil {
			b.Fatal(err)
		}
		if samples != want || requests != wantRequests {
			b.Fatalf("built %d requests of %d samples, want %d of %d", requests, samples, wantRequests, want)
		}
		n++
	}
	b.ReportMetric(float64(want*n)/b.Elapsed().Seconds(), "samples/s")
}
