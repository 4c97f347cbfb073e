package collector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/internal/buffer"
	"github.com/weirmetrics/weir/proto"
)

// Retry waits of a sender whose scrape was not acknowledged: doubling from
// the first to the last, so that a NATS back after an outage is used
// within a few seconds without spinning while it is away.
const (
	firstRetryWait = 100 * time.Millisecond
	lastRetryWait  = 2 * time.Second
)

// pendingChunk is a published chunk waiting for its JetStream ack.
type pendingChunk struct {
	ack     jetstream.PubAckFuture
	index   int
	samples int
}

// sender publishes the scrapes of one subject from the buffer, oldest
// first, one scrape at a time: a scrape leaves the buffer only once
// JetStream acked every chunk of it, and the next scrape of the subject is
// published only then, so the stream receives a target's scrapes in
// scrape order whatever NATS does in between.
type sender struct {
	subject        proto.Subject
	subjectText    string
	buf            *buffer.Buffer
	pub            Publisher
	publishTimeout time.Duration
	metrics        targetMetrics
	log            failureLog
	pending        []pendingChunk
}

// senderSet runs one sender per subject, started with the first loop of
// the subject and kept until the collector stops: a sender outlives a
// target that went away until its buffered scrapes are published.
type senderSet struct {
	c               *Collector
	buf             *buffer.Buffer
	ctx, publishCtx context.Context
	started         map[string]bool // only Run's goroutine uses it
	wg              sync.WaitGroup
}

func newSenderSet(c *Collector, buf *buffer.Buffer, ctx, publishCtx context.Context) *senderSet {
	return &senderSet{c: c, buf: buf, ctx: ctx, publishCtx: publishCtx, started: map[string]bool{}}
}

// start runs the sender of l's subject unless it runs already.
func (ss *senderSet) start(l *loop) {
	ss.run(l.subject, l.subjectText, l.metrics, l.publishLog)
}

// spooled runs the senders of subjects a previous collector left in the
// spool, whether or not this one scrapes them.
func (ss *senderSet) spooled() {
	for _, text := range ss.buf.Subjects() {
		subj, err := proto.ParseSubject(text)
		if ss.started[text] || err != nil { // the spool checked the subject
			continue
		}
		log := ss.c.log.With("cluster", subj.Cluster, "node", subj.Node, "source", subj.Source)
		ss.run(subj, text, ss.c.metrics.forSource(subj.Source),
			failureLog{log: log, every: logEvery, failedMsg: "publish failed", recoveredMsg: "publish recovered"})
	}
}

func (ss *senderSet) run(subj proto.Subject, text string, m targetMetrics, log failureLog) {
	if ss.started[text] {
		return
	}
	ss.started[text] = true
	s := &sender{
		subject: subj, subjectText: text, buf: ss.buf, pub: ss.c.deps.JS,
		publishTimeout: ss.c.cfg.PublishTimeout, metrics: m, log: log,
	}
	ss.wg.Go(func() { s.run(ss.ctx, ss.publishCtx) })
}

// wait returns once every sender has ended.
func (ss *senderSet) wait() { ss.wg.Wait() }

// run publishes until ctx ends; then, stopping, it goes on publishing what
// the buffer still holds for the subject until the buffer is empty, a
// publish fails, or publishCtx ends. A scrape not published goes back to
// the buffer, which spools it at Close if it can.
func (s *sender) run(ctx, publishCtx context.Context) {
	wait := firstRetryWait
	for {
		// Next returns what is queued even once ctx ended, and waits for
		// more only while it has not.
		p, err := s.buf.Next(ctx, s.subjectText)
		if err != nil {
			return // stopping with nothing left, or the buffer closed
		}
		if err := s.publish(publishCtx, p.Scrape); err != nil {
			s.buf.Requeue(p)
			if ctx.Err() != nil {
				return // stopping: no retries
			}
			s.metrics.publishFailures.Inc()
			s.log.failed(time.Now(), err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return
			}
			wait = min(2*wait, lastRetryWait)
			continue
		}
		s.buf.Done(p)
		s.log.succeeded(time.Now())
		wait = firstRetryWait
	}
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

// publish sends the chunks of one scrape without waiting between them,
// then waits for every ack, at most publishTimeout. Samples count as
// published once acked as new: a chunk JetStream already had from an
// earlier attempt is acked as a duplicate and not counted again.
func (s *sender) publish(ctx context.Context, sc *buffer.Scrape) error {
	pending := s.pending[:0]
	defer func() {
		clear(pending) // drop the futures and their payloads until the next scrape
		s.pending = pending[:0]
	}()
	// While the client reconnects, a publish would wait in its reconnect
	// buffer, outside this buffer's limits, and reach the stream later
	// even if this scrape has been dropped meanwhile: fail it instead.
	if c, ok := s.pub.(interface{ Conn() *nats.Conn }); ok && c.Conn() != nil && !c.Conn().IsConnected() {
		return fmt.Errorf("publish %s: %w", s.subjectText, errNotConnected)
	}
	var errs []error
	for i, c := range sc.Chunks {
		msg := nats.NewMsg(s.subjectText)
		msg.Data = c.Payload
		proto.Meta{
			MsgID:        proto.MsgID(s.subject, sc.ScrapeMillis, i),
			Encoding:     sc.Encoding,
			ScrapeMillis: sc.ScrapeMillis,
			Chunk:        i,
			Chunks:       len(sc.Chunks),
			Samples:      c.Samples,
		}.SetHeaders(msg.Header)
		ack, err := s.pub.PublishMsgAsync(msg)
		if err != nil {
			errs = append(errs, fmt.Errorf("publish %s chunk %d/%d: %w", s.subjectText, i, len(sc.Chunks), err))
			continue
		}
		pending = append(pending, pendingChunk{ack: ack, index: i, samples: c.Samples})
	}

	deadline := time.NewTimer(s.publishTimeout)
	defer deadline.Stop()
	for i, p := range pending {
		select {
		case ack := <-p.ack.Ok():
			if !ack.Duplicate {
				s.metrics.samplesPublished.Add(float64(p.samples))
			}
		case err := <-p.ack.Err():
			errs = append(errs, fmt.Errorf("publish %s chunk %d/%d: %w", s.subjectText, p.index, len(sc.Chunks), err))
		case <-deadline.C:
			return errors.Join(append(errs, fmt.Errorf("publish %s: %w: %d of %d chunks not acknowledged within %s",
				s.subjectText, errAckTimeout, len(pending)-i, len(sc.Chunks), s.publishTimeout))...)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return errors.Join(errs...)
}

// errNotConnected is wrapped when the NATS connection is down.
var errNotConnected = errors.New("not connected to NATS")

// errAckTimeout is wrapped when JetStream did not ack within publish_timeout.
var errAckTimeout = errors.New("no ack")
