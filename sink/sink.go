package sink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

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
	// Consume, when set, runs work over the partitions of the stream this
	// replica owns, each through its own durable consumer made from
	// template, until ctx ends (internal/partition.Run does). Several
	// replicas of one sink then share a route in per-target order. Nil
	// reads the whole stream through one durable consumer, "sink-<name>".
	Consume func(ctx context.Context, template jetstream.ConsumerConfig, work WorkFunc) error
}

// WorkFunc processes one partition's consumer until ctx ends; Sink.Work is one.
type WorkFunc func(ctx context.Context, partition int, cons jetstream.Consumer) error

// Sink remote-writes one stream to one backend. See the package
// documentation for what it guarantees.
type Sink struct {
	cfg     Config
	log     *slog.Logger
	js      jetstream.JetStream
	stream  string
	filter  string
	drive   func(ctx context.Context, template jetstream.ConsumerConfig, work WorkFunc) error
	metrics *metrics
	client  *client
	proto   atomic.Int32 // protocol: 2.0 until a backend answers 415
	// lastRetry is when a request last failed in a way worth retrying,
	// Unix ns: the shards do not grow while the backend is in trouble.
	lastRetry atomic.Int64
	cacheFull atomic.Bool // the label cache filled up once, which was logged

	// reshardEvery is how often the shard count is reconsidered, and
	// lagEvery how often the lag metrics are updated.
	reshardEvery, lagEvery time.Duration

	// One log line per interval for each kind of repeating trouble.
	retryLog, dropLog, deadLog logThrottle

	mu      sync.Mutex
	running bool
	closed  bool
	stop    context.CancelFunc // cancels the running Run
	pool    *shardPool         // of the running Run
	parts   map[*share]struct{}
}

// Timings that are not worth a configuration key.
const (
	logEvery = 10 * time.Second
	// drainWait bounds how long a stopping sink waits for the messages the
	// client library already buffered, which it nacks.
	drainWait = 2 * time.Second
	// maxQueuePerShard bounds the messages waiting for one shard.
	maxQueuePerShard = 16
	// reshardEvery is Prometheus' own interval for the same decision.
	defaultReshardEvery = 10 * time.Second
	// lagEvery is how often the consumers are asked how far behind they are.
	defaultLagEvery = 5 * time.Second
)

// New checks cfg and d and builds a sink. It does no network I/O and
// starts nothing; Run does. TLS files named in the configuration are read
// to check them.
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
	m, err := newMetrics(d.Reg, cfg.Name, cfg.RouteName())
	if err != nil {
		return nil, err
	}
	c, err := newClient(cfg, m)
	if err != nil {
		return nil, err
	}
	s := &Sink{
		cfg:          cfg,
		log:          log.With("stage", "sink", "sink", cfg.Name, "route", cfg.RouteName()),
		js:           d.JS,
		stream:       d.Stream,
		filter:       d.Filter,
		drive:        d.Consume,
		metrics:      m,
		client:       c,
		reshardEvery: defaultReshardEvery,
		lagEvery:     defaultLagEvery,
		retryLog:     logThrottle{every: logEvery},
		dropLog:      logThrottle{every: logEvery},
		deadLog:      logThrottle{every: logEvery},
		parts:        map[*share]struct{}{},
	}
	if cfg.ProtobufMessage == MessageV2 {
		s.proto.Store(int32(protoV2))
	}
	return s, nil
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
	pool := newShardPool(s.cfg, s.metrics)
	s.running, s.stop, s.pool = true, cancel, pool
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running, s.stop, s.pool = false, nil, nil
		s.mu.Unlock()
	}()

	s.log.Info("sink starting", "url", s.cfg.URL.Redacted(), "stream", s.stream, "filter", s.filter,
		"consumer", s.consumerName(), "protocol", s.protocol().String(),
		"min_shards", s.cfg.QueueConfig.MinShards, "max_shards", s.cfg.QueueConfig.MaxShards)
	var wg sync.WaitGroup
	for _, sh := range pool.shards {
		wg.Go(func() { s.runShard(pool, sh) })
	}
	var bg sync.WaitGroup
	bg.Go(func() { s.autoscale(ctx, pool) })
	bg.Go(func() { s.watchLag(ctx) })

	s.consume(ctx) // returns once ctx ended and every partition's work returned
	bg.Wait()
	pool.close()
	wg.Wait()
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

// consume drives Work until ctx ends: through Deps.Consume, or with the
// sink's one durable consumer. It starts again after a backoff when that
// fails (NATS away, consumer deleted).
func (s *Sink) consume(ctx context.Context) {
	bo := newBackoff(s.cfg.QueueConfig)
	for {
		var err error
		if s.drive != nil {
			err = s.drive(ctx, s.ConsumerConfig(), s.Work)
		} else {
			cfg := s.ConsumerConfig()
			var cons jetstream.Consumer
			cons, err = s.js.CreateOrUpdateConsumer(ctx, s.stream, cfg)
			if err != nil {
				err = fmt.Errorf("create consumer %s on stream %s: %w", cfg.Durable, s.stream, err)
			} else {
				bo = newBackoff(s.cfg.QueueConfig)
				err = s.Work(ctx, 0, cons)
			}
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

// ConsumerConfig is the template of the sink's durable consumers, for a
// driver (internal/partition) that creates one per partition.
func (s *Sink) ConsumerConfig() jetstream.ConsumerConfig {
	return proto.ConsumerConfig(s.consumerName(), s.filter, s.cfg.AckWait, s.cfg.MaxAckPending)
}

// share is one consumer's share of the sink: the messages it holds
// and how many of them are in the shards.
type share struct {
	ctx      context.Context
	id       int
	cons     jetstream.Consumer
	held     *heldSet
	inflight sync.WaitGroup
}

// Work sends what cons delivers until ctx ends or the subscription fails,
// through the shards of the running Run. Before it returns, every message
// it received is acked (sent) or nacked, in stream order. It returns nil
// once ctx ended; it is the work function of internal/partition.
func (s *Sink) Work(ctx context.Context, id int, cons jetstream.Consumer) error {
	s.mu.Lock()
	pool := s.pool
	s.mu.Unlock()
	if pool == nil {
		return errors.New("sink: Work called outside Run")
	}
	// The shards send under sendCtx: once ctx ends they get finishGrace to
	// finish what they already have, so that a partition handed over to
	// another replica, or a sink shutting down, rarely leaves anything to
	// nack (the next owner of a nacked message waits its AckWait out).
	sendCtx, stopSending := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSending()
	part := &share{ctx: sendCtx, id: id, cons: cons, held: newHeldSet(s.metrics.pending, 2*s.cfg.MaxAckPending)}
	s.mu.Lock()
	s.parts[part] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.parts, part)
		s.mu.Unlock()
	}()

	kctx, stopKeepAlive := context.WithCancel(sendCtx)
	var keep sync.WaitGroup
	keep.Go(func() { s.keepAlive(kctx, part.held) })
	defer func() {
		stopKeepAlive()
		keep.Wait()
		s.nakHeld(part)
	}()

	err := s.pull(ctx, cons, pool, part)
	finished := make(chan struct{})
	go func() {
		part.inflight.Wait()
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(s.finishGrace()):
		// What is still being sent is given up and nacked.
		stopSending()
		<-finished
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// finishGrace is how long a stopping Work lets the shards finish: well
// within AckWait, since the keepalive stops with it.
func (s *Sink) finishGrace() time.Duration { return min(s.cfg.AckWait/2, maxFinishGrace) }

const maxFinishGrace = 5 * time.Second

// fetchWait bounds one pull request: how long a stopping Work may wait for
// the batch it asked for.
const fetchWait = 500 * time.Millisecond

// pull fetches batches and dispatches their messages until ctx ends or the
// consumer is gone. It reads every batch to its end, even once ctx ended:
// a message the server delivered and nobody saw would only come back after
// AckWait, behind newer messages the next owner of the partition already
// sent. Fetched that way, each is held, then sent or nacked.
func (s *Sink) pull(ctx context.Context, cons jetstream.Consumer, pool *shardPool, part *share) error {
	// A small batch: what is fetched and not yet dispatched waits in a
	// full shard queue, kept alive by the keepalive.
	batch := max(1, min(s.cfg.MaxAckPending, 2*s.cfg.QueueConfig.MaxShards))
	bo := newBackoff(s.cfg.QueueConfig)
	for ctx.Err() == nil {
		msgs, err := cons.Fetch(batch, jetstream.FetchMaxWait(fetchWait))
		if err == nil {
			for m := range msgs.Messages() {
				seq, ok := s.hold(part.held, m)
				if !ok || ctx.Err() != nil {
					continue // held: nacked when Work returns
				}
				_ = pool.dispatch(ctx, delivery{msg: m, seq: seq, part: part})
			}
			err = msgs.Error()
		}
		switch {
		case err == nil, errors.Is(err, nats.ErrTimeout), errors.Is(err, jetstream.ErrNoHeartbeat):
			bo = newBackoff(s.cfg.QueueConfig)
		case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
			return fmt.Errorf("fetch from %s: %w", s.consumerName(), err)
		case ctx.Err() == nil:
			wait := bo.wait(0)
			if ok, suppressed := s.retryLog.allow(time.Now()); ok {
				s.log.Warn("fetch failed, retrying", "err", err, "wait", wait, "suppressed", suppressed)
			}
			sleep(ctx, wait)
		}
	}
	return nil
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
	switch held.add(seq, m, time.Now(), md.Timestamp) {
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

// runShard processes its queue in order until the pool closes it. A
// message whose partition has stopped is skipped: it stays held and its
// partition nacks it.
func (s *Sink) runShard(pool *shardPool, sh *shard) {
	for d := range sh.queue {
		if d.part.ctx.Err() == nil {
			start := time.Now()
			if s.handle(d.part.ctx, sh, d.msg, start) {
				d.part.held.settle(d.seq)
			}
			sh.busy.Add(int64(time.Since(start)))
		}
		d.part.inflight.Done()
		pool.done()
	}
}

// handle sends one message and acks it, or dead-letters it when it cannot
// be decoded or the backend rejected some of its samples for good. It
// reports false when ctx ended first, leaving the message to be nacked.
func (s *Sink) handle(ctx context.Context, sh *shard, m jetstream.Msg, now time.Time) bool {
	log := s.log.With("subject", m.Subject())
	if err := sh.decode(m, s.protocol(), now); err != nil {
		return s.deadLetter(ctx, m, err, "decode", log)
	}
	s.metrics.labelCacheBytes.Set(float64(int64(s.cfg.LabelCacheSize) - sh.cache.budget.Load()))
	if sh.uncached() {
		s.metrics.labelCacheUncached.Inc()
		if s.cfg.LabelCacheSize > 0 && s.cacheFull.CompareAndSwap(false, true) {
			s.log.Warn("label cache full: the labels of targets beyond it are read from every payload, at more CPU; raise label_cache_size (logged once, weir_sink_label_cache_uncached_payloads_total counts them)",
				"label_cache_size", int64(s.cfg.LabelCacheSize))
		}
	}
	var rejected error
	err := sh.build(func(req request) error {
		err := s.deliver(ctx, sh.enc, req, log)
		var rej *rejectedError
		if errors.As(err, &rej) {
			// Send the rest: the backend may take the other series.
			rejected = cmp.Or(rejected, err)
			return nil
		}
		return err
	})
	switch {
	case err == nil && rejected == nil:
		s.ack(m, log)
		return true
	case err == nil:
		return s.deadLetter(ctx, m, rejected, "rejected", log)
	case ctx.Err() != nil:
		return false
	default:
		// The payload decoded but does not encode again: bad input as well.
		s.metrics.samplesDropped.WithLabelValues("encode").Add(float64(sh.samples()))
		return s.deadLetter(ctx, m, err, "decode", log)
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

// deadLetter publishes m to the sink's dead-letter subject with the reason,
// and acks m once JetStream stored the letter. It retries the publish until
// it succeeds or ctx ends, and reports whether m was settled.
func (s *Sink) deadLetter(ctx context.Context, m jetstream.Msg, cause error, reason string, log *slog.Logger) bool {
	out := proto.DeadLetter("sink", s.consumerName(), m, cause)
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
			proto.OmitPayload(out)
			continue
		}
		wait := bo.wait(0)
		log.Error("dead-letter publish failed, retrying", "err", err, "wait", wait)
		if !sleep(ctx, wait) {
			return false
		}
	}
	s.metrics.messagesDead.WithLabelValues(reason).Inc()
	if ok, suppressed := s.deadLog.allow(time.Now()); ok {
		log.Warn("message dead-lettered", "err", cause, "dead_subject", out.Subject, "suppressed", suppressed)
	}
	s.ack(m, log)
	return true
}
