package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weirmetrics/weir/proto"
)

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("sink closed")

// Deps are what a sink is given by the process that runs it.
type Deps struct {
	Log    *slog.Logger          // nil discards
	Reg    prometheus.Registerer // nil registers nothing
	JS     jetstream.JetStream
	Stream string // stream to read, such as proto.StreamRaw
	Filter string // subject filter, such as proto.StreamFilter(proto.StageRaw)
}

// Sink remote-writes one stream to one backend. See the package
// documentation for what it guarantees.
type Sink struct {
	cfg     Config
	log     *slog.Logger
	js      jetstream.JetStream
	stream  string
	filter  string
	metrics *metrics
	client  *client

	// One log line per interval for each kind of repeating trouble.
	retryLog, dropLog, deadLog logThrottle

	mu      sync.Mutex
	running bool
	closed  bool
	stop    context.CancelFunc // cancels the running Run
}

// Timings that are not worth a configuration key.
const (
	logEvery = 10 * time.Second
	// drainWait bounds how long a stopping sink waits for the messages the
	// client library already buffered, which it nacks.
	drainWait = 2 * time.Second
	// maxQueuePerShard bounds the messages waiting for one shard.
	maxQueuePerShard = 16
	// maxErrorHeader bounds the Weir-Error header of a dead letter.
	maxErrorHeader = 1024
)

// New checks cfg and d and builds a sink. It does no I/O and starts
// nothing; Run does.
func New(cfg Config, d Deps) (*Sink, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if d.JS == nil {
		errs = append(errs, errors.New("sink: no JetStream"))
	}
	if d.Stream == "" || d.Filter == "" {
		errs = append(errs, fmt.Errorf("sink: stream %q and filter %q are both required", d.Stream, d.Filter))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m, err := newMetrics(d.Reg, cfg.Name)
	if err != nil {
		return nil, err
	}
	return &Sink{
		cfg:      cfg,
		log:      log.With("stage", "sink", "sink", cfg.Name),
		js:       d.JS,
		stream:   d.Stream,
		filter:   d.Filter,
		metrics:  m,
		client:   newClient(cfg, m),
		retryLog: logThrottle{every: logEvery},
		dropLog:  logThrottle{every: logEvery},
		deadLog:  logThrottle{every: logEvery},
	}, nil
}

// Run creates or updates the sink's durable consumer and sends what it
// reads until ctx ends or Close is called. It then stops pulling, nacks
// every message it had not finished, waits for everything it started, and
// returns nil. Failures to reach NATS are logged and retried, not returned.
func (s *Sink) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.running:
		s.mu.Unlock()
		return errors.New("sink: Run is already running")
	}
	s.running, s.stop = true, cancel
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running, s.stop = false, nil
		s.mu.Unlock()
	}()

	s.log.Info("sink starting", "url", s.cfg.URL.Redacted(), "stream", s.stream, "filter", s.filter,
		"consumer", s.consumerName(), "shards", s.cfg.QueueConfig.MaxShards)
	held := newHeldSet(s.metrics.pending, 2*s.cfg.MaxAckPending)
	shards := make([]*shard, s.cfg.QueueConfig.MaxShards)
	queueLen := max(1, min(maxQueuePerShard, s.cfg.MaxAckPending/len(shards)))
	var wg sync.WaitGroup
	for i := range shards {
		sh := &shard{
			queue:   make(chan delivery, queueLen),
			builder: requestBuilder{limit: s.cfg.QueueConfig.MaxSamplesPerSend},
		}
		shards[i] = sh
		wg.Go(func() { s.runShard(ctx, sh, held) })
	}
	wg.Go(func() { s.keepAlive(ctx, held) })

	s.consume(ctx, shards, held) // returns once ctx ended, with the queues closed
	wg.Wait()
	s.nakHeld(held)
	s.client.close()
	s.log.Info("sink stopped")
	return nil
}

// Close stops a running Run and releases idle connections. It is safe to
// call more than once, and before, during or after Run.
func (s *Sink) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.stop != nil {
		s.stop()
	}
	s.mu.Unlock()
	s.client.close()
	return nil
}

func (s *Sink) consumerName() string { return "sink-" + s.cfg.Name }

// shard sends the messages of the subjects hashed to it, one at a time.
type shard struct {
	queue   chan delivery
	batch   proto.Batch // reused by every message of the shard
	builder requestBuilder
}

// delivery is a message with its stream sequence, which the held set is
// keyed by.
type delivery struct {
	msg jetstream.Msg
	seq uint64
}

// consume pulls messages and hands each to the shard of its subject until
// ctx ends. When the subscription fails (NATS away, consumer deleted) it
// subscribes again after a backoff. It closes the shard queues on return.
func (s *Sink) consume(ctx context.Context, shards []*shard, held *heldSet) {
	defer func() {
		for _, sh := range shards {
			close(sh.queue)
		}
	}()
	bo := newBackoff(s.cfg.QueueConfig)
	for {
		it, err := s.subscribe(ctx)
		if err == nil {
			bo = newBackoff(s.cfg.QueueConfig)
			err = s.pull(ctx, it, shards, held)
			if ctx.Err() != nil {
				s.drain(it, held)
				return
			}
			it.Stop()
		}
		if ctx.Err() != nil {
			return
		}
		wait := bo.wait(0)
		s.log.Error("consuming failed, retrying", "err", err, "wait", wait)
		if !sleep(ctx, wait) {
			return
		}
	}
}

func (s *Sink) subscribe(ctx context.Context) (jetstream.MessagesContext, error) {
	cfg := proto.ConsumerConfig(s.consumerName(), s.filter, s.cfg.AckWait, s.cfg.MaxAckPending)
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s on stream %s: %w", cfg.Durable, s.stream, err)
	}
	// A small pull batch: what the client library buffers is not yet ours
	// to keep alive, and would be redelivered while a full shard blocks us.
	batch := max(1, min(s.cfg.MaxAckPending, 2*s.cfg.QueueConfig.MaxShards))
	it, err := cons.Messages(jetstream.PullMaxMessages(batch))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", cfg.Durable, err)
	}
	return it, nil
}

// pull dispatches messages until ctx ends or the subscription fails.
func (s *Sink) pull(ctx context.Context, it jetstream.MessagesContext, shards []*shard, held *heldSet) error {
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		switch {
		case err == nil:
		case errors.Is(err, jetstream.ErrNoHeartbeat):
			// The library pulls again by itself; say so and keep going.
			s.log.Warn("no heartbeat from NATS, pulling again", "err", err)
			continue
		default:
			return err
		}
		seq, ok := s.hold(held, m)
		if !ok {
			continue
		}
		sh := shards[shardFor(m.Subject(), len(shards))]
		select {
		case sh.queue <- delivery{msg: m, seq: seq}:
		case <-ctx.Done():
			return ctx.Err() // m stays held and is nacked by Run
		}
	}
}

// drain takes the messages the client library already received, so that
// Run nacks them instead of leaving them to AckWait.
func (s *Sink) drain(it jetstream.MessagesContext, held *heldSet) {
	it.Drain()
	for {
		m, err := it.Next(jetstream.NextMaxWait(drainWait))
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				it.Stop()
			}
			return
		}
		s.hold(held, m)
	}
}

// hold adds m to the held set. It reports false for a redelivery of a
// message the sink already has: the server redelivers what sat longer than
// AckWait in the client library's buffer while a full shard queue stopped
// the loop. Sending such a copy again would put old samples after newer
// ones, so it is settled by the first delivery (acks and InProgress go by
// stream sequence) instead.
func (s *Sink) hold(held *heldSet, m jetstream.Msg) (uint64, bool) {
	md, err := m.Metadata()
	if err != nil {
		s.log.Error("message without JetStream metadata, ignored", "subject", m.Subject(), "err", err)
		return 0, false
	}
	seq := md.Sequence.Stream
	switch held.add(seq, m, time.Now()) {
	case added:
		return seq, true
	case alreadyHeld:
		_ = m.InProgress()
	case alreadySettled:
		_ = m.Ack()
	}
	s.log.Debug("redelivery of a message already handled", "subject", m.Subject(), "seq", seq, "deliveries", md.NumDelivered)
	return 0, false
}

// shardFor hashes a subject (FNV-1a) to a shard: one target, one shard.
func shardFor(subject string, shards int) int {
	h := uint32(2166136261)
	for i := 0; i < len(subject); i++ {
		h ^= uint32(subject[i])
		h *= 16777619
	}
	return int(h % uint32(shards))
}

// runShard processes its queue in order until consume closes it. Once ctx
// has ended it only empties the queue: those messages stay held and Run
// nacks them.
func (s *Sink) runShard(ctx context.Context, sh *shard, held *heldSet) {
	for d := range sh.queue {
		if ctx.Err() != nil {
			continue
		}
		if s.handle(ctx, sh, d.msg) {
			held.settle(d.seq)
		}
	}
}

// handle sends one message and acks it. It reports false when ctx ended
// first, leaving the message to be nacked.
func (s *Sink) handle(ctx context.Context, sh *shard, m jetstream.Msg) bool {
	log := s.log.With("subject", m.Subject())
	if err := decode(m, &sh.batch); err != nil {
		return s.deadLetter(ctx, m, err, log)
	}
	err := sh.builder.build(&sh.batch, func(req request) error { return s.deliver(ctx, req, log) })
	switch {
	case err == nil:
		s.ack(m, log)
		return true
	case ctx.Err() != nil:
		return false
	default:
		// The payload decoded but does not encode again: bad input as well.
		return s.deadLetter(ctx, m, err, log)
	}
}

func (s *Sink) ack(m jetstream.Msg, log *slog.Logger) {
	if err := m.Ack(); err != nil {
		// NATS is away: the server redelivers the message after AckWait,
		// and the backend gets its samples twice.
		log.Warn("ack failed", "err", err)
		return
	}
	s.metrics.messagesAcked.Inc()
}

// decode checks the subject and headers of m and decodes its payload into b.
func decode(m jetstream.Msg, b *proto.Batch) error {
	if _, err := proto.ParseSubject(m.Subject()); err != nil {
		return err
	}
	meta, err := proto.ParseMeta(m.Headers())
	if err != nil {
		return err
	}
	enc, err := proto.EncodingByName(meta.Encoding)
	if err != nil {
		return err
	}
	if err := enc.Decode(m.Data(), b); err != nil {
		return fmt.Errorf("decode %s: %w", m.Subject(), err)
	}
	return nil
}

// deadLetter publishes m to the sink's dead-letter subject with the reason,
// and acks m once JetStream stored the letter. It retries the publish until
// it succeeds or ctx ends, and reports whether m was settled.
func (s *Sink) deadLetter(ctx context.Context, m jetstream.Msg, cause error, log *slog.Logger) bool {
	out := nats.NewMsg(proto.DeadSubject("sink"))
	for name, values := range m.Headers() {
		out.Header[name] = slices.Clone(values)
	}
	out.Header.Set(proto.HeaderError, headerValue(cause.Error()))
	out.Header.Set(proto.HeaderSubject, m.Subject())
	if id := out.Header.Get(proto.HeaderMsgID); id != "" {
		// A router gives every route the same message id: name the sink, or
		// the dead-letter stream would drop one sink's letter as a duplicate
		// of another's.
		out.Header.Set(proto.HeaderMsgID, id+"."+s.consumerName())
	}
	out.Data = m.Data()
	bo := newBackoff(s.cfg.QueueConfig)
	for {
		_, err := s.js.PublishMsg(ctx, out)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, nats.ErrMaxPayload) && out.Data != nil {
			// The headers we added pushed it over the limit: keep the error.
			out.Data = nil
			out.Header.Set(proto.HeaderError, headerValue(cause.Error()+"; payload omitted: over max_payload"))
			continue
		}
		wait := bo.wait(0)
		log.Error("dead-letter publish failed, retrying", "err", err, "wait", wait)
		if !sleep(ctx, wait) {
			return false
		}
	}
	s.metrics.messagesDead.Inc()
	if ok, suppressed := s.deadLog.allow(time.Now()); ok {
		log.Warn("message dead-lettered", "err", cause, "dead_subject", out.Subject, "suppressed", suppressed)
	}
	s.ack(m, log)
	return true
}

// headerValue makes an error text safe for a NATS header: one line, bounded.
func headerValue(s string) string {
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	if len(s) > maxErrorHeader {
		s = s[:maxErrorHeader]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	return s
}
