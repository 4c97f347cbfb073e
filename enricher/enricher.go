package enricher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"
	"k8s.io/client-go/metadata"

	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/proto"
)

// Durable names the partition consumers of WEIR_RAW: enricher-p00, ….
const Durable = "enricher"

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("enricher closed")

// Deps are what an enricher is given by the process that runs it.
type Deps struct {
	Log *slog.Logger          // nil discards
	Reg prometheus.Registerer // nil registers nothing
	JS  jetstream.JetStream
	// MaxPayload is the server's max_payload; an enriched scrape larger
	// than it, less room for headers, is split. 0 means 1 MiB.
	MaxPayload int
	// Partitions is how many partitions WEIR_RAW has (streams.partitions).
	Partitions int
	// Metadata gives the client of a cluster directly instead of building it
	// from the cluster's kubeconfig; a cluster named here needs no entry in
	// Config.Clusters. Tests pass fake clients.
	Metadata map[string]metadata.Interface
	// LocalCluster is the name of the cluster the enricher runs in (the
	// top-level cluster key), for Config.LocalInCluster.
	LocalCluster string
	// Ready is called once the metadata of every cluster synced, or
	// Config.SyncTimeout after Run started, whichever is first.
	Ready func()
	// Member names this replica among those sharing the partitions; the
	// host name and process id by default.
	Member string
	// Heartbeat is how often this replica renews its membership; 0 is
	// internal/partition's default.
	Heartbeat time.Duration
	// Now is the clock of the cardinality guard; nil is time.Now.
	Now func() time.Time
}

// Enricher reads WEIR_RAW and publishes every scrape to WEIR_ENRICHED with
// labels from the subject and the Kubernetes API. See the package
// documentation for what it guarantees.
type Enricher struct {
	cfg        Config
	log        *slog.Logger
	js         jetstream.JetStream
	partitions int
	member     string
	heartbeat  time.Duration
	maxChunk   int
	ready      func()
	metrics    *metrics
	guard      *guard
	nodeRules  []rule
	podRules   []rule
	relabel    []*relabel.Config
	clusters   map[string]*clusterMeta
	deadLog    throttle

	mu      sync.Mutex
	running bool
	closed  bool
	stop    context.CancelFunc
}

// Timings and sizes not worth a configuration key.
const (
	drainWait      = 2 * time.Second
	finishWait     = 5 * time.Second
	headerRoom     = 4 << 10 // headers of an enriched message, left out of max_payload
	maxErrorHeader = 1024
	minBackoff     = 50 * time.Millisecond
	maxBackoff     = 5 * time.Second
	pullBatch      = 16
)

// New checks cfg and d and builds an enricher with the informers of every
// cluster. It reads the kubeconfig files, so that a bad one fails at start;
// it contacts no API server and starts nothing: Run does.
func New(cfg Config, d Deps) (*Enricher, error) {
	var errs []error
	if err := cfg.Validate(); err != nil {
		errs = append(errs, err)
	}
	if d.JS == nil {
		errs = append(errs, errors.New("enricher: no JetStream"))
	}
	if d.Partitions < 1 {
		errs = append(errs, fmt.Errorf("enricher: partitions must be at least 1, got %d", d.Partitions))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	maxPayload := d.MaxPayload
	if maxPayload <= 0 {
		maxPayload = 1 << 20
	}
	e := &Enricher{
		cfg:        cfg,
		log:        log.With("stage", "enricher"),
		js:         d.JS,
		partitions: d.Partitions,
		member:     d.Member,
		heartbeat:  d.Heartbeat,
		maxChunk:   max(maxPayload-headerRoom, maxPayload/2),
		ready:      d.Ready,
		guard:      newGuard(cfg.Cardinality, now),
		relabel:    cfg.RelabelConfigs,
		clusters:   map[string]*clusterMeta{},
		deadLog:    throttle{every: 10 * time.Second},
	}
	if e.ready == nil {
		e.ready = func() {}
	}
	e.metrics = newMetrics(d.Reg, func() float64 {
		if e.guard == nil {
			return 0
		}
		return float64(e.guard.size())
	})
	var nodeKeys, podKeys map[string]bool
	e.nodeRules, nodeKeys = compileRules(cfg.NodeLabels)
	e.podRules, podKeys = compileRules(cfg.PodLabels)

	clients := maps.Clone(d.Metadata)
	if clients == nil {
		clients = map[string]metadata.Interface{}
	}
	clusters := cfg.Clusters
	if local := d.LocalCluster; cfg.LocalInCluster && local != "" && clients[local] == nil &&
		!slices.ContainsFunc(clusters, func(c ClusterConfig) bool { return c.Name == local }) {
		if os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
			clusters = append(slices.Clone(clusters), ClusterConfig{Name: local, InCluster: true, local: true})
		}
	}
	for _, cl := range clusters {
		if clients[cl.Name] != nil {
			continue
		}
		rc, err := restConfig(cl)
		if err != nil && cl.local {
			// In a pod without a service account token: the local cluster
			// gets the cluster and node labels only.
			e.log.Warn("local cluster not watched: no in-cluster credentials", "cluster", cl.Name, "err", err)
			continue
		}
		if err != nil {
			return nil, err
		}
		mc, err := metadata.NewForConfig(rc)
		if err != nil {
			return nil, fmt.Errorf("cluster %s: metadata client: %w", cl.Name, err)
		}
		clients[cl.Name] = mc
	}
	for _, name := range slices.Sorted(maps.Keys(clients)) {
		cm, err := newClusterMeta(name, clients[name], cfg.Resync, nodeKeys, podKeys, e.metrics)
		if err != nil {
			return nil, err
		}
		e.metrics.cacheSynced.WithLabelValues(name).Set(0)
		e.clusters[name] = cm
	}
	return e, nil
}

// Run watches the clusters' metadata and enriches what it reads until ctx
// ends or Close is called, then nacks what it had not finished, stops the
// informers and returns nil. It does not wait for the metadata: a series
// whose pod is not known yet passes with the cluster and node labels.
func (e *Enricher) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		return ErrClosed
	case e.running:
		e.mu.Unlock()
		return errors.New("enricher: Run is already running")
	}
	e.running, e.stop = true, cancel
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.running, e.stop = false, nil
		e.mu.Unlock()
	}()

	e.log.Info("enricher starting", "clusters", slices.Sorted(maps.Keys(e.clusters)), "partitions", e.partitions)
	// The informers outlive the workers, so that a message in flight at
	// shutdown is still joined against a live cache.
	metaCtx, stopMeta := context.WithCancel(context.Background())
	defer stopMeta()
	var metaWG sync.WaitGroup
	for _, c := range e.clusters {
		synced := e.metrics.cacheSynced.WithLabelValues(c.name)
		metaWG.Go(func() {
			c.run(metaCtx, e.log, func(ok bool) {
				if ok {
					synced.Set(1)
				}
			})
		})
	}
	metaWG.Go(func() { e.waitReady(ctx) })

	e.consume(ctx)
	stopMeta()
	metaWG.Wait()
	e.log.Info("enricher stopped")
	return nil
}

// waitReady calls ready once every cluster synced or SyncTimeout passed.
func (e *Enricher) waitReady(ctx context.Context) {
	defer e.ready()
	deadline := time.NewTimer(e.cfg.SyncTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var waiting []string
		for name, c := range e.clusters {
			if !c.synced.Load() {
				waiting = append(waiting, name)
			}
		}
		if len(waiting) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			sort.Strings(waiting)
			e.log.Warn("kubernetes metadata not synced in time, serving anyway", "clusters", waiting, "sync_timeout", e.cfg.SyncTimeout)
			return
		case <-tick.C:
		}
	}
}

// Close stops a running Run. It is safe to call more than once, and before,
// during or after Run.
func (e *Enricher) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	if e.stop != nil {
		e.stop()
	}
	return nil
}

// consume shares the partitions of WEIR_RAW with the other replicas
// (internal/partition) and works each of ours until ctx ends. When NATS
// fails it starts again after a backoff.
func (e *Enricher) consume(ctx context.Context) {
	cfg := partition.Config{
		Stream:     proto.StreamRaw,
		Stage:      proto.StageRaw,
		Durable:    Durable,
		Partitions: e.partitions,
		Member:     e.member,
		Heartbeat:  e.heartbeat,
		Consumer:   proto.ConsumerConfig("", "", e.cfg.AckWait, e.cfg.MaxAckPending),
		Log:        e.log,
	}
	for wait := minBackoff; ; wait = min(2*wait, maxBackoff) {
		err := partition.Run(ctx, e.js, cfg, e.Work)
		if ctx.Err() != nil {
			return
		}
		e.log.Error("consuming failed, retrying", "err", err, "wait", wait)
		if !sleep(ctx, wait) {
			return
		}
	}
}

// worker is the state one partition reuses from message to message.
type worker struct {
	batch proto.Batch
	join  *joiner
	lb    *labels.Builder
}

// Work enriches the messages of one partition's consumer, one at a time
// in stream order, until ctx ends; it then nacks the message it was on and
// those the client library had buffered, in stream order, so that the next
// reader of the partition gets them first and in order. It returns an
// error only when the subscription failed.
func (e *Enricher) Work(ctx context.Context, partition int, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(min(pullBatch, e.cfg.MaxAckPending)))
	if err != nil {
		return fmt.Errorf("partition %d: consume: %w", partition, err)
	}
	w := &worker{join: newJoiner(e.nodeRules, e.podRules), lb: labels.NewBuilder(labels.EmptyLabels())}
	// Messages in hand are finished for up to finishWait after ctx ends, so
	// that the replica taking the partition over starts at once instead of
	// after their ack wait.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	defer context.AfterFunc(ctx, func() { time.AfterFunc(finishWait, hcancel) })()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		switch {
		case err == nil:
		case ctx.Err() != nil:
			e.finishBuffered(hctx, w, it)
			return nil
		case errors.Is(err, jetstream.ErrNoHeartbeat):
			e.log.Warn("no heartbeat from NATS, pulling again", "partition", partition, "err", err)
			continue
		default:
			it.Stop()
			return fmt.Errorf("partition %d: next message: %w", partition, err)
		}
		if !e.handle(hctx, w, m) {
			_ = m.Nak()
			e.nakBuffered(it)
			return nil
		}
	}
}

// nakBuffered nacks, in stream order, the messages the client library
// received and Work did not take yet.
func (e *Enricher) nakBuffered(it jetstream.MessagesContext) {
	it.Drain()
	for {
		m, err := it.Next(jetstream.NextMaxWait(drainWait))
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				it.Stop()
			}
			return
		}
		_ = m.Nak()
	}
}

// finishBuffered stops pulling and enriches the messages the client
// library already received while ctx lasts; what it cannot finish it
// nacks, in stream order.
func (e *Enricher) finishBuffered(ctx context.Context, w *worker, it jetstream.MessagesContext) {
	it.Drain()
	for {
		m, err := it.Next(jetstream.NextMaxWait(drainWait))
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				it.Stop()
			}
			return
		}
		if ctx.Err() != nil || !e.handle(ctx, w, m) {
			_ = m.Nak()
		}
	}
}

// handle enriches one message, publishes it and acks it. It reports false
// when ctx ended before the message was settled.
func (e *Enricher) handle(ctx context.Context, w *worker, m jetstream.Msg) bool {
	subj, err := decode(m, &w.batch)
	if err != nil {
		return e.deadLetter(ctx, m, err)
	}
	cm := e.clusters[subj.Cluster]
	w.join.begin(cm, subj.Cluster, subj.Node)
	st := w.join.enrich(cm, &w.batch)
	e.metrics.podUnknown.Add(float64(st.unknownPods))
	e.filter(w, subj)
	if len(w.batch.Series) == 0 {
		e.metrics.messages.WithLabelValues(resultEmpty).Inc()
		e.ack(m)
		return true
	}
	chunks, err := proto.EncodeChunks(proto.DefaultEncoding, w.batch.Series, e.maxChunk)
	if err != nil {
		return e.deadLetter(ctx, m, fmt.Errorf("encode enriched %s: %w", m.Subject(), err))
	}
	subj.Stage, subj.Partitioned, subj.Partition = proto.StageEnriched, false, 0
	out := subj.String()
	for i, c := range chunks {
		msg := nats.NewMsg(out)
		for name, values := range m.Headers() {
			msg.Header[name] = slices.Clone(values)
		}
		msg.Header.Set(proto.HeaderEncoding, proto.DefaultEncoding.Name())
		msg.Header.Set(proto.HeaderSamples, fmt.Sprint(c.Samples))
		if i > 0 {
			// The enriched scrape outgrew one message: its extra parts get
			// ids of their own, as stable as the first one's.
			msg.Header.Set(proto.HeaderMsgID, fmt.Sprintf("%s.part%d", msg.Header.Get(proto.HeaderMsgID), i))
		}
		msg.Data = c.Payload
		if err := e.publish(ctx, msg); err != nil {
			if ctx.Err() != nil {
				return false
			}
			return e.deadLetter(ctx, m, err)
		}
	}
	e.metrics.series.Add(float64(len(w.batch.Series)))
	e.metrics.messages.WithLabelValues(resultEnriched).Inc()
	e.ack(m)
	return true
}

// filter applies the relabel rules and the cardinality guard, removing the
// series they drop from the batch.
func (e *Enricher) filter(w *worker, subj proto.Subject) {
	if len(e.relabel) == 0 && e.guard == nil {
		return
	}
	var adm admission
	if e.guard != nil {
		subj.Partitioned, subj.Partition = false, 0
		adm = e.guard.begin(subj.String())
		defer adm.end()
	}
	kept, relabelDropped, guardDropped := w.batch.Series[:0], 0, 0
	for _, s := range w.batch.Series {
		if len(e.relabel) > 0 {
			ls, keep := w.relabel(e.relabel, s.Labels)
			if !keep {
				relabelDropped++
				continue
			}
			s.Labels = ls
		}
		if e.guard != nil && !adm.admit(s.Labels) {
			guardDropped++
			continue
		}
		kept = append(kept, s)
	}
	clear(w.batch.Series[len(kept):])
	w.batch.Series = kept
	if relabelDropped > 0 {
		e.metrics.seriesDropped.WithLabelValues(reasonRelabel).Add(float64(relabelDropped))
	}
	if guardDropped > 0 {
		e.metrics.seriesDropped.WithLabelValues(reasonCardinality).Add(float64(guardDropped))
		if ok, suppressed := e.deadLog.allow(time.Now()); ok {
			e.log.Warn("new series over the cardinality limit dropped", "target", subj.String(), "dropped", guardDropped,
				"limit_per_minute", e.cfg.Cardinality.NewSeriesPerMinute, "suppressed", suppressed)
		}
	}
}

// relabel runs the rules on one series; the result lives in the arena.
func (w *worker) relabel(rules []*relabel.Config, ls []prompb.Label) ([]prompb.Label, bool) {
	w.lb.Reset(labels.EmptyLabels())
	for _, l := range ls {
		w.lb.Set(l.Name, l.Value)
	}
	if !relabel.ProcessBuilder(w.lb, rules...) {
		return nil, false
	}
	res := w.lb.Labels()
	if res.IsEmpty() {
		return nil, false
	}
	j := w.join
	start := len(j.arena)
	res.Range(func(l labels.Label) { j.arena = append(j.arena, prompb.Label{Name: l.Name, Value: l.Value}) })
	return j.arena[start:len(j.arena):len(j.arena)], true
}

// decode checks the subject and headers of m and decodes its payload.
func decode(m jetstream.Msg, b *proto.Batch) (proto.Subject, error) {
	subj, err := proto.ParseSubject(m.Subject())
	if err != nil {
		return subj, err
	}
	if subj.Stage != proto.StageRaw {
		return subj, fmt.Errorf("%w: %q: not a raw subject", proto.ErrBadSubject, m.Subject())
	}
	meta, err := proto.ParseMeta(m.Headers())
	if err != nil {
		return subj, err
	}
	enc, err := proto.EncodingByName(meta.Encoding)
	if err != nil {
		return subj, err
	}
	if err := enc.Decode(m.Data(), b); err != nil {
		return subj, fmt.Errorf("decode %s: %w", m.Subject(), err)
	}
	return subj, nil
}
