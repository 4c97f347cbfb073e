package collector

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// TestBodyBufferFollowsTheTarget checks that a target answering without
// Content-Length, as a kubelet does, costs a buffer about the size of its
// answer, not the twice that reading it grew, and that a buffer follows
// the answers down when they shrink; and that it is let go once the body
// is parsed.
func TestBodyBufferFollowsTheTarget(t *testing.T) {
	var size atomic.Int64
	size.Store(1 << 20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.(http.Flusher).Flush() // chunked: no Content-Length
		_, _ = w.Write(bytes.Repeat([]byte{'#'}, int(size.Load())))
	}))
	defer srv.Close()
	s := newScraper(DefaultConfig().resolve(targetAt(srv.URL+"/metrics", proto.SourceKubelet, "n"), ""))
	defer s.close()
	fetch := func() {
		t.Helper()
		var body []byte
		err := s.fetch(context.Background(), func(r io.Reader, _ string) (err error) {
			body, err = s.readAll(r)
			return err
		})
		if err != nil || len(body) != int(size.Load()) {
			t.Fatalf("fetch: %d bytes, %v; want %d", len(body), err, size.Load())
		}
	}
	for range 3 {
		fetch()
	}
	if n := int(size.Load()); s.body.Cap() > n+n/bodyRoom {
		t.Errorf("buffer of %d bytes for answers of %d", s.body.Cap(), n)
	}
	size.Store(64 << 10)
	fetch()
	fetch()
	if n := int(size.Load()); s.body.Cap() > n+n/bodyRoom {
		t.Errorf("buffer of %d bytes once answers shrank to %d", s.body.Cap(), n)
	}
	s.release()
	if s.body.Cap() != 0 {
		t.Errorf("released scraper holds a buffer of %d bytes", s.body.Cap())
	}
	fetch()
	if n := int(size.Load()); s.body.Cap() < n || s.body.Cap() > n+n/bodyRoom {
		t.Errorf("buffer of %d bytes after a release, for answers of %d", s.body.Cap(), n)
	}
}

// TestBodyCutShort: a connection lost in the middle of a body fails the
// scrape as an HTTP failure, not a parse error of the lines it cut, and
// none of the lines read before it are kept.
func TestBodyCutShort(t *testing.T) {
	body := fixtures.Read(fixtures.Cadvisor135)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close() // before the last chunk
		}
	}))
	defer srv.Close()
	s := newScraper(DefaultConfig().resolve(targetAt(srv.URL+"/metrics/cadvisor", proto.SourceCadvisor, "n"), ""))
	defer s.close()
	p := newParser(testTargetLabels)
	var batch []proto.LabeledSample
	err := s.fetch(context.Background(), func(r io.Reader, _ string) error {
		_, err := p.parseStream(&batch, r, scrapeAt)
		return err
	})
	if reasonOf(err) != reasonHTTP || !strings.Contains(fmt.Sprint(err), "read body") {
		t.Fatalf("err = %v (reason %s), want a read body error of reason %s", err, reasonOf(err), reasonHTTP)
	}
	if len(batch) != 0 {
		t.Errorf("%d samples kept from a body cut short", len(batch))
	}
}

// TestScrapeTimeoutTimesTheTarget: as Prometheus's, the scrape timeout is
// the time spent waiting for the target. A collector that parses slowly a
// body that came at once, as on a busy node, still scrapes it; a target
// that answers slowly in total, even in quick pieces, or that stops in the
// middle, fails the scrape as a timeout.
func TestScrapeTimeoutTimesTheTarget(t *testing.T) {
	const timeout = 150 * time.Millisecond
	body := fixtures.Read(fixtures.Cadvisor135)
	serve := func(pieces int, pause time.Duration, stall bool) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			for i := range pieces {
				_, _ = w.Write(body[i*len(body)/pieces : (i+1)*len(body)/pieces])
				w.(http.Flusher).Flush()
				time.Sleep(pause)
			}
			if stall {
				<-r.Context().Done()
			}
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	// slowParse reads 16 KiB at a time and works 10 ms after each read:
	// about 0.8 s for the capture, five times the timeout.
	slowParse := func(r io.Reader, _ string) error {
		buf := make([]byte, 16<<10)
		for {
			_, err := r.Read(buf)
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	quickParse := func(r io.Reader, _ string) error {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	cases := []struct {
		name       string
		url        string
		parse      func(io.Reader, string) error
		wantReason string // "" for a scrape that succeeds
	}{
		{"answer at once, slow parse", serve(1, 0, false), slowParse, ""},
		{"answer in 8 pieces 30 ms apart", serve(8, 30*time.Millisecond, false), quickParse, reasonTimeout},
		{"answer stops in the middle, slow parse", serve(2, 0, true), slowParse, reasonTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			target := targetAt(tc.url+"/metrics/cadvisor", proto.SourceCadvisor, "n")
			target.Timeout = timeout
			s := newScraper(DefaultConfig().resolve(target, ""))
			defer s.close()
			start := time.Now()
			err := s.fetch(context.Background(), tc.parse)
			took := time.Since(start)
			if tc.wantReason == "" {
				if err != nil {
					t.Fatalf("fetch after %s: %v; want the body read whole", took, err)
				}
				if took < 2*timeout {
					t.Fatalf("fetch took %s: the parse was not slower than the timeout (%s), the test proves nothing", took, timeout)
				}
				return
			}
			if reasonOf(err) != tc.wantReason || !strings.Contains(fmt.Sprint(err), "deadline exceeded") {
				t.Fatalf("err = %v (reason %s); want a %s failure", err, reasonOf(err), tc.wantReason)
			}
		})
	}
}
