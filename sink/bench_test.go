package sink

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/cputime"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// BenchmarkDecodeBuildRequest is a shard's work per message, without the
// network: read one real cAdvisor scrape (Kubernetes 1.35) as the collector
// encodes it, and build its remote-write requests (marshal and snappy) at
// the default max_samples_per_send. "decoded" decodes the payload whole, as
// the sink does a target's first payload and any not in BlockZstd;
// "steady" is a target whose labels are those of its last payload; "churn"
// one whose pods came and went since, so that its payloads alternate
// between two sets of series.
func BenchmarkDecodeBuildRequest(b *testing.B) {
	series := captureSeries(b, fixtures.Cadvisor135, scrapeMillis)
	var payloads [2][]byte
	var wants [2]int
	for i, ss := range [][]prompb.TimeSeries{series, fixtures.PodsReplaced(series)} {
		var err error
		if payloads[i], err = proto.DefaultEncoding.Append(nil, &proto.Batch{Series: ss}); err != nil {
			b.Fatal(err)
		}
		wants[i] = len(ss)
	}
	limit := DefaultConfig().QueueConfig.MaxSamplesPerSend
	for _, p := range []protocol{protoV1, protoV2} {
		for _, path := range []string{"decoded", "steady", "churn"} {
			b.Run(p.String()+"/"+path, func(b *testing.B) {
				budget := new(atomic.Int64)
				budget.Store(maxCachedBytes)
				sh := shard{
					builder: requestBuilder{limit: limit, exemplars: true, histograms: true},
					cache:   newLabelCache(budget),
					enc:     newEncoder(),
				}
				var samples, requests, n int
				payload, want := payloads[0], wants[0]
				send := func(r request) error {
					body, err := sh.enc.encode(r, p)
					if err != nil || len(body) == 0 || r.samples > limit {
						b.Fatalf("request of %d bytes, %d samples: %v", len(body), r.samples, err)
					}
					samples += r.samples
					requests++
					return nil
				}
				read := func() error {
					sh.labels = nil
					if path == "churn" {
						payload, want = payloads[n%2], wants[n%2]
						n++
					}
					if path == "decoded" {
						return proto.DefaultEncoding.Decode(payload, &sh.batch)
					}
					if err := sh.reader.Reset(payload); err != nil {
						return err
					}
					l, err := sh.cache.labels(targetKey{subject: "weir.route.r.c.n.cadvisor.0"}, &sh.reader, p, time.Time{})
					sh.labels = l
					return err
				}
				if err := read(); err != nil { // the target's first payload
					b.Fatal(err)
				}
				b.SetBytes(int64(len(payloads[0])))
				b.ReportAllocs()
				cpu := cputime.Process()
				for b.Loop() {
					if err := read(); err != nil {
						b.Fatal(err)
					}
					samples, requests = 0, 0
					if err := sh.build(send); err != nil {
						b.Fatal(err)
					}
					if wantRequests := (want + limit - 1) / limit; samples != want || requests != wantRequests {
						b.Fatalf("built %d requests of %d samples, want %d of %d", requests, samples, wantRequests, want)
					}
				}
				reportCPU(b, cpu, wants[0])
			})
		}
	}
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
			cpu := cputime.Process()
			for b.Loop() {
				bytes = 0
				if err := w.build(&batch, send); err != nil {
					b.Fatal(err)
				}
			}
			reportCPU(b, cpu, len(batch.Series))
			b.ReportMetric(float64(bytes), "bytes/scrape")
		})
	}
}

func reportCPU(b *testing.B, since time.Duration, samples int) {
	cputime.Report(b, since, samples)
	b.ReportMetric(float64(b.N*samples)/b.Elapsed().Seconds(), "samples/s")
}
