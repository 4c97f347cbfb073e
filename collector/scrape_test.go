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
