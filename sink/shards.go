package sink

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/weirmetrics/weir/proto"
)

// shard sends the messages of the subjects hashed to it, one at a time.
type shard struct {
	queue chan delivery
	// The message being sent: a BlockZstd payload in reader, with the
	// labels of its series, or another decoded in batch. Both are reused
	// by every message of the shard.
	reader  proto.BlockReader
	labels  *seriesLabels // nil for batch
	batch   proto.Batch
	cache   labelCache
	builder requestBuilder
	enc     *encoder
	busy    atomic.Int64 // time spent handling messages, ns
}

// decode checks the subject and headers of m and reads its payload, to
// be sent in protocol p.
func (sh *shard) decode(m jetstream.Msg, p protocol, now time.Time) error {
	sh.labels = nil
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
	if _, ok := enc.(proto.BlockZstd); ok {
		if err := sh.reader.Reset(m.Data()); err != nil {
			return fmt.Errorf("decode %s: %w", m.Subject(), err)
		}
		if sh.labels, err = sh.cache.labels(targetKey{subject: m.Subject(), chunk: meta.Chunk}, &sh.reader, p, now); err != nil {
			return fmt.Errorf("decode %s: %w", m.Subject(), err)
		}
		return nil
	}
	if err := enc.Decode(m.Data(), &sh.batch); err != nil {
		return fmt.Errorf("decode %s: %w", m.Subject(), err)
	}
	return nil
}

// uncached reports whether the labels of the decoded message were read
// whole because their target does not fit in the label cache.
func (sh *shard) uncached() bool { return sh.labels == &sh.cache.uncached }

// build calls send with each request of the decoded message.
func (sh *shard) build(send func(request) error) error {
	if sh.labels != nil {
		return sh.builder.buildBlock(&sh.reader, sh.labels, send)
	}
	return sh.builder.build(&sh.batch, send)
}

// samples counts the float samples of the decoded message, once built.
func (sh *shard) samples() int {
	if sh.labels != nil {
		return len(sh.builder.blockSamples)
	}
	return sh.batch.Samples()
}

// delivery is a message with its stream sequence, which the held set is
// keyed by, and the partition that received it.
type delivery struct {
	msg  jetstream.Msg
	seq  uint64
	part *share
}

// shardPool runs max_shards shards and hashes each subject to one of the
// first active of them. Changing active moves subjects between shards, so
// it waits until no message is in any shard: a target's next scrape can
// only start once its previous one is finished, wherever it goes.
type shardPool struct {
	mu       sync.RWMutex // dispatch holds it for reading, resharding for writing
	shards   []*shard
	active   int
	inflight atomic.Int64 // messages dispatched and not finished
	// blocked is the total time consumers waited on a full shard queue, ns.
	blocked atomic.Int64
	m       *metrics
}

func newShardPool(cfg Config, m *metrics) *shardPool {
	q := cfg.QueueConfig
	shards := make([]*shard, q.MaxShards)
	cached := new(atomic.Int64)
	cached.Store(int64(cfg.LabelCacheSize))
	// capacity is in samples, as in Prometheus; a message holds up to
	// max_samples_per_send of them per request, and max_ack_pending caps
	// what can be waiting anyway.
	queueLen := max(1, min(maxQueuePerShard, q.Capacity/q.MaxSamplesPerSend, cfg.MaxAckPending/q.MinShards))
	for i := range shards {
		shards[i] = &shard{
			queue: make(chan delivery, queueLen),
			builder: requestBuilder{
				limit: q.MaxSamplesPerSend, exemplars: cfg.SendExemplars, histograms: cfg.SendNativeHistograms,
			},
			cache: newLabelCache(cached),
			enc:   newEncoder(),
		}
	}
	m.shards.Set(float64(q.MinShards))
	m.shardsDesired.Set(float64(q.MinShards))
	return &shardPool{shards: shards, active: q.MinShards, m: m}
}

// dispatch queues d on the shard of its subject, waiting while the queue
// is full: the consumer stops pulling instead of the queue growing.
func (p *shardPool) dispatch(ctx context.Context, d delivery) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	sh := p.shards[shardFor(d.msg.Subject(), p.active)]
	d.part.inflight.Add(1)
	p.inflight.Add(1)
	select {
	case sh.queue <- d:
		return nil
	default:
	}
	start := time.Now()
	defer func() { p.blocked.Add(int64(time.Since(start))) }()
	select {
	case sh.queue <- d:
		return nil
	case <-ctx.Done():
		d.part.inflight.Done()
		p.inflight.Add(-1)
		return ctx.Err()
	}
}

// done is called by a shard for each message it finished or skipped.
func (p *shardPool) done() { p.inflight.Add(-1) }

// resizeWait bounds how long resharding holds dispatching up while it
// waits for the shards to be idle: a backend that fails meanwhile must not
// stop the consumers (and the handover of partitions) until it recovers.
const resizeWait = 5 * time.Second

// resize switches to n active shards once every shard is idle, and
// reports whether it did; it gives up after resizeWait.
func (p *shardPool) resize(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for deadline := time.Now().Add(resizeWait); p.inflight.Load() > 0; {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.active = n
	// Idle, the shards' caches can be changed from here. Most targets now
	// hash to another shard, which reads their labels again: their entries
	// where they were would hold the budget until a sweep, minutes later.
	// The shards out of use get no message to sweep their caches on.
	for i, sh := range p.shards[:n] {
		sh.cache.forgetMoved(i, n)
	}
	for _, sh := range p.shards[n:] {
		sh.cache.dropAll()
	}
	p.m.shards.Set(float64(n))
	return true
}

func (p *shardPool) activeShards() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.active
}

// busy is the total time the shards have spent handling messages.
func (p *shardPool) busy() time.Duration {
	var ns int64
	for _, sh := range p.shards {
		ns += sh.busy.Load()
	}
	return time.Duration(ns)
}

// close ends the shards; no dispatch may follow.
func (p *shardPool) close() {
	for _, sh := range p.shards {
		close(sh.queue)
	}
}

// Resharding, as Prometheus does it but simpler: aim for shards busy
// targetBusy of the time, and move only when the aim is off by more than
// reshardTolerance, so the count does not flap. Subjects are hashed to
// shards, so one shard can be full while the average says there is room:
// when the consumers waited on full shard queues for more than maxBlocked
// of the interval, the shards grow by that share, up to double.
const (
	targetBusy       = 0.7
	reshardTolerance = 0.3
	maxBlocked       = 0.2
)

// desiredShards is how many shards would be busy targetBusy of the time,
// given that active shards were busy for busy during interval and the
// consumers waited for blocked on full shard queues.
func desiredShards(active int, busy, blocked, interval time.Duration, minShards, maxShards int) int {
	utilization := busy.Seconds() / interval.Seconds() / float64(active)
	want := int(math.Ceil(float64(active) * utilization / targetBusy))
	if share := blockedShare(blocked, interval); share > maxBlocked {
		want = max(want, int(math.Ceil(float64(active)*(1+min(1, share)))))
	}
	return min(max(want, minShards), maxShards)
}

// blockedShare is the share of interval the consumers waited on full shard
// queues.
func blockedShare(blocked, interval time.Duration) float64 {
	return blocked.Seconds() / interval.Seconds()
}

// heldBackChecks is how many times per reshardEvery autoscale looks
// whether the shards hold the consumers back: growing then cannot wait,
// the start of a sink with a backlog least of all.
const heldBackChecks = 5

// autoscale reconsiders the shard count every reshardEvery until ctx ends,
// and sooner when the consumers wait on full shard queues. It does not
// grow while requests are being retried: more shards would only hit a
// backend in trouble harder.
func (s *Sink) autoscale(ctx context.Context, pool *shardPool) {
	q := s.cfg.QueueConfig
	if q.MinShards == q.MaxShards {
		return
	}
	t := time.NewTicker(s.reshardEvery / heldBackChecks)
	defer t.Stop()
	lastBusy, lastBlocked, last := pool.busy(), pool.blocked.Load(), time.Now()
	ticks := 0
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			busy, blocked := pool.busy(), pool.blocked.Load()
			heldBack := blockedShare(time.Duration(blocked-lastBlocked), now.Sub(last)) > maxBlocked
			if ticks++; ticks < heldBackChecks && !heldBack {
				continue
			}
			ticks = 0
			active := pool.activeShards()
			want := desiredShards(active, busy-lastBusy, time.Duration(blocked-lastBlocked), now.Sub(last), q.MinShards, q.MaxShards)
			lastBusy, lastBlocked, last = busy, blocked, now
			s.metrics.shardsDesired.Set(float64(want))
			retrying := now.Sub(time.Unix(0, s.lastRetry.Load())) < 2*s.reshardEvery
			switch {
			case want == active:
			case want > active && retrying:
			case math.Abs(float64(want-active)) <= reshardTolerance*float64(active):
			default:
				if pool.resize(want) {
					s.log.Info("resharded", "from", active, "to", want)
				} else {
					s.log.Debug("resharding put off: shards still busy", "from", active, "to", want)
				}
			}
		}
	}
}

// watchLag publishes how far the sink is behind its stream, every
// s.lagEvery until ctx ends.
func (s *Sink) watchLag(ctx context.Context) {
	t := time.NewTicker(s.lagEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.updateLag(ctx, now)
		}
	}
}

func (s *Sink) updateLag(ctx context.Context, now time.Time) {
	s.mu.Lock()
	parts := make([]*share, 0, len(s.parts))
	for p := range s.parts {
		parts = append(parts, p)
	}
	s.mu.Unlock()
	var pending uint64
	var oldest time.Time
	for _, p := range parts {
		ictx, cancel := context.WithTimeout(ctx, s.lagEvery)
		info, err := p.cons.Info(ictx)
		cancel()
		if err == nil {
			pending += info.NumPending + uint64(info.NumAckPending)
		}
		if o := p.held.oldest(); !o.IsZero() && (oldest.IsZero() || o.Before(oldest)) {
			oldest = o
		}
	}
	s.metrics.lagMessages.Set(float64(pending))
	if oldest.IsZero() {
		s.metrics.lagSeconds.Set(0)
	} else {
		s.metrics.lagSeconds.Set(max(0, now.Sub(oldest).Seconds()))
	}
}
