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

// BenchmarkEncode measures building and encoding the requests of one
// decoded cAdvisor scrape, in each protocol.
func BenchmarkEncode(b *testing.B) {
	batch := proto.Batch{Series: captureSeries(b, fixtures.Cadvisor135, scrapeMillis)}
	for _, p := range []protocol{protoV1, protoV2} {
		b.Run(p.String(), func(b *testing.B) {
			w := requestBuilder{limit: DefaultConfig().QueueConfig.MaxSamplesPerSend, exemplars: true, histograms: true}
			e := newEncoder()
			bytes := 0
			send := func(r request) error {
				body, err := e.encode(r, p)
				bytes += len(body)
				return err
			}
			b.ReportAllocs()
			for b.Loop() {
				bytes = 0
				if err := w.build(&batch, send); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(batch.Series)*b.N)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(bytes), "bytes/scrape")
		})
	}
}
