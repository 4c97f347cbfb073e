package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/proto"
)

const (
	userAgent = "weir-sink"
	// maxRetryAfter caps what a backend may ask for in Retry-After, so that a
	// wrong date or a huge number cannot park a shard for hours.
	maxRetryAfter = 5 * time.Minute
	// errorBodyBytes is how much of an error answer is logged.
	errorBodyBytes = 512
	// drainBytes is how much of an answer is read before closing it, so the
	// connection can be reused; a longer answer costs a new connection.
	drainBytes = 64 << 10
)

// RetryableError is a request that failed in a way worth sending again:
// a network error, a timeout, a 5xx or a 429. After is the wait the backend
// asked for in Retry-After, or 0 when it did not say.
type RetryableError struct {
	Err   error
	After time.Duration
}

func (e RetryableError) Error() string {
	if e.After > 0 {
		return fmt.Sprintf("%v (retry after %s)", e.Err, e.After)
	}
	return e.Err.Error()
}

func (e RetryableError) Unwrap() error { return e.Err }

// statusError is an answer other than 2xx.
type statusError struct {
	code int
	body string // the start of the answer, for the log
}

func (e *statusError) Error() string {
	return fmt.Sprintf("remote write answered HTTP %d: %s", e.code, e.body)
}

// client posts remote-write 1.0 requests to one backend.
type client struct {
	url       string
	headers   map[string]string // configured, checked by Config.Validate
	timeout   time.Duration
	transport *http.Transport
	http      *http.Client
	m         *metrics
}

func newClient(cfg Config, m *metrics) *client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// One connection per shard stays open between requests.
	t.MaxIdleConnsPerHost = cfg.QueueConfig.MaxShards
	return &client{
		url:       cfg.URL.String(),
		headers:   cfg.Headers,
		timeout:   cfg.RemoteTimeout,
		transport: t,
		http:      &http.Client{Transport: t},
		m:         m,
	}
}

// send posts one compressed write request. It returns nil on 2xx, a
// RetryableError for what is worth retrying, a *statusError for any other
// answer, and ctx's error once ctx has ended.
func (c *client) send(ctx context.Context, body []byte) error {
	reqCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, c.url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	rb := &requestBody{data: body}
	// The transport reads the body after Do returns in some error paths;
	// body is the shard's reused buffer, so wait until every reader over it
	// has been closed before handing it back.
	defer rb.wait()
	req.Body = rb.reader()
	req.GetBody = func() (io.ReadCloser, error) { return rb.reader(), nil }
	req.ContentLength = int64(len(body))
	for name, value := range c.headers {
		req.Header.Set(name, value)
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	req.Header.Set("User-Agent", userAgent)

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.m.requestDuration.Observe(time.Since(start).Seconds())
		c.m.requests.WithLabelValues("error").Inc()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Network errors and our own timeout: the backend may be back soon.
		return RetryableError{Err: err}
	}
	defer resp.Body.Close()
	var snippet []byte
	if resp.StatusCode/100 != 2 {
		snippet, _ = io.ReadAll(io.LimitReader(resp.Body, errorBodyBytes))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainBytes))
	c.m.requestDuration.Observe(time.Since(start).Seconds())
	c.m.requests.WithLabelValues(statusClass(resp.StatusCode)).Inc()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	serr := &statusError{code: resp.StatusCode, body: strings.TrimSpace(string(snippet))}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode/100 == 5 {
		return RetryableError{Err: serr, After: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	return serr
}

// close drops the idle connections.
func (c *client) close() { c.transport.CloseIdleConnections() }

func statusClass(code int) string {
	switch code / 100 {
	case 1:
		return "1xx"
	case 2:
		return "2xx"
	case 3:
		return "3xx"
	case 4:
		return "4xx"
	case 5:
		return "5xx"
	}
	return "other"
}

// retryAfter reads a Retry-After value, delay-seconds or an HTTP date, as
// a wait from now. It returns 0 when the value is absent, malformed or in
// the past, and at most maxRetryAfter.
func retryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(value, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(secs) * time.Second
	}
	if at, err := http.ParseTime(value); err == nil {
		return min(max(at.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

// requestBody hands the transport readers over one buffer and lets the
// sender wait until the transport closed them all: net/http closes every
// request body it was given, on every path, sometimes after Do returned.
type requestBody struct {
	data []byte
	open sync.WaitGroup
}

func (b *requestBody) reader() io.ReadCloser {
	b.open.Add(1)
	return &bodyReader{Reader: bytes.NewReader(b.data), done: b.open.Done}
}

func (b *requestBody) wait() { b.open.Wait() }

type bodyReader struct {
	*bytes.Reader
	once sync.Once
	done func()
}

func (r *bodyReader) Close() error {
	r.once.Do(r.done)
	return nil
}

// backoff doubles from min to max, with jitter so that shards and replicas
// that failed together do not retry together.
type backoff struct {
	next, max time.Duration
}

func newBackoff(q QueueConfig) backoff { return backoff{next: q.MinBackoff, max: q.MaxBackoff} }

// wait returns how long to wait before the next attempt. A Retry-After
// from the backend wins over the computed backoff.
func (b *backoff) wait(after time.Duration) time.Duration {
	d := b.next
	b.next = min(2*b.next, b.max)
	if after > 0 {
		return min(after, maxRetryAfter)
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d, or less when ctx ends first; it reports whether the full
// wait passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// request is one compressed write request, valid until the builder that
// made it builds the next.
type request struct {
	body    []byte
	samples int   // float samples and histograms, as Prometheus counts them
	newest  int64 // newest timestamp in the request, Unix ms
}

// requestBuilder cuts a decoded batch into write requests of at most limit
// samples. The requests share labels and samples with the batch, and the
// builder keeps its buffers from one message to the next.
type requestBuilder struct {
	limit      int
	series     []prompb.TimeSeries
	samples    int
	newest     int64
	raw        []byte
	compressed []byte
}

// build calls send with each request of b, in series order. A series with
// more samples than fit is split over consecutive requests, oldest first,
// so every request stays within the limit and order is kept. build stops
// at the first error send returns.
func (w *requestBuilder) build(b *proto.Batch, send func(request) error) error {
	w.reset()
	for i := range b.Series {
		ts := &b.Series[i]
		samples, histograms := ts.Samples, ts.Histograms
		exemplars := ts.Exemplars // sent with the first piece of the series
		for len(samples)+len(histograms) > 0 {
			room := w.limit - w.samples
			piece := prompb.TimeSeries{Labels: ts.Labels, Exemplars: exemplars}
			n := min(room, len(samples))
			piece.Samples, samples = samples[:n:n], samples[n:]
			h := min(room-n, len(histograms))
			piece.Histograms, histograms = histograms[:h:h], histograms[h:]
			exemplars = nil
			w.add(piece, n+h)
			if w.samples == w.limit {
				if err := w.flush(send); err != nil {
					return err
				}
			}
		}
	}
	if w.samples > 0 {
		return w.flush(send)
	}
	return nil
}

func (w *requestBuilder) add(piece prompb.TimeSeries, samples int) {
	for _, s := range piece.Samples {
		w.newest = max(w.newest, s.Timestamp)
	}
	for _, h := range piece.Histograms {
		w.newest = max(w.newest, h.Timestamp)
	}
	w.series = append(w.series, piece)
	w.samples += samples
}

func (w *requestBuilder) flush(send func(request) error) error {
	wr := prompb.WriteRequest{Timeseries: w.series}
	size := wr.Size()
	if cap(w.raw) < size {
		w.raw = make([]byte, size)
	}
	w.raw = w.raw[:size]
	if _, err := wr.MarshalToSizedBuffer(w.raw); err != nil {
		return fmt.Errorf("marshal write request: %w", err)
	}
	if n := snappy.MaxEncodedLen(size); cap(w.compressed) < n {
		w.compressed = make([]byte, n)
	}
	w.compressed = snappy.Encode(w.compressed[:cap(w.compressed)], w.raw)
	req := request{body: w.compressed, samples: w.samples, newest: w.newest}
	w.reset()
	return send(req)
}

func (w *requestBuilder) reset() {
	clear(w.series) // drop references into the previous batch
	w.series = w.series[:0]
	w.samples = 0
	w.newest = minMillis
}

const minMillis = -1 << 63

// errGaveUp is what deliver returns when ctx ended before the backend
// answered for good.
var errGaveUp = errors.New("sink stopping")

// deliver sends one request until the backend accepts it (2xx) or rejects
// it for good (other answers, counted as dropped), retrying network errors,
// timeouts, 5xx and 429 without limit. It returns an error only when ctx
// ended first; the message is then left for redelivery.
func (s *Sink) deliver(ctx context.Context, req request, log *slog.Logger) error {
	bo := newBackoff(s.cfg.QueueConfig)
	for attempt := 1; ; attempt++ {
		err := s.client.send(ctx, req.body)
		if err == nil {
			s.metrics.samplesSent.Add(float64(req.samples))
			s.metrics.highestSent.observe(req.newest)
			return nil
		}
		if ctx.Err() != nil {
			return errGaveUp
		}
		var retryable RetryableError
		if !errors.As(err, &retryable) {
			reason := "error"
			var serr *statusError
			if errors.As(err, &serr) {
				reason = "http_" + statusClass(serr.code)
			}
			s.metrics.samplesDropped.WithLabelValues(reason).Add(float64(req.samples))
			if ok, suppressed := s.dropLog.allow(time.Now()); ok {
				log.Error("remote write rejected, samples dropped", "err", err,
					"reason", reason, "samples", req.samples, "suppressed", suppressed)
			}
			return nil
		}
		wait := bo.wait(retryable.After)
		s.metrics.samplesRetried.Add(float64(req.samples))
		if ok, suppressed := s.retryLog.allow(time.Now()); ok {
			log.Warn("remote write failed, retrying", "err", err,
				"attempt", attempt, "wait", wait, "samples", req.samples, "suppressed", suppressed)
		}
		// The keepalive in Run calls InProgress on this message while we wait.
		if !sleep(ctx, wait) {
			return errGaveUp
		}
	}
}

// logThrottle lets one log line through per interval and counts the rest,
// so that a backend down for an hour does not write a line per retry.
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
