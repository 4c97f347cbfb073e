package collector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/proto"
)

// pendingChunk is a published chunk waiting for its JetStream ack.
type pendingChunk struct {
	ack     jetstream.PubAckFuture
	index   int
	samples int
}

// publish sends the chunks of one scrape without waiting between them, then
// waits for every ack, at most publishTimeout. Samples count as published
// only once acked: JetStream has stored them. A chunk not acked is counted
// and logged; it is not retried yet, and its samples are lost.
//
// The next scrape of the target is published only after this returns, so
// that its series reach the stream after this scrape's.
func (l *loop) publish(ctx context.Context, scrapeMillis int64, chunks []proto.Chunk) {
	var (
		failed  int
		lastErr error
	)
	pending := l.pending[:0]
	for i, c := range chunks {
		msg := nats.NewMsg(l.subjectText)
		msg.Data = c.Payload
		proto.Meta{
			MsgID:        proto.MsgID(l.subject, scrapeMillis, i),
			Encoding:     proto.DefaultEncoding.Name(),
			ScrapeMillis: scrapeMillis,
			Chunk:        i,
			Chunks:       len(chunks),
			Samples:      c.Samples,
		}.SetHeaders(msg.Header)
		ack, err := l.pub.PublishMsgAsync(msg)
		if err != nil {
			failed++
			lastErr = fmt.Errorf("publish %s chunk %d/%d: %w", l.subjectText, i, len(chunks), err)
			continue
		}
		pending = append(pending, pendingChunk{ack: ack, index: i, samples: c.Samples})
	}
	defer func() {
		clear(pending) // drop the futures and their payloads until the next scrape
		l.pending = pending[:0]
	}()

	deadline := time.NewTimer(l.publishTimeout)
	defer deadline.Stop()
	acked := 0
wait:
	for i, p := range pending {
		select {
		case <-p.ack.Ok():
			acked += p.samples
		case err := <-p.ack.Err():
			failed++
			lastErr = fmt.Errorf("publish %s chunk %d/%d: %w", l.subjectText, p.index, len(chunks), err)
		case <-deadline.C:
			failed += len(pending) - i
			lastErr = fmt.Errorf("publish %s: %w: %d of %d chunks not acknowledged within %s",
				l.subjectText, errAckTimeout, len(pending)-i, len(chunks), l.publishTimeout)
			break wait
		case <-ctx.Done():
			// Stopping: what is not acked yet may or may not be stored,
			// and counts as neither.
			l.metrics.samplesPublished.Add(float64(acked))
			return
		}
	}
	l.metrics.samplesPublished.Add(float64(acked))
	if failed > 0 {
		l.metrics.publishFailures.Add(float64(failed))
		l.publishLog.failed(time.Now(), lastErr, "failed_chunks", failed, "chunks", len(chunks))
		return
	}
	l.publishLog.succeeded(time.Now())
}

// errAckTimeout is wrapped when JetStream did not ack within publish_timeout.
var errAckTimeout = errors.New("no ack")
