package collector

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/weirmetrics/weir/proto"
)

// HTTP settings of every scrape.
const (
	// defaultMaxBodyBytes bounds what one scrape may read, decompressed.
	// The largest cAdvisor answers of busy nodes are a few tens of MiB.
	defaultMaxBodyBytes = 64 << 20
	// acceptHeader asks for the Prometheus text format, which every
	// kubelet and kube-proxy serves, and takes anything else the parser
	// knows rather than a 406.
	acceptHeader = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
	// drainBytes is how much of an unread body is read before closing it,
	// so that a short error page does not cost the connection.
	drainBytes = 4 << 10
	// bodyRoom is the share of the last body a body buffer is sized to
	// hold above it: answers of a target vary a little from scrape to
	// scrape.
	bodyRoom = 8 // 1/8 of the last body
)

var userAgent = "weir-collector/" + moduleVersion()

func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// scrapeError is a failed scrape with the reason it is counted under.
type scrapeError struct {
	reason string
	err    error
}

func (e *scrapeError) Error() string { return e.err.Error() }
func (e *scrapeError) Unwrap() error { return e.err }

func failure(reason string, err error) error { return &scrapeError{reason: reason, err: err} }

// reasonOf returns the failure reason of an error from a scrape.
func reasonOf(err error) string {
	if se, ok := errors.AsType[*scrapeError](err); ok {
		return se.reason
	}
	return reasonHTTP
}

// errBodyTooLarge is returned when a body exceeds the body limit.
var errBodyTooLarge = errors.New("body too large")

// scraper fetches one target. It keeps its connection from one scrape to
// the next, and the size of its last body, which sizes the next body
// buffer. Not safe for concurrent use.
type scraper struct {
	url          string
	tokenFile    string
	tls          TLSConfig
	timeout      time.Duration
	idleTimeout  time.Duration
	maxBodyBytes int64
	// accept503 takes a 503 answer as a scrape: kube-proxy's /healthz
	// says "unhealthy" with it, and that is what the scrape measures.
	accept503 bool
	// status is the HTTP status of the last fetch.
	status int

	// transport is built at the first scrape rather than in New, which does
	// no I/O; a CA file that cannot be read yet is tried again next scrape.
	transport *http.Transport
	client    *http.Client
	body      bytes.Buffer // until release
	lastBody  int          // length of the last body read whole
	sizeHint  int          // Content-Length of the body being read, if known
	gzip      *gzipReader  // until release
}

// gzipReaders are the gzip readers of the scrapers, reused: a target is
// scraped for milliseconds every interval, and a reader holds about 40 KB
// of decompression state.
var gzipReaders sync.Pool // of *gzipReader

type gzipReader struct {
	buf *bufio.Reader
	gz  *gzip.Reader
}

func newScraper(t target) *scraper {
	return &scraper{
		url:          t.URL.String(),
		tokenFile:    t.BearerTokenFile,
		tls:          t.TLS,
		timeout:      t.timeout,
		idleTimeout:  max(2*t.interval, 90*time.Second),
		maxBodyBytes: cmp.Or(int64(t.opts.BodySizeLimit), defaultMaxBodyBytes),
		accept503:    t.Source == proto.SourceKubeProxyHealth,
	}
}

// close drops the idle connections, whose goroutines would outlive the loop.
func (s *scraper) close() {
	if s.transport != nil {
		s.transport.CloseIdleConnections()
	}
}

// fetch GETs the target within the scrape timeout and calls read with the
// body, decompressed, and its Content-Type. An error reading the body, or a
// body over the limit, is the scrape's error rather than what read made of
// the body it cut short. Errors of fetch are *scrapeError; those of read
// are returned as they are.
func (s *scraper) fetch(ctx context.Context, read func(body io.Reader, contentType string) error) error {
	if s.client == nil {
		tr, err := newTransport(s.tls, s.idleTimeout)
		if err != nil {
			return failure(reasonTLS, err)
		}
		s.transport, s.client = tr, &http.Client{Transport: tr}
	}
	clock := startWaitClock(ctx, s.timeout)
	defer clock.stop()
	req, err := http.NewRequestWithContext(clock.ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return failure(reasonHTTP, err)
	}
	req.Header.Set("Accept", acceptHeader)
	// Set by hand, Go's transport leaves the body compressed: the gzip
	// reader is then ours to reuse, and the body limit applies to the
	// decompressed size.
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", strconv.FormatFloat(s.timeout.Seconds(), 'f', -1, 64))
	if s.tokenFile != "" {
		token, err := readToken(s.tokenFile)
		if err != nil {
			return failure(reasonToken, err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}

	resp, err := s.client.Do(req)
	if err != nil {
		return s.failure(clock, err, err)
	}
	defer func() {
		clock.resume() // the drain waits on the target
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, drainBytes))
		_ = resp.Body.Close()
	}()
	s.status = resp.StatusCode
	if (resp.StatusCode < 200 || resp.StatusCode > 299) && (!s.accept503 || resp.StatusCode != http.StatusServiceUnavailable) {
		return failure(reasonStatus, fmt.Errorf("server returned HTTP status %s", resp.Status))
	}
	if resp.ContentLength > s.maxBodyBytes {
		return failure(reasonBodyTooLarge, fmt.Errorf("%w: Content-Length %d exceeds body_size_limit %d", errBodyTooLarge, resp.ContentLength, s.maxBodyBytes))
	}

	var r io.Reader = resp.Body
	s.sizeHint = 0
	if resp.Header.Get("Content-Encoding") == "gzip" {
		if r, err = s.gunzip(resp.Body); err != nil {
			return s.failure(clock, err, fmt.Errorf("gzip: %w", err))
		}
	} else if resp.ContentLength > 0 {
		s.sizeHint = int(resp.ContentLength)
	}
	body := &bodyReader{r: r, left: s.maxBodyBytes, clock: clock}
	clock.pause() // until read asks for the body
	err = read(body, resp.Header.Get("Content-Type"))
	switch {
	case errors.Is(body.err, errBodyTooLarge):
		return failure(reasonBodyTooLarge, fmt.Errorf("%w: more than body_size_limit %d bytes", errBodyTooLarge, s.maxBodyBytes))
	case body.err != nil:
		return s.failure(clock, body.err, fmt.Errorf("read body: %w", body.err))
	}
	return err
}

// failure is the scrape's error for err, an error of the HTTP client:
// wrapped (err saying what failed) with err's reason, or a timeout when
// the clock ran out, which the client reports as a mere cancellation.
func (s *scraper) failure(clock *waitClock, err, wrapped error) error {
	if clock.expired() {
		return failure(reasonTimeout, fmt.Errorf("no full answer within scrape_timeout (%s) of waiting for the target: %w", s.timeout, context.DeadlineExceeded))
	}
	return failure(classify(err), wrapped)
}

// waitClock is the scrape timeout. Like Prometheus's, it times the wait for
// the target: a text body is parsed as it arrives, and the parsing between
// two reads is left out, so that a collector slowed by a busy node or its
// CPU limit does not fail scrapes whose answer came in time.
type waitClock struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	left   time.Duration // of the timeout, when paused
	since  time.Time     // when it last started; zero when paused
}

// errWaitedTooLong is the cause of a waitClock's context once it ran out.
var errWaitedTooLong = errors.New("scrape timeout")

func startWaitClock(ctx context.Context, timeout time.Duration) *waitClock {
	c := &waitClock{left: timeout, since: time.Now()}
	c.ctx, c.cancel = context.WithCancelCause(ctx)
	c.timer = time.AfterFunc(timeout, func() { c.cancel(errWaitedTooLong) })
	return c
}

// pause stops the clock while the collector, not the target, is working.
func (c *waitClock) pause() {
	if c.since.IsZero() {
		return
	}
	if c.timer.Stop() {
		c.left -= time.Since(c.since)
	}
	c.since = time.Time{}
}

// resume starts the clock again with what is left of the timeout.
func (c *waitClock) resume() {
	if !c.since.IsZero() || c.expired() {
		return
	}
	c.since = time.Now()
	c.timer.Reset(c.left) // at once when nothing is left
}

func (c *waitClock) expired() bool { return context.Cause(c.ctx) == errWaitedTooLong }

func (c *waitClock) stop() {
	c.timer.Stop()
	c.cancel(context.Canceled)
}

// bodyReader reads a body up to its limit, failing at the first byte past
// it, and keeps the error that ended the reading, other than io.EOF. The
// scrape timeout runs only while it waits.
type bodyReader struct {
	r     io.Reader
	left  int64 // bytes the limit still allows
	err   error
	clock *waitClock
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	b.clock.resume()
	n, err := b.r.Read(p)
	b.clock.pause()
	if b.left -= int64(n); b.left < 0 {
		b.err = errBodyTooLarge
		return 0, b.err
	}
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// readAll reads a body whole, for the formats that are not parsed as they
// arrive. The body is valid until release.
func (s *scraper) readAll(r io.Reader) ([]byte, error) {
	s.resetBody()
	if _, err := s.body.ReadFrom(r); err != nil {
		return nil, err
	}
	s.lastBody = s.body.Len()
	return s.body.Bytes(), nil
}

// gunzip returns a reused gzip reader reading body.
func (s *scraper) gunzip(body io.Reader) (io.Reader, error) {
	z, _ := gzipReaders.Get().(*gzipReader)
	if z == nil {
		buf := bufio.NewReader(body)
		gz, err := gzip.NewReader(buf)
		if err != nil {
			return nil, err
		}
		s.gzip = &gzipReader{buf: buf, gz: gz}
		return gz, nil
	}
	s.gzip = z
	z.buf.Reset(body)
	return z.gz, z.gz.Reset(z.buf)
}

// resetBody empties the body buffer and sizes it for the body's
// Content-Length, or else a body a little larger than the last one. A
// kubelet answers gzipped or chunked, with no Content-Length, and reading
// without a size would grow the buffer by doubling, up to twice the body:
// a buffer sized by the last body is allocated once, and one huge answer
// does not pin its memory either.
func (s *scraper) resetBody() {
	want := max(s.lastBody+s.lastBody/bodyRoom, s.sizeHint)
	if c := s.body.Cap(); c < want || c > want+want/2 {
		s.body = *bytes.NewBuffer(make([]byte, 0, want))
		return
	}
	s.body.Reset()
}

// release lets the body buffer go, and gives the gzip reader back, once
// the body is parsed. A target is scraped for milliseconds every interval:
// its buffer, as large as its answers, would otherwise stay in the heap in
// between, and the heap goal of the collector would be twice that.
func (s *scraper) release() {
	s.body = bytes.Buffer{}
	if s.gzip != nil {
		gzipReaders.Put(s.gzip)
		s.gzip = nil
	}
}

// readToken reads a bearer token file. It is read at every scrape, so that
// a token rotated by the kubelet or a projected volume is used at once.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("bearer_token_file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return "", fmt.Errorf("bearer_token_file %s is empty", path)
	}
	return token, nil
}

// newTransport builds the connection pool of one target. A CA file that
// does not hold a certificate is an error: falling back to the system roots
// would hide the mistake until the certificate changes.
func newTransport(c TLSConfig, idleTimeout time.Duration) (*http.Transport, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // opted in by configuration
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls_config.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls_config.ca_file %s: no PEM certificate in it", c.CAFile)
		}
		tc.RootCAs = pool
	}
	return &http.Transport{
		// No proxy from the environment: the targets are on the node, and a
		// cluster-wide HTTPS_PROXY must not reroute kubelet scrapes.
		Proxy:               nil,
		DialContext:         (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:     tc,
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     idleTimeout,
		DisableCompression:  true,
	}, nil
}

// classify returns the failure reason of an error from the HTTP client.
func classify(err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return reasonTimeout
	}
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return reasonTimeout
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return reasonTLS
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return reasonTLS
	}
	if _, ok := errors.AsType[tls.AlertError](err); ok {
		return reasonTLS
	}
	return reasonHTTP
}
