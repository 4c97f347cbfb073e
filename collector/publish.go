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

	// stopWaiting makes the sender end once its queue is empty.
	stopWaiting context.CancelFunc
	retiring    bool          // stopWaiting was called; under senderSet.mu
	done        chan struct{} // closed when the sender has ended
}

// senderSet runs one sender per subject, started with the first loop of
// the subject. A sender outlives a target that went away until its
// buffered scrapes, staleness markers last, are published; then it ends
// and the buffer forgets the subject, so that the senders and queues of
// nodes long gone do not add up in central mode.
type senderSet struct {
	c               *Collector
	buf             *buffer.Buffer
	ctx, publishCtx context.Context
	wg              sync.WaitGroup

	mu      sync.Mutex
	running map[string]*sender // by subject; a sender takes itself out as it ends
}

func newSenderSet(c *Collector, buf *buffer.Buffer, ctx, publishCtx context.Context) *senderSet {
	return &senderSet{c: c, buf: buf, ctx: ctx, publishCtx: publishCtx, running: map[string]*sender{}}
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
		if err != nil { // the spool checked the subject
			continue
		}
		log := ss.c.log.With("cluster", subj.Cluster, "node", subj.Node, "source", subj.Source)
		ss.run(subj, text, ss.c.metrics.forSource(subj.Source),
			failureLog{log: log, every: logEvery, failedMsg: "publish failed", recoveredMsg: "publish recovered"})
	}
}

// run starts the sender of a subject unless one runs that is not
// retiring. Only Run's goroutine calls it.
func (ss *senderSet) run(subj proto.Subject, text string, m targetMetrics, log failureLog) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	prev := ss.running[text]
	if prev != nil && !prev.retiring {
		return
	}
	waitCtx, stopWaiting := context.WithCancel(ss.ctx)
	s := &sender{
		subject: subj, subjectText: text, buf: ss.buf, pub: ss.c.deps.JS,
		publishTimeout: ss.c.cfg.PublishTimeout, metrics: m, log: log,
		stopWaiting: stopWaiting, done: make(chan struct{}),
	}
	ss.running[text] = s
	ss.wg.Go(func() {
		defer close(s.done)
		defer stopWaiting()
		if prev != nil {
			// A node back before its old sender ended: one sender per
			// subject takes from the queue, or scrapes could leave out of
			// order. The old one publishes what the new loop queues
			// until it finds the queue empty.
			<-prev.done
		}
		s.run(ss.ctx, waitCtx, ss.publishCtx)
		ss.ended(s)
	})
}

// retire makes the sender of subject, whose target is gone and whose last
// scrape is queued, end once it has published what is queued.
func (ss *senderSet) retire(subject string) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s := ss.running[subject]; s != nil && !s.retiring {
		s.retiring = true
		s.stopWaiting()
	}
}

// ended takes s out of the set and has the buffer forget its subject,
// unless a successor took the subject over meanwhile. A queue that still
// holds scrapes (the collector is stopping) is not forgotten.
func (ss *senderSet) ended(s *sender) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.running[s.subjectText] != s {
		return
	}
	delete(ss.running, s.subjectText)
	ss.buf.Forget(s.subjectText)
}

// wait returns once every sender has ended.
func (ss *senderSet) wait() { ss.wg.Wait() }

// run publishes until ctx ends; then, stopping, it goes on publishing what
// the buffer still holds for the subject until the buffer is empty, a
// publish fails, or publishCtx ends. A scrape not published goes back to
// the buffer, which spools it at Close if it can. Once waitCtx, which ends
// with ctx, ends first, the sender is retiring: it publishes and retries
// what is queued as before, and ends when the queue is empty.
func (s *sender) run(ctx, waitCtx, publishCtx context.Context) {
	wait := firstRetryWait
	for {
		// Next returns what is queued even once waitCtx ended, and waits
		// for more only while it has not.
		p, err := s.buf.Next(waitCtx, s.subjectText)
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
