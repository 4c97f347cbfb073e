package collector

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"math"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/collector/summary"
	"github.com/weirmetrics/weir/internal/buffer"
	"github.com/weirmetrics/weir/proto"
)

// minPayloadBytes is the smallest payload limit New accepts once the
// headers are taken off the message limit.
const minPayloadBytes = 512

// drainTimeout bounds how long a stopping collector keeps publishing what
// its buffer holds; what is left then goes to the spool, if any.
const drainTimeout = 5 * time.Second

// logEvery is how often a target that keeps failing is logged again.
const logEvery = time.Minute

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("collector closed")

// Publisher is the part of JetStream a collector needs;
// jetstream.JetStream satisfies it.
type Publisher interface {
	PublishMsgAsync(msg *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error)
}

var _ Publisher = jetstream.JetStream(nil)

// Deps are what a collector is given rather than configured with.
type Deps struct {
	// Log is the stage's logger, its "stage" attribute already set; each
	// target adds cluster, node, source and url. Nil discards.
	Log *slog.Logger
	// Reg registers the weir_collector_* metrics; nil registers nothing.
	Reg prometheus.Registerer
	// JS publishes to the WEIR_RAW stream. The collector waits at most
	// publish_timeout for an ack and then forgets it; a JetStream built
	// with jetstream.WithPublishAsyncTimeout frees its own record of it.
	JS Publisher
	// Cluster is the cluster token of every subject.
	Cluster string
	// Node is the node of targets that do not name theirs.
	Node string
	// MaxPayload is the server's max_payload (nc.MaxPayload()); 0 uses
	// Config.MaxMessageBytes only.
	MaxPayload int
	// HostIP is the node's IP from the downward API (HOST_IP): where node
	// discovery finds the kubelet.
	HostIP string
	// Nodes reads Node objects: the kubelet port in node discovery, every
	// node in central discovery. Unused in static mode.
	Nodes NodeClient
	// APIServer is the in-cluster API server URL, used by central
	// discovery unless collector.discovery.api_server is set.
	APIServer string
	// Discovered, when set, is called once the targets are known: at once
	// with static targets, once the node's kubelet port was read in node
	// mode, once the nodes were first listed in central mode. A collector
	// that cannot read its Node (no RBAC, no API server) is not ready.
	Discovered func()
}

// Collector scrapes its targets and publishes each scrape to WEIR_RAW.
type Collector struct {
	cfg          Config
	deps         Deps
	log          *slog.Logger
	metrics      *metrics
	messageLimit int
	apiServer    *url.URL // central mode
	// loops are the static targets' loops, built by New.
	loops []*loop

	mu      sync.Mutex
	closed  bool
	running bool
	cancel  context.CancelFunc // of the running Run
	done    chan struct{}      // closed when the running Run returns
}

// New checks cfg and d and prepares one scrape loop per static target. It
// does no I/O and starts no goroutine; Run does, and discovers the targets
// of node and central mode.
func New(cfg Config, d Deps) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var errs []error
	if d.JS == nil {
		errs = append(errs, errors.New("collector: Deps.JS is nil"))
	}
	if d.Cluster == "" {
		errs = append(errs, errors.New("collector: Deps.Cluster is empty"))
	}
	c := &Collector{cfg: cfg, deps: d, log: d.Log}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	switch cfg.Discovery.mode() {
	case ModeStatic:
		if len(cfg.Targets) == 0 {
			errs = append(errs, errors.New("collector.targets: empty; a collector needs at least one target, or collector.discovery.mode node or central"))
		}
	case ModeNode:
		if d.Node == "" {
			errs = append(errs, errors.New("collector.discovery.mode node: the node name is not set (NODE_NAME from the downward API)"))
		}
		if d.HostIP == "" {
			errs = append(errs, errors.New("collector.discovery.mode node: the host IP is not set (HOST_IP from the downward API)"))
		}
		if d.Nodes == nil && cfg.Discovery.KubeletPort == 0 {
			errs = append(errs, errors.New("collector.discovery.mode node: no Kubernetes client to read the kubelet port, and collector.discovery.kubelet_port is not set"))
		}
	case ModeCentral:
		if d.Nodes == nil {
			errs = append(errs, errors.New("collector.discovery.mode central: no Kubernetes client to list the nodes"))
		}
		api := cfg.Discovery.APIServer.String()
		if cfg.Discovery.APIServer.IsZero() {
			api = d.APIServer
		}
		u, err := url.Parse(api)
		if err != nil || u.Host == "" {
			errs = append(errs, fmt.Errorf("collector.discovery.api_server: %q is not an API server URL, and the in-cluster one is not known", api))
		}
		c.apiServer = u
	}
	c.messageLimit = int(cfg.MaxMessageBytes)
	if d.MaxPayload > 0 && d.MaxPayload < c.messageLimit {
		c.messageLimit = d.MaxPayload
	}

	subjects := map[proto.Subject]int{}
	var targets []target
	for i, tc := range cfg.Targets {
		if !cfg.Sources.enabled(tc.Source) {
			continue // the source is turned off
		}
		t := cfg.resolve(tc, d.Node)
		if t.Node == "" {
			errs = append(errs, fmt.Errorf("collector.targets[%d].node: empty, and Deps.Node is not set", i))
			continue
		}
		subj := rawSubject(d.Cluster, t)
		if first, dup := subjects[subj]; dup {
			errs = append(errs, fmt.Errorf("collector.targets[%d]: publishes to %s like collector.targets[%d]; node and source must be unique", i, subj, first))
		}
		subjects[subj] = i
		if err := c.checkRoom(subj); err != nil {
			errs = append(errs, fmt.Errorf("collector.targets[%d]: %w", i, err))
		}
		targets = append(targets, t)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	c.metrics = newMetrics(d.Reg)
	for _, t := range targets {
		c.loops = append(c.loops, c.newLoop(t))
	}
	c.warnInsecure()
	return c, nil
}

// checkRoom checks that a message to subj leaves room for a payload.
func (c *Collector) checkRoom(subj proto.Subject) error {
	if room := c.messageLimit - headerBytes(subj); room < minPayloadBytes {
		return fmt.Errorf("message limit %d (max_message_bytes %d, server max_payload %d) leaves %d bytes after the headers; need at least %d",
			c.messageLimit, c.cfg.MaxMessageBytes, c.deps.MaxPayload, room, minPayloadBytes)
	}
	return nil
}

// warnInsecure says at start that certificates go unchecked: an opt-in
// that must not go unnoticed.
func (c *Collector) warnInsecure() {
	for _, l := range c.loops {
		if l.target.TLS.InsecureSkipVerify {
			c.log.Warn("insecure_skip_verify is set: the target's certificate is not verified", "url", l.target.URL.Redacted(), "source", l.target.Source)
		}
	}
	if c.cfg.Discovery.mode() != ModeStatic && c.cfg.Discovery.TLS.InsecureSkipVerify {
		c.log.Warn("collector.discovery.tls_config.insecure_skip_verify is set: kubelet and API server certificates are not verified", "mode", c.cfg.Discovery.mode())
	}
}

func (c *Collector) newLoop(t target) *loop {
	subj := rawSubject(c.deps.Cluster, t)
	return newLoop(loopConfig{
		target:          t,
		subject:         subj,
		maxPayloadBytes: c.messageLimit - headerBytes(subj),
		publishTimeout:  c.cfg.PublishTimeout,
		pub:             c.deps.JS,
		log:             c.log.With("cluster", c.deps.Cluster, "node", t.Node, "source", t.Source, "url", t.URL.Redacted()),
		metrics:         c.metrics.forSource(t.Source),
	})
}

// Run scrapes every target in its own loop until ctx ends or Close is
// called, then returns nil once every loop has ended. It can run once.
func (c *Collector) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if c.running {
		c.mu.Unlock()
		return errors.New("collector: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	c.running, c.cancel, c.done = true, cancel, make(chan struct{})
	c.mu.Unlock()
	defer close(c.done)
	defer cancel()

	buf, err := buffer.Open(buffer.Config{
		MaxBytes:      int64(c.cfg.Buffer.MaxBytes),
		SpoolDir:      c.cfg.Buffer.SpoolDir,
		SpoolMaxBytes: int64(c.cfg.Buffer.SpoolMaxBytes),
	}, c.log, buffer.Hooks{Dropped: c.metrics.bufferDropped})
	if err != nil {
		return fmt.Errorf("collector.buffer: %w", err)
	}
	c.metrics.buffer.Store(buf)

	// The senders outlive the loops: they wait for scrapes until every loop
	// has stopped, so that a scrape a loop finishes as the collector stops
	// is not left behind, then publish what is still buffered while NATS
	// takes it, for at most drainTimeout, and stop.
	sendCtx, stopSending := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSending()
	publishCtx, stopPublishing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPublishing()
	senders := newSenderSet(c, buf, sendCtx, publishCtx)
	senders.spooled() // subjects a previous collector left in the spool
	p := newPool(c, buf, senders)
	err = c.runLoops(ctx, p)
	p.stopAll()
	stopSending()
	drain := time.AfterFunc(drainTimeout, stopPublishing)
	senders.wait()
	drain.Stop()
	// Every sender has put back what it held: the spool gets it all.
	if err := buf.Close(); err != nil {
		c.log.Error("collector: spool at exit", "err", err)
	}
	return err
}

// runLoops keeps the pool's loops those of the static and discovered
// targets until ctx ends.
func (c *Collector) runLoops(ctx context.Context, p *pool) error {
	discovered := func() {}
	if c.deps.Discovered != nil {
		discovered = sync.OnceFunc(c.deps.Discovered)
	}
	p.sync(ctx, c.loops)
	switch c.cfg.Discovery.mode() {
	case ModeNode:
		tcs, err := c.discoverNode(ctx)
		if err != nil {
			return nil // ctx ended before the node was found
		}
		p.sync(ctx, append(slices.Clip(c.loops), c.discovered(tcs)...))
		discovered()
	case ModeCentral:
		if err := c.watchNodes(ctx, func(nodes []string) {
			var tcs []TargetConfig
			for _, n := range nodes {
				tcs = append(tcs, c.cfg.Discovery.centralTargets(c.apiServer, n, &c.cfg.Sources)...)
			}
			p.sync(ctx, append(slices.Clip(c.loops), c.discovered(tcs)...))
			discovered()
		}); err != nil {
			return err
		}
	default:
		discovered()
	}
	<-ctx.Done()
	return nil
}

// discovered builds the loops of discovered targets, leaving out those
// whose subject leaves no room for a payload (a node name of kilobytes).
func (c *Collector) discovered(tcs []TargetConfig) []*loop {
	out := make([]*loop, 0, len(tcs))
	for _, tc := range tcs {
		t := c.cfg.resolve(tc, c.deps.Node)
		if err := c.checkRoom(rawSubject(c.deps.Cluster, t)); err != nil {
			c.log.Error("discovered target left out", "node", t.Node, "source", t.Source, "err", err)
			continue
		}
		out = append(out, c.newLoop(t))
	}
	return out
}

// Close stops a running Run and waits until it has returned. It is safe to
// call more than once, and before, during or after Run.
func (c *Collector) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	return nil
}

func rawSubject(cluster string, t target) proto.Subject {
	return proto.Subject{Stage: proto.StageRaw, Cluster: cluster, Node: t.Node, Source: t.Source}
}

// headerBytes is an upper bound of the headers of a message to subj: the
// server counts them in max_payload.
func headerBytes(subj proto.Subject) int {
	const maxChunks = 1 << 20
	h := nats.Header{}
	proto.Meta{
		MsgID:        proto.MsgID(subj, math.MaxInt64, maxChunks),
		Encoding:     proto.DefaultEncoding.Name(),
		ScrapeMillis: math.MaxInt64,
		Chunk:        maxChunks,
		Chunks:       maxChunks,
		Samples:      math.MaxInt32,
	}.SetHeaders(h)
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// loopConfig is what a scrape loop is built from.
type loopConfig struct {
	target          target
	subject         proto.Subject
	maxPayloadBytes int
	publishTimeout  time.Duration
	pub             Publisher
	log             *slog.Logger
	metrics         targetMetrics
}

// reportSeries are the labels of the series Prometheus adds to every
// scrape, with the target labels.
type reportSeries struct {
	up, duration, samples *proto.FixedLabels
}

// loop scrapes one target at its interval and publishes every scrape.
// Everything in it belongs to its goroutine.
type loop struct {
	loopConfig
	subjectText string
	scraper     *scraper
	parser      *parser
	// encoder reuses the compressed labels of the last scrape when the
	// parser hands it the same series again.
	encoder    *proto.BlockEncoder
	report     reportSeries
	batch      []proto.LabeledSample
	buf        *buffer.Buffer   // set by Run
	samples    []summary.Sample // of JSON sources, reused
	pending    []pendingChunk
	scrapeLog  failureLog
	publishLog failureLog
	scraped    bool // a scrape was published: its report series exist
	// duplicatesLogged is when dropped duplicate samples were last logged.
	duplicatesLogged time.Time
	// gone is set when discovery dropped the target: the loop then marks
	// all its series stale as it stops.
	gone atomic.Bool
}

func newLoop(lc loopConfig) *loop {
	t := lc.target
	// The target labels Prometheus adds with honor_labels false, and
	// metrics_path as kube-prometheus adds it: the kubelet endpoints share
	// job and instance, and some series (up, process_start_time_seconds)
	// would otherwise collide between them.
	targetLabels := sortedLabels(
		prompb.Label{Name: "instance", Value: t.URL.Host},
		prompb.Label{Name: "job", Value: t.Job},
		prompb.Label{Name: "metrics_path", Value: t.URL.Path},
	)
	withName := func(name string) *proto.FixedLabels {
		return new(proto.FixedLabels(sortedLabels(append([]prompb.Label{{Name: "__name__", Value: name}}, targetLabels...)...)))
	}
	return &loop{
		loopConfig:  lc,
		subjectText: lc.subject.String(),
		scraper:     newScraper(t),
		encoder:     &proto.BlockEncoder{},
		parser: newParserWith(targetLabels, parseOptions{
			honorTimestamps: t.opts.HonorTimestamps == nil || *t.opts.HonorTimestamps,
			limits: limits{
				sample:           t.opts.SampleLimit,
				label:            t.opts.LabelLimit,
				labelNameLength:  t.opts.LabelNameLengthLimit,
				labelValueLength: t.opts.LabelValueLengthLimit,
			},
			relabel: t.opts.MetricRelabelConfigs,
		}),
		report: reportSeries{
			up:       withName("up"),
			duration: withName("scrape_duration_seconds"),
			samples:  withName("scrape_samples_scraped"),
		},
		scrapeLog:  failureLog{log: lc.log, every: logEvery, failedMsg: "scrape failed", recoveredMsg: "scrape recovered"},
		publishLog: failureLog{log: lc.log, every: logEvery, failedMsg: "publish failed", recoveredMsg: "publish recovered"},
	}
}

func sortedLabels(ls ...prompb.Label) []prompb.Label {
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	return ls
}

// run scrapes until ctx ends. The first scrape waits for the target's
// offset, so that the targets of a node, and the nodes of a cluster, do not
// all scrape at the same instant.
func (l *loop) run(ctx context.Context) {
	defer l.scraper.close()
	defer func() {
		if l.gone.Load() {
			l.publishGone()
		}
	}()
	first := time.NewTimer(l.offset(time.Now()))
	select {
	case <-ctx.Done():
		first.Stop()
		return
	case <-first.C:
	}
	ticker := time.NewTicker(l.target.interval)
	defer ticker.Stop()
	for {
		l.scrapeAndPublish(ctx, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// offset is how long to wait from now until the target's phase in its
// interval. The phase is a hash of URL and node, so it stays the same
// across restarts, and scrapes stay an interval apart.
func (l *loop) offset(now time.Time) time.Duration {
	h := fnv.New64a()
	_, _ = h.Write([]byte(l.target.URL.String()))
	_, _ = h.Write([]byte{0})
	_, _ = h.Write([]byte(l.target.Node))
	interval := int64(l.target.interval)
	wait := int64(h.Sum64()%uint64(interval)) - now.UnixNano()%interval
	if wait < 0 {
		wait += interval
	}
	return time.Duration(wait)
}

// scrapeAndPublish does one scrape started at start and publishes it: the
// series with the up, scrape_duration_seconds and scrape_samples_scraped
// series, or these three alone with up=0 when the scrape failed.
func (l *loop) scrapeAndPublish(ctx context.Context, start time.Time) {
	scrapeMillis := start.UnixMilli()
	l.batch = l.batch[:0]
	samples, err := l.scrape(ctx, scrapeMillis)
	if ctx.Err() != nil {
		return // stopping: the scrape was cut short by us, not by the target
	}
	duration := time.Since(start)
	l.metrics.scrapes.Inc()
	l.metrics.scrapeDuration.Observe(duration.Seconds())

	var chunks []proto.Chunk
	if err == nil {
		l.appendReport(scrapeMillis, true, duration, samples)
		if chunks, err = proto.EncodeSamples(l.encoder, l.batch, l.maxPayloadBytes); err != nil {
			err = failure(reasonEncode, fmt.Errorf("encode: %w", err))
		}
	}
	if err != nil {
		reason := reasonOf(err)
		l.metrics.failures[reason].Inc()
		l.scrapeLog.failed(time.Now(), err, "reason", reason)
		l.batch = l.batch[:0]
		l.appendReport(scrapeMillis, false, duration, 0)
		// As Prometheus: a failed scrape ends every series of the last one.
		l.parser.staleAll(&l.batch, scrapeMillis)
		if chunks, err = proto.EncodeSamples(l.encoder, l.batch, l.maxPayloadBytes); err != nil {
			// Three short series: New's minimum payload makes this unreachable.
			l.metrics.publishFailures.Inc()
			l.publishLog.failed(time.Now(), fmt.Errorf("encode up=0 report: %w", err))
			return
		}
	} else {
		l.metrics.samplesScraped.Add(float64(samples))
		l.scrapeLog.succeeded(time.Now())
		if n := l.parser.duplicates; n > 0 {
			l.droppedDuplicates(time.Now(), n)
		}
	}
	l.scraped = true
	l.push(scrapeMillis, chunks)
}

// droppedDuplicates counts the n samples a scrape dropped because a sample
// of their series came earlier in it, and logs them at most every
// logEvery: a target, or metric_relabel_configs, that makes duplicates
// makes them at every scrape.
func (l *loop) droppedDuplicates(now time.Time, n int) {
	l.metrics.samplesDuplicate.Add(float64(n))
	if now.Sub(l.duplicatesLogged) < logEvery {
		return
	}
	l.duplicatesLogged = now
	l.log.Warn("samples dropped: a sample of their series (after metric_relabel_configs) came earlier in the same scrape", "dropped", n)
}

// push hands a scrape to the buffer, which keeps it until a sender
// published it, behind the target's earlier scrapes.
func (l *loop) push(scrapeMillis int64, chunks []proto.Chunk) {
	l.buf.Push(&buffer.Scrape{Subject: l.subjectText, Encoding: l.encoder.Name(), ScrapeMillis: scrapeMillis, Chunks: chunks})
}

// publishGone publishes staleness markers for every series of the last
// scrape and the report series, as Prometheus does when a target
// disappears; its sender publishes them after the target's last scrape.
func (l *loop) publishGone() {
	if !l.scraped {
		return
	}
	now := time.Now().UnixMilli()
	l.batch = l.batch[:0]
	l.parser.staleAll(&l.batch, now)
	for _, ls := range []*proto.FixedLabels{l.report.up, l.report.duration, l.report.samples} {
		appendSample(&l.batch, ls, staleNaN, now)
	}
	chunks, err := proto.EncodeSamples(l.encoder, l.batch, l.maxPayloadBytes)
	if err != nil {
		l.publishLog.failed(time.Now(), fmt.Errorf("encode staleness markers: %w", err))
		return
	}
	l.push(now, chunks)
	l.log.Info("target gone; its series are marked stale", "series", len(l.batch))
}

// scrape fetches and parses the target into l.batch and returns the number
// of samples. On error l.batch holds nothing of the body.
func (l *loop) scrape(ctx context.Context, scrapeMillis int64) (n int, err error) {
	defer l.scraper.release()
	err = l.scraper.fetch(ctx, func(body io.Reader, contentType string) (err error) {
		n, err = l.parse(body, contentType, scrapeMillis)
		return err
	})
	if _, ok := errors.AsType[*scrapeError](err); ok || err == nil {
		return n, err
	}
	if le, ok := errors.AsType[*limitError](err); ok {
		return 0, failure(le.reason, err)
	}
	return 0, failure(reasonParse, fmt.Errorf("parse: %w", err))
}

// parse runs the parser, and turns a panic of the exposition parser on a
// hostile body into a failed scrape of this target rather than a crash of
// every target.
func (l *loop) parse(r io.Reader, contentType string, scrapeMillis int64) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			l.batch = l.batch[:0]
			n, err = 0, fmt.Errorf("parser panicked: %v", r)
		}
	}()
	// The parser keeps what it needs of the samples: their labels need not
	// stay in the heap until the next scrape.
	defer func() { clear(l.samples) }()
	if l.target.Source != proto.SourceSummary && l.target.Source != proto.SourceKubeProxyHealth && l.parser.isText(contentType) {
		return l.parser.parseStream(&l.batch, r, scrapeMillis)
	}
	body, err := l.scraper.readAll(r)
	if err != nil {
		return 0, err
	}
	switch l.target.Source {
	case proto.SourceSummary:
		s, err := summary.Decode(body)
		if err != nil {
			return 0, err
		}
		l.samples = s.Append(l.samples[:0])
		return l.parser.parseSamples(&l.batch, l.samples, scrapeMillis)
	case proto.SourceKubeProxyHealth:
		l.samples, err = proxyHealthSamples(l.samples[:0], body, l.scraper.status)
		if err != nil {
			return 0, err
		}
		return l.parser.parseSamples(&l.batch, l.samples, scrapeMillis)
	}
	return l.parser.parse(&l.batch, body, contentType, scrapeMillis)
}

// appendReport appends the three series Prometheus reports for every
// scrape, stamped with the scrape start.
func (l *loop) appendReport(scrapeMillis int64, up bool, d time.Duration, samples int) {
	v := 0.0
	if up {
		v = 1
	}
	appendSample(&l.batch, l.report.up, v, scrapeMillis)
	appendSample(&l.batch, l.report.duration, d.Seconds(), scrapeMillis)
	appendSample(&l.batch, l.report.samples, float64(samples), scrapeMillis)
}

// failureLog logs a repeating failure of one target without flooding: the
// first failure, then at most one line per interval while it goes on, and
// the recovery.
type failureLog struct {
	log          *slog.Logger
	every        time.Duration
	failedMsg    string
	recoveredMsg string

	failures   int       // in a row
	since      time.Time // first failure in a row
	lastLogged time.Time
}

func (f *failureLog) failed(now time.Time, err error, attrs ...any) {
	f.failures++
	if f.failures == 1 {
		f.since = now
	} else if now.Sub(f.lastLogged) < f.every {
		return
	}
	f.lastLogged = now
	f.log.Warn(f.failedMsg, append(attrs, "err", err, "failures_in_a_row", f.failures, "failing_for", now.Sub(f.since).Round(time.Millisecond))...)
}

func (f *failureLog) succeeded(now time.Time) {
	if f.failures == 0 {
		return
	}
	f.log.Info(f.recoveredMsg, "failures_in_a_row", f.failures, "failed_for", now.Sub(f.since).Round(time.Millisecond))
	f.failures = 0
}
