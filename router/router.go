package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/proto"
)

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("router closed")

// Durable names the router's durable consumer on WEIR_ENRICHED, so that a
// restarted router resumes where it stopped.
const Durable = "router"

// Deps are what a router is given by the process that runs it.
type Deps struct {
	Log *slog.Logger          // nil discards
	Reg prometheus.Registerer // nil registers nothing
	JS  jetstream.JetStream
	// Streams are the limits of every route stream, which a route's own
	// max_age and max_bytes override.
	Streams proto.StreamsConfig
	// MaxPayload is the server's max_payload (nc.MaxPayload()); 0 uses
	// NATS' default of 1 MiB.
	MaxPayload int
	// Member names this replica among the router's replicas; the host
	// name and process id by default.
	Member string
}

// Router applies the routes to WEIR_ENRICHED. See the package
// documentation for what it guarantees.
type Router struct {
	cfg        Config
	log        *slog.Logger
	js         jetstream.JetStream
	streams    proto.StreamsConfig
	maxPayload int
	member     string
	routes     []*route
	// keepsEverything is set when no route matches, filters or relabels:
	// messages then go to every route as they came, without decoding.
	keepsEverything bool
	metrics         *metrics

	// One log line per interval for each kind of repeating trouble.
	publishLog, deadLog, exprLog logThrottle

	mu      sync.Mutex
	running bool
	closed  bool
	stop    context.CancelFunc // cancels the running Run
}

// Timings that are not worth a configuration key.
const (
	logEvery   = 10 * time.Second
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
	// pullBatch bounds the messages the client library buffers for one
	// partition: their AckWait runs while the router works on another.
	pullBatch = 16
	// defaultMaxPayload is NATS' default max_payload.
	defaultMaxPayload = 1 << 20
	// minPayload is the least room a message must leave for series after
	// its headers.
	minPayload = 16 << 10
)

// New checks cfg and d and compiles the routes. It does no I/O and starts
// nothing; Run does.
func New(cfg Config, d Deps) (*Router, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(cfg.Routes) == 0 {
		errs = append(errs, errors.New("routes: empty; a router needs at least one route"))
	}
	if err := d.Streams.Validate(); err != nil {
		errs = append(errs, err)
	}
	if d.JS == nil {
		errs = append(errs, errors.New("router: Deps.JS is nil"))
	}
	maxPayload := d.MaxPayload
	if maxPayload <= 0 {
		maxPayload = defaultMaxPayload
	}
	if maxPayload < 2*minPayload {
		errs = append(errs, fmt.Errorf("router: server max_payload %d is too small; need at least %d", maxPayload, 2*minPayload))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	routes := make([]*route, len(cfg.Routes))
	for i, rc := range cfg.Routes {
		r, err := compileRoute(rc)
		if err != nil {
			return nil, fmt.Errorf("routes[%s]: %w", rc.Name, err)
		}
		routes[i] = r
	}
	m, err := newMetrics(d.Reg, routes)
	if err != nil {
		return nil, fmt.Errorf("router: register metrics: %w", err)
	}
	keepsEverything := true
	for _, r := range routes {
		keepsEverything = keepsEverything && r.keepsEverything()
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Router{
		cfg:             cfg,
		log:             log.With("stage", "router"),
		js:              d.JS,
		streams:         d.Streams,
		maxPayload:      maxPayload,
		member:          d.Member,
		routes:          routes,
		keepsEverything: keepsEverything,
		metrics:         m,
		publishLog:      logThrottle{every: logEvery},
		deadLog:         logThrottle{every: logEvery},
		exprLog:         logThrottle{every: logEvery},
	}, nil
}

// RouteStreams returns the stream of every route, with the route's own
// retention where it sets one.
func RouteStreams(streams proto.StreamsConfig, routes []Route) []jetstream.StreamConfig {
	out := make([]jetstream.StreamConfig, len(routes))
	for i, r := range routes {
		sc := streams.RouteStream(r.Name)
		if r.MaxAge > 0 {
			sc.MaxAge = r.MaxAge
			// The duplicate window may not exceed the retention.
			sc.Duplicates = min(sc.Duplicates, r.MaxAge)
		}
		if r.MaxBytes > 0 {
			sc.MaxBytes = int64(r.MaxBytes)
		}
		out[i] = sc
	}
	return out
}

// Run creates or updates the route streams and routes this replica's
// share of WEIR_ENRICHED until ctx ends or Close is called. It then
// finishes the messages it holds (for at most publish_timeout; the rest it
// nacks), waits for everything it started and returns nil. Failures to
// reach NATS are logged and retried, not returned.
func (r *Router) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return ErrClosed
	case r.running:
		r.mu.Unlock()
		return errors.New("router: Run is already running")
	}
	r.running, r.stop = true, cancel
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running, r.stop = false, nil
		r.mu.Unlock()
	}()

	names := make([]string, len(r.routes))
	for i, rt := range r.routes {
		names[i] = rt.name
	}
	r.log.Info("router starting", "routes", names)
	if !r.retry(ctx, "create route streams", r.ensureStreams) {
		return nil
	}
	r.consume(ctx)
	r.log.Info("router stopped")
	return nil
}

// Close stops a running Run. It is safe to call more than once, and
// before, during or after Run.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if r.stop != nil {
		r.stop()
	}
	return nil
}

// ensureStreams creates or updates every route's stream, keeping the
// sources and mirror an operator added. Every replica does it at start;
// the configurations are the same.
func (r *Router) ensureStreams(ctx context.Context) error {
	for _, sc := range RouteStreams(r.streams, r.cfg.Routes) {
		if err := proto.EnsureStream(ctx, r.js, sc); err != nil {
			return err
		}
	}
	return nil
}

// consume runs the work function on this replica's share of the
// partitions of WEIR_ENRICHED until ctx ends; the replicas of the router
// split the partitions among themselves (internal/partition), and each
// partition is read by one of them at a time.
func (r *Router) consume(ctx context.Context) {
	cfg := partition.Config{
		Stream:     proto.StreamEnriched,
		Stage:      proto.StageEnriched,
		Durable:    Durable,
		Partitions: r.streams.Partitions,
		Member:     r.member,
		// Durable and filter are set per partition by partition.Run.
		Consumer: proto.ConsumerConfig("", "", r.cfg.AckWait, r.cfg.MaxAckPending),
		Log:      r.log,
	}
	r.retry(ctx, "consume partitions", func(ctx context.Context) error {
		return partition.Run(ctx, r.js, cfg, r.work)
	})
}

// retry calls f until it succeeds or ctx ends, with capped exponential
// backoff, and reports whether it succeeded.
func (r *Router) retry(ctx context.Context, what string, f func(context.Context) error) bool {
	wait := minBackoff
	for {
		err := f(ctx)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			return true
		}
		r.log.Error("failed, retrying", "what", what, "err", err, "wait", wait)
		if !sleep(ctx, wait) {
			return false
		}
		wait = min(2*wait, maxBackoff)
	}
}

// work processes one partition's consumer, one message at a time so that
// every target's scrapes reach the route streams in order, until ctx ends.
// It then stops pulling and finishes the messages it already received,
// for at most publish_timeout, so that the replica taking the partition
// over starts at once; what it cannot finish in time it nacks, in order.
// It returns an error when the subscription fails.
func (r *Router) work(ctx context.Context, partition int, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(min(pullBatch, r.cfg.MaxAckPending)))
	if err != nil {
		return fmt.Errorf("partition %d: consume: %w", partition, err)
	}
	defer it.Stop()
	// finish outlives ctx by publish_timeout, for the messages held.
	finish, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopDrain := context.AfterFunc(ctx, func() {
		it.Drain()
		if sleep(finish, r.cfg.PublishTimeout) {
			// Out of time: nack what is in hand, and stop waiting for what
			// a drain that NATS cannot complete would still deliver.
			cancel()
			it.Stop()
		}
	})
	defer stopDrain()

	w := r.newWorker(partition)
	for {
		m, err := it.Next()
		switch {
		case errors.Is(err, jetstream.ErrMsgIteratorClosed):
			return nil
		case errors.Is(err, jetstream.ErrNoHeartbeat):
			// The library pulls again by itself; say so and keep going.
			w.log.Warn("no heartbeat from NATS, pulling again", "err", err)
			continue
		case err != nil:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("partition %d: next message: %w", partition, err)
		}
		if finish.Err() != nil || !w.handle(finish, m) {
			_ = m.Nak()
		}
	}
}

// sleep waits d or until ctx ends, and reports whether d passed.
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

// logThrottle lets one log line through per interval and counts the rest.
type logThrottle struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

func (t *logThrottle) allow(now time.Time) (ok bool, suppressed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.last.IsZero() && now.Sub(t.last) < t.every {
		t.suppressed++
		return false, 0
	}
	suppressed, t.suppressed, t.last = t.suppressed, 0, now
	return true, suppressed
}
