package collector

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"

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
}

// Collector scrapes its targets and publishes each scrape to WEIR_RAW.
type Collector struct {
	loops   []*loop
	buffer  BufferConfig
	metrics *metrics
	log     *slog.Logger
	pub     Publisher
	timeout time.Duration // publish_timeout

	mu      sync.Mutex
	closed  bool
	running bool
	cancel  context.CancelFunc // of the running Run
	done    chan struct{}      // closed when the running Run returns
}

// New checks cfg and d and prepares one scrape loop per target. It does no
// I/O and starts no goroutine; Run does.
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
	if len(cfg.Targets) == 0 {
		errs = append(errs, errors.New("collector.targets: empty; a collector needs at least one target"))
	}
	messageLimit := int(cfg.MaxMessageBytes)
	if d.MaxPayload > 0 && d.MaxPayload < messageLimit {
		messageLimit = d.MaxPayload
	}

	targets := make([]target, len(cfg.Targets))
	subjects := map[proto.Subject]int{}
	for i, tc := range cfg.Targets {
		t := cfg.resolve(tc, d.Node)
		targets[i] = t
		if t.Node == "" {
			errs = append(errs, fmt.Errorf("collector.targets[%d].node: empty, and Deps.Node is not set", i))
			continue
		}
		subj := rawSubject(d.Cluster, t)
		if first, dup := subjects[subj]; dup {
			errs = append(errs, fmt.Errorf("collector.targets[%d]: publishes to %s like collector.targets[%d]; node and source must be unique", i, subj, first))
		}
		subjects[subj] = i
		if room := messageLimit - headerBytes(subj); room < minPayloadBytes {
			errs = append(errs, fmt.Errorf("collector.targets[%d]: message limit %d (max_message_bytes %d, server max_payload %d) leaves %d bytes after the headers; need at least %d",
				i, messageLimit, cfg.MaxMessageBytes, d.MaxPayload, room, minPayloadBytes))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := newMetrics(d.Reg)
	c := &Collector{buffer: cfg.Buffer, metrics: m, log: log, pub: d.JS, timeout: cfg.PublishTimeout}
	for _, t := range targets {
		subj := rawSubject(d.Cluster, t)
		c.loops = append(c.loops, newLoop(loopConfig{
			target:          t,
			subject:         subj,
			maxPayloadBytes: messageLimit - headerBytes(subj),
			publishTimeout:  cfg.PublishTimeout,
			pub:             d.JS,
			log:             log.With("cluster", d.Cluster, "node", t.Node, "source", t.Source, "url", t.URL.Redacted()),
			metrics:         m.forSource(t.Source),
		}))
	}
	return c, nil
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
		MaxBytes:      int64(c.buffer.MaxBytes),
		SpoolDir:      c.buffer.SpoolDir,
		SpoolMaxBytes: int64(c.buffer.SpoolMaxBytes),
	}, c.log, buffer.Hooks{Dropped: c.metrics.bufferDropped})
	if err != nil {
		return fmt.Errorf("collector.buffer: %w", err)
	}
	c.metrics.buffer.Store(buf)

	// The senders outlive the loops: once the loops stopped scraping, they
	// publish what is still buffered while NATS takes it, for at most
	// drainTimeout, then stop.
	publishCtx, stopPublishing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPublishing()
	var loops, senders sync.WaitGroup
	for _, s := range c.senders(buf) {
		senders.Go(func() { s.run(ctx, publishCtx) })
	}
	for _, l := range c.loops {
		l.buf = buf
		loops.Go(func() { l.run(ctx) })
	}
	loops.Wait()
	drain := time.AfterFunc(drainTimeout, stopPublishing)
	senders.Wait()
	drain.Stop()
	// Every sender has put back what it held: the spool gets it all.
	if err := buf.Close(); err != nil {
		c.log.Error("collector: spool at exit", "err", err)
	}
	return nil
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
	up, duration, samples []prompb.Label
}

// loop scrapes one target at its interval and publishes every scrape.
// Everything in it belongs to its goroutine.
type loop struct {
	loopConfig
	subjectText string
	scraper     *scraper
	parser      *parser
	report      reportSeries
	batch       proto.Batch
	buf         *buffer.Buffer // set by Run
	scrapeLog   failureLog
	publishLog  failureLog
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
	withName := func(name string) []prompb.Label {
		return sortedLabels(append([]prompb.Label{{Name: "__name__", Value: name}}, targetLabels...)...)
	}
	return &loop{
		loopConfig:  lc,
		subjectText: lc.subject.String(),
		scraper:     newScraper(t),
		parser:      newParser(targetLabels),
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
	l.batch.Reset()
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
		if chunks, err = proto.EncodeChunks(proto.DefaultEncoding, l.batch.Series, l.maxPayloadBytes); err != nil {
			err = failure(reasonEncode, fmt.Errorf("encode: %w", err))
		}
	}
	if err != nil {
		reason := reasonOf(err)
		l.metrics.failures[reason].Inc()
		l.scrapeLog.failed(time.Now(), err, "reason", reason)
		l.batch.Reset()
		l.appendReport(scrapeMillis, false, duration, 0)
		if chunks, err = proto.EncodeChunks(proto.DefaultEncoding, l.batch.Series, l.maxPayloadBytes); err != nil {
			// Three short series: New's minimum payload makes this unreachable.
			l.metrics.publishFailures.Inc()
			l.publishLog.failed(time.Now(), fmt.Errorf("encode up=0 report: %w", err))
			return
		}
	} else {
		l.metrics.samplesScraped.Add(float64(samples))
		l.scrapeLog.succeeded(time.Now())
	}
	// The buffer keeps the scrape until a sender published it, behind the
	// target's earlier scrapes.
	l.buf.Push(&buffer.Scrape{Subject: l.subjectText, Encoding: proto.DefaultEncoding.Name(), ScrapeMillis: scrapeMillis, Chunks: chunks})
}

// scrape fetches and parses the target into l.batch and returns the number
// of samples. On error l.batch holds nothing of the body.
func (l *loop) scrape(ctx context.Context, scrapeMillis int64) (int, error) {
	body, contentType, err := l.scraper.fetch(ctx)
	if err != nil {
		return 0, err
	}
	n, err := l.parse(body, contentType, scrapeMillis)
	if err != nil {
		return 0, failure(reasonParse, fmt.Errorf("parse: %w", err))
	}
	l.metrics.histogramsSkipped.Add(float64(l.parser.histogramsSkipped))
	return n, nil
}

// parse runs the parser, and turns a panic of the exposition parser on a
// hostile body into a failed scrape of this target rather than a crash of
// every target.
func (l *loop) parse(body []byte, contentType string, scrapeMillis int64) (n int, err error) {
	defer func() {
		if r := recover(); r != nil {
			l.batch.Reset()
			n, err = 0, fmt.Errorf("parser panicked: %v", r)
		}
	}()
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
