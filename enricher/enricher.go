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
	steady     *steadyCache // nil: every message takes the slow path
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
	drainWait  = 2 * time.Second
	finishWait = 5 * time.Second
	headerRoom = 4 << 10 // headers of an enriched message, left out of max_payload
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
	pullBatch  = 16
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
		steady:     newSteadyCache(steadyCacheBytes),
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
	batch  proto.Batch
	join   *joiner
	lb     *labels.Builder
	reader proto.BlockReader
	// What filter kept: the index in the input of every series left, and
	// the guard's hash of each.
	kept    []int32
	hashes  []uint64
	mark    guardMark
	payload []byte // scratch of assemble
	churn   churnScratch
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
	in, err := readInput(m.Subject(), m.Headers(), m.Data())
	if err != nil {
		return e.deadLetter(ctx, m, err)
	}
	chunks, series, err := e.enrich(w, in)
	if err != nil {
		return e.deadLetter(ctx, m, err)
	}
	if series == 0 {
		e.metrics.messages.WithLabelValues(resultEmpty).Inc()
		e.ack(m)
		return true
	}
	for i, c := range chunks {
		msg := nats.NewMsg(in.out)
		msg.Header = proto.DataHeaders(m.Headers())
		msg.Header.Set(proto.HeaderEncoding, proto.DefaultEncoding.Name())
		msg.Header.Set(proto.HeaderSamples, fmt.Sprint(c.Samples))
		if id := msg.Header.Get(proto.HeaderMsgID); i > 0 && id != "" {
			// The enriched scrape outgrew one message: its extra parts get
			// ids of their own, as stable as the first one's. A scrape
			// without an id gives its parts none either: ".part1" of every
			// such scrape would be dropped by the duplicate window.
			msg.Header.Set(proto.HeaderMsgID, fmt.Sprintf("%s.part%d", id, i))
		}
		msg.Data = c.Payload
		if err := e.publish(ctx, msg); err != nil {
			if ctx.Err() != nil {
				return false
			}
			return e.deadLetter(ctx, m, err)
		}
	}
	e.metrics.series.Add(float64(series))
	e.metrics.messages.WithLabelValues(resultEnriched).Inc()
	e.ack(m)
	return true
}

// enrich decodes the payload of in, joins, filters and encodes it into
// chunks holding series in all. A BlockZstd payload whose labels the
// target sent before takes the steady path when it can (see steadyOutput),
// and leaves the steady cache an output for the next one when it cannot.
// Errors are those of a payload that cannot be decoded or encoded.
func (e *Enricher) enrich(w *worker, in input) (chunks []proto.Chunk, series int, err error) {
	cm := e.clusters[in.subj.Cluster]
	var steady *steadyOutput
	if _, ok := in.enc.(proto.BlockZstd); ok && e.steady != nil {
		if err := w.reader.Reset(in.data); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", in.subject, err)
		}
		sum := w.reader.LabelsSum()
		if o := e.steady.take(in.steadyKey(), sum); o != nil {
			if c, ok := e.reuse(w, o, cm, in.guardTarget); ok {
				e.steady.put(in.steadyKey(), o, time.Now())
				return []proto.Chunk{c}, o.series, nil
			}
		} else if prev := e.steady.latest(in.steadyKey()); prev != nil {
			c, out, ok := e.churned(w, in, prev, cm, sum)
			now := time.Now()
			e.steady.put(in.steadyKey(), prev, now)
			if ok {
				e.steady.put(in.steadyKey(), out, now)
				return []proto.Chunk{c}, out.series, nil
			}
		}
		w.batch.Reset()
		if err := w.reader.AppendBatch(&w.batch); err != nil {
			return nil, 0, fmt.Errorf("decode %s: %w", in.subject, err)
		}
		steady = &steadyOutput{labelsSum: sum, input: slices.Clone(w.reader.LabelsPart())}
		if cm != nil {
			// Before the join reads the metadata: a change it may not have
			// seen is numbered after this.
			steady.change = cm.changes.current()
		}
	} else if err := in.enc.Decode(in.data, &w.batch); err != nil {
		return nil, 0, fmt.Errorf("decode %s: %w", in.subject, err)
	}
	w.join.begin(cm, in.subj.Cluster, in.subj.Node)
	st := w.join.enrich(cm, &w.batch)
	e.metrics.podUnknown.Add(float64(st.unknownPods))
	relabelDropped, guardDropped := e.filter(w, in.guardTarget)
	series = len(w.batch.Series)
	if series == 0 {
		return nil, 0, nil
	}
	// Every series of the steady path must be one the guard knows next
	// time: an output it cut short may be longer next time.
	if steady != nil && guardDropped == 0 {
		if steady.labels, err = proto.AppendBlockLabels(nil, w.batch.Series); err != nil {
			return nil, 0, fmt.Errorf("encode enriched %s: %w", in.subject, err)
		}
		if len(w.kept) < w.reader.Len() {
			steady.from = slices.Clone(w.kept)
		}
		if cm != nil {
			steady.read = make(map[string]struct{}, len(w.join.read))
			for _, k := range w.join.read {
				steady.read[k] = struct{}{}
			}
		}
		steady.series = series
		steady.hashes, steady.mark = slices.Clone(w.hashes), w.mark
		steady.unknownPods, steady.relabelDropped = st.unknownPods, relabelDropped
		steady.unknownAt = bitsOf(w.reader.Len(), w.join.unknown)
		if c, ok := e.assemble(w, steady); ok {
			e.steady.put(in.steadyKey(), steady, time.Now())
			return []proto.Chunk{c}, series, nil
		}
	}
	chunks, err = proto.EncodeChunks(proto.DefaultEncoding, w.batch.Series, e.maxChunk)
	if err != nil {
		return nil, 0, fmt.Errorf("encode enriched %s: %w", in.subject, err)
	}
	return chunks, series, nil
}

// filter applies the relabel rules and the cardinality guard of target,
// removing the series they drop from the batch, and counts what each
// dropped. It leaves in w.kept the input index of every series kept, and
// in w.hashes their hashes and in w.mark the guard's mark when the guard
// is on.
func (e *Enricher) filter(w *worker, target string) (relabelDropped, guardDropped int) {
	w.kept, w.hashes = w.kept[:0], w.hashes[:0]
	if len(e.relabel) == 0 && e.guard == nil {
		for i := range w.batch.Series {
			w.kept = append(w.kept, int32(i))
		}
		return 0, 0
	}
	var adm admission
	if e.guard != nil {
		adm = e.guard.begin(target)
		defer func() {
			w.mark = adm.mark()
			adm.end()
		}()
	}
	kept := w.batch.Series[:0]
	for i, s := range w.batch.Series {
		if len(e.relabel) > 0 {
			ls, keep := w.relabel(e.relabel, s.Labels)
			if !keep {
				relabelDropped++
				continue
			}
			s.Labels = ls
		}
		if e.guard != nil {
			h, ok := adm.admit(s.Labels)
			if !ok {
				guardDropped++
				continue
			}
			w.hashes = append(w.hashes, h)
		}
		kept = append(kept, s)
		w.kept = append(w.kept, int32(i))
	}
	clear(w.batch.Series[len(kept):])
	w.batch.Series = kept
	if relabelDropped > 0 {
		e.metrics.seriesDropped.WithLabelValues(reasonRelabel).Add(float64(relabelDropped))
	}
	if guardDropped > 0 {
		e.metrics.seriesDropped.WithLabelValues(reasonCardinality).Add(float64(guardDropped))
		if ok, suppressed := e.deadLog.allow(time.Now()); ok {
			e.log.Warn("new series over the cardinality limit dropped", "target", target, "dropped", guardDropped,
				"limit_per_minute", e.cfg.Cardinality.NewSeriesPerMinute, "suppressed", suppressed)
		}
	}
	return relabelDropped, guardDropped
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

// input is a message read from WEIR_RAW.
type input struct {
	subject     string // as received
	subj        proto.Subject
	enc         proto.Encoding
	data        []byte
	guardTarget string // the target the cardinality guard counts for
	out         string // the subject of the enriched message
	chunk       int    // of the target's scrape
}

func (in input) steadyKey() steadyKey { return steadyKey{in.out, in.chunk} }

// readInput checks the subject and headers of a message.
func readInput(subject string, h nats.Header, data []byte) (input, error) {
	in := input{subject: subject, data: data}
	subj, err := proto.ParseSubject(subject)
	if err != nil {
		return in, err
	}
	if subj.Stage != proto.StageRaw {
		return in, fmt.Errorf("%w: %q: not a raw subject", proto.ErrBadSubject, subject)
	}
	meta, err := proto.ParseMeta(h)
	if err != nil {
		return in, err
	}
	if in.enc, err = proto.EncodingByName(meta.Encoding); err != nil {
		return in, err
	}
	in.subj, in.chunk = subj, meta.Chunk
	in.guardTarget = guardTarget(subj)
	subj.Stage, subj.Partitioned, subj.Partition = proto.StageEnriched, false, 0
	in.out = subj.String()
	return in, nil
}

// guardTarget names the target of a raw subject for the cardinality
// guard: whatever partition it came through.
func guardTarget(subj proto.Subject) string {
	subj.Partitioned, subj.Partition = false, 0
	return subj.String()
}
