package enricher

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/proto"
)

// publish stores msg in JetStream, retrying with backoff until it is
// acknowledged or ctx ends. A message over the server's limit is not
// retried.
func (e *Enricher) publish(ctx context.Context, msg *nats.Msg) error {
	for wait := minBackoff; ; wait = min(2*wait, maxBackoff) {
		_, err := e.js.PublishMsg(ctx, msg)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("publish %s: %w", msg.Subject, err)
		}
		e.metrics.publishRetries.Inc()
		e.log.Warn("publish failed, retrying", "subject", msg.Subject, "err", err, "wait", wait)
		if !sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

func (e *Enricher) ack(m jetstream.Msg) {
	if err := m.Ack(); err != nil {
		// The server redelivers after AckWait; the republish has the same
		// id and JetStream drops it as a duplicate.
		e.log.Warn("ack failed", "subject", m.Subject(), "err", err)
	}
}

// deadLetter publishes m to weir.dead.enricher with the reason and acks m
// once JetStream stored it. It reports whether m was settled.
func (e *Enricher) deadLetter(ctx context.Context, m jetstream.Msg, cause error) bool {
	out := proto.DeadLetter("enricher", "enricher", m, cause)
	for wait := minBackoff; ; wait = min(2*wait, maxBackoff) {
		_, err := e.js.PublishMsg(ctx, out)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, nats.ErrMaxPayload) && out.Data != nil {
			proto.OmitPayload(out)
			continue
		}
		e.log.Error("dead-letter publish failed, retrying", "err", err, "wait", wait)
		if !sleep(ctx, wait) {
			return false
		}
	}
	e.metrics.messages.WithLabelValues(resultDead).Inc()
	if ok, suppressed := e.deadLog.allow(time.Now()); ok {
		e.log.Warn("message dead-lettered", "subject", m.Subject(), "err", cause, "suppressed", suppressed)
	}
	e.ack(m)
	return true
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// throttle lets one log line through per interval and counts the rest.
type throttle struct {
	every      time.Duration
	last       atomic.Int64
	suppressed atomic.Int64
}

func (t *throttle) allow(now time.Time) (bool, int64) {
	last := t.last.Load()
	if now.UnixNano()-last < int64(t.every) || !t.last.CompareAndSwap(last, now.UnixNano()) {
		t.suppressed.Add(1)
		return false, 0
	}
	return true, t.suppressed.Swap(0)
}
