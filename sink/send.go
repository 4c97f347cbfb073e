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

	promconfig "github.com/prometheus/common/config"
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

// client posts remote-write requests to one backend.
type client struct {
	url     string
	headers map[string]string // configured, checked by Config.Validate
	timeout time.Duration
	http    *http.Client
	m       *metrics
}

// newClient builds the HTTP client from the Prometheus-style settings:
// auth, TLS and proxy. It reads the TLS files once to check them; the
// round tripper reads them again when they change.
func newClient(cfg Config, m *metrics) (*client, error) {
	rt, err := promconfig.NewRoundTripperFromConfig(cfg.HTTPClientConfig, "weir_sink_"+cfg.Name,
		promconfig.WithUserAgent(userAgent))
	if err != nil {
		return nil, fmt.Errorf("sinks[%s]: http client: %w", cfg.Name, err)
	}
	return &client{
		url:     cfg.URL.String(),
		headers: cfg.Headers,
		timeout: cfg.RemoteTimeout,
		http:    &http.Client{Transport: rt, CheckRedirect: redirectPolicy(cfg.HTTPClientConfig.FollowRedirects)},
		m:       m,
	}, nil
}

func redirectPolicy(follow bool) func(*http.Request, []*http.Request) error {
	if follow {
		return nil
	}
	return func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
}

// written is what a 2.0 backend says it stored, from its
// X-Prometheus-Remote-Write-*-Written headers; known is false when it
// sent none of them (a 1.0 backend, or a 1.0 request).
type written struct {
	samples, histograms, exemplars int64
	known                          bool
}

func readWritten(h http.Header) written {
	var w written
	for _, f := range []struct {
		dst *int64
		key string
	}{
		{&w.samples, "X-Prometheus-Remote-Write-Samples-Written"},
		{&w.histograms, "X-Prometheus-Remote-Write-Histograms-Written"},
		{&w.exemplars, "X-Prometheus-Remote-Write-Exemplars-Written"},
	} {
		if v := h.Get(f.key); v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				*f.dst, w.known = n, true
			}
		}
	}
	return w
}

// send posts one compressed write request of protocol p. It returns nil
// on 2xx, a RetryableError for what is worth retrying (429 only when
// retry429), a *statusError for any other answer, and ctx's error once
// ctx has ended.
func (c *client) send(ctx context.Context, body []byte, p protocol, retry429 bool) (written, error) {
	reqCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, c.url, nil)
	if err != nil {
		return written{}, fmt.Errorf("build request: %w", err)
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
	if p == protoV2 {
		req.Header.Set("Content-Type", contentTypeV2)
		req.Header.Set("X-Prometheus-Remote-Write-Version", versionV2)
	} else {
		req.Header.Set("Content-Type", contentTypeV1)
		req.Header.Set("X-Prometheus-Remote-Write-Version", versionV1)
	}

	start := time.Now()
	resp, err := c.http.Do(req)
	if err != nil {
		c.m.requestDuration.Observe(time.Since(start).Seconds())
		c.m.requests.WithLabelValues("error").Inc()
		if ctx.Err() != nil {
			return written{}, ctx.Err()
		}
		// Network errors and our own timeout: the backend may be back soon.
		return written{}, RetryableError{Err: err}
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
		return readWritten(resp.Header), nil
	}
	serr := &statusError{code: resp.StatusCode, body: strings.TrimSpace(string(snippet))}
	if (retry429 && resp.StatusCode == http.StatusTooManyRequests) || resp.StatusCode/100 == 5 {
		return written{}, RetryableError{Err: serr, After: retryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	return written{}, serr
}

// close drops the idle connections.
func (c *client) close() { c.http.CloseIdleConnections() }

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

// errGaveUp is what deliver returns when ctx ended before the backend
// answered for good.
var errGaveUp = errors.New("sink stopping")

// rejectedError is a request the backend refused for good: its message
// is dead-lettered.
type rejectedError struct{ err error }

func (e *rejectedError) Error() string { return "backend rejected samples: " + e.err.Error() }
func (e *rejectedError) Unwrap() error { return e.err }

// deliver sends one request until the backend accepts it (2xx) or rejects
// it for good, retrying network errors, timeouts, 5xx and 429 without
// limit. A 2.0 request answered 415, or 2xx without the headers saying
// what was written, is sent again as 1.0, and so is every later request of
// the sink. It returns a *rejectedError for a rejection,
// errGaveUp when ctx ended first (the message is then left for
// redelivery), and an encoding error as it is.
func (s *Sink) deliver(ctx context.Context, enc *encoder, req request, log *slog.Logger) error {
	bo := newBackoff(s.cfg.QueueConfig)
	for attempt := 1; ; attempt++ {
		p := s.protocol()
		body, err := enc.encode(req, p)
		if err != nil {
			return err
		}
		w, err := s.client.send(ctx, body, p, s.cfg.QueueConfig.RetryOnRateLimit)
		if err == nil && p == protoV2 && !w.known {
			// A 2.0 receiver says what it wrote. A 1.0 receiver, such as
			// Prometheus before 2.54, reads the 2.0 message as an empty 1.0
			// one and answers 204 having stored nothing: send it again as 1.0.
			s.fallBackToV1(errors.New("2xx without X-Prometheus-Remote-Write-Samples-Written: a 1.0 receiver"), log)
			continue
		}
		if err == nil {
			s.metrics.samplesSent.Add(float64(req.samples))
			s.metrics.highestSent.observe(req.newest)
			if p == protoV2 {
				s.checkWritten(req, w, log)
			}
			return nil
		}
		if ctx.Err() != nil {
			return errGaveUp
		}
		var serr *statusError
		errors.As(err, &serr)
		if p == protoV2 && serr != nil && serr.code == http.StatusUnsupportedMediaType {
			s.fallBackToV1(serr, log)
			continue // the same data, at once, as 1.0
		}
		var retryable RetryableError
		if !errors.As(err, &retryable) {
			reason := "error"
			if serr != nil {
				reason = "http_" + statusClass(serr.code)
			}
			s.metrics.samplesFailed.WithLabelValues(reason).Add(float64(req.samples))
			if ok, suppressed := s.dropLog.allow(time.Now()); ok {
				log.Error("remote write rejected, message goes to the dead letters", "err", err,
					"reason", reason, "samples", req.samples, "suppressed", suppressed)
			}
			return &rejectedError{err: err}
		}
		wait := bo.wait(retryable.After)
		s.lastRetry.Store(time.Now().UnixNano())
		s.metrics.samplesRetried.Add(float64(req.samples))
		if ok, suppressed := s.retryLog.allow(time.Now()); ok {
			log.Warn("remote write failed, retrying", "err", err,
				"attempt", attempt, "wait", wait, "samples", req.samples, "suppressed", suppressed)
		}
		// The keepalive calls InProgress on this message while we wait.
		if !sleep(ctx, wait) {
			return errGaveUp
		}
	}
}

// checkWritten compares what a 2.0 backend says it wrote with what the
// request held, and counts the difference as failed: the backend answered
// 2xx, so sending again would not help.
func (s *Sink) checkWritten(req request, w written, log *slog.Logger) {
	short := int64(req.samples) - (w.samples + w.histograms)
	if short <= 0 {
		return
	}
	s.metrics.samplesFailed.WithLabelValues("partial_write").Add(float64(short))
	if ok, suppressed := s.dropLog.allow(time.Now()); ok {
		log.Warn("backend wrote fewer samples than sent", "sent", req.samples,
			"samples_written", w.samples, "histograms_written", w.histograms, "suppressed", suppressed)
	}
}

func (s *Sink) protocol() protocol { return protocol(s.proto.Load()) }

// fallBackToV1 switches the sink to remote write 1.0 for good, once.
func (s *Sink) fallBackToV1(cause error, log *slog.Logger) {
	if s.proto.CompareAndSwap(int32(protoV2), int32(protoV1)) {
		s.metrics.protocolFallback.Inc()
		log.Warn("backend does not take remote write 2.0, falling back to 1.0", "err", cause)
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
