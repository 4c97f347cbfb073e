package collector

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/buffer"
	"github.com/weirmetrics/weir/internal/cputime"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

// BenchmarkParseEncode measures what a scrape loop does with a body: parse
// the Kubernetes 1.35 cAdvisor capture into a batch and encode it into
// messages of at most 1 MiB. "steady" is every scrape after the first,
// whose lines the parser and whose label columns the encoder already
// know; "series_churn" scrapes in turn the capture and the capture without
// a series in its middle, so that every scrape has a series come or go and
// the encoder builds its label columns again; "first_scrape" builds every
// series' labels.
func BenchmarkParseEncode(b *testing.B) {
	body := fixtures.NewShifted(fixtures.Read(fixtures.Cadvisor135)).At(time.Now())
	_, samples := expectedSeries(b, body, scrapeAt, nil)
	mid := len(body) / 2
	start, end := bytes.LastIndexByte(body[:mid], '\n')+1, mid+bytes.IndexByte(body[mid:], '\n')+1
	churned := append(body[:start:start], body[end:]...)
	subject := proto.Subject{Stage: proto.StageRaw, Cluster: "prod-eu-1", Node: "ip-10-0-0-1.eu-west-1.compute.internal", Source: proto.SourceCadvisor}
	limit := 1<<20 - headerBytes(subject)

	for _, bc := range []struct {
		name               string
		parserPerOp, churn bool
	}{{"steady", false, false}, {"series_churn", false, true}, {"first_scrape", true, false}} {
		b.Run(bc.name, func(b *testing.B) {
			p, enc := newParser(testTargetLabels), &proto.BlockEncoder{}
			var batch []proto.LabeledSample
			if _, err := p.parse(&batch, body, textType, scrapeAt); err != nil {
				b.Fatal(err)
			}
			encoded := 0
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			cpu := cputime.Process()
			for i := 0; b.Loop(); i++ {
				if bc.parserPerOp {
					p, enc = newParser(testTargetLabels), &proto.BlockEncoder{}
				}
				in, want := body, samples
				if bc.churn && i%2 == 0 {
					in, want = churned, samples-1
				}
				batch = batch[:0]
				n, err := p.parse(&batch, in, textType, scrapeAt)
				if err != nil || n != want {
					b.Fatalf("parse = %d, %v; want %d samples", n, err, want)
				}
				chunks, err := proto.EncodeSamples(enc, batch, limit)
				if err != nil || len(chunks) == 0 {
					b.Fatalf("encode: %d chunks, %v", len(chunks), err)
				}
				encoded = 0
				for _, c := range chunks {
					encoded += len(c.Payload)
				}
			}
			cputime.Report(b, cpu, samples)
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(samples*b.N)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(b.N)/float64(samples), "allocs/sample")
			b.ReportMetric(float64(encoded)/float64(samples), "bytes/sample")
		})
	}
}

// BenchmarkPublish measures what follows the encoding: a cAdvisor scrape
// goes through the buffer and is published to a real embedded JetStream,
// which stores it and acks it.
func BenchmarkPublish(b *testing.B) {
	body := fixtures.NewShifted(fixtures.Read(fixtures.Cadvisor135)).At(time.Now())
	p := newParser(testTargetLabels)
	var batch []proto.LabeledSample
	samples, err := p.parse(&batch, body, textType, scrapeAt)
	if err != nil {
		b.Fatal(err)
	}
	subject := proto.Subject{Stage: proto.StageRaw, Cluster: testCluster, Node: "node-a", Source: proto.SourceCadvisor}
	chunks, err := proto.EncodeSamples(&proto.BlockEncoder{}, batch, 1<<20-headerBytes(subject))
	if err != nil {
		b.Fatal(err)
	}
	_, js := natstest.Connect(b, natstest.Run(b))
	ctx := context.Background()
	if err := proto.EnsureStreams(ctx, js, proto.DefaultStreamsConfig()); err != nil {
		b.Fatal(err)
	}
	buf, err := buffer.Open(buffer.Config{MaxBytes: 16 << 20}, nil, buffer.Hooks{})
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	s := &sender{
		subject: subject, subjectText: subject.String(), buf: buf, pub: js, publishTimeout: 10 * time.Second,
		metrics: newMetrics(nil).forSource(proto.SourceCadvisor),
	}
	b.ReportAllocs()
	millis := int64(scrapeAt)
	for b.Loop() {
		millis++ // a new scrape each time, or JetStream drops it as a duplicate
		buf.Push(&buffer.Scrape{Subject: s.subjectText, Encoding: proto.DefaultEncoding.Name(), ScrapeMillis: millis, Chunks: chunks})
		pending, err := buf.Next(ctx, s.subjectText)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.publish(ctx, pending.Scrape); err != nil {
			b.Fatal(err)
		}
		buf.Done(pending)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(samples), "ns/sample")
	b.ReportMetric(float64(samples*b.N)/b.Elapsed().Seconds(), "samples/s")
}
