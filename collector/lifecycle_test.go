package collector

import (
	"context"
	"errors"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// TestRunAndClose checks the lifecycle: Run ends with its context or with
// Close, Close is idempotent, and nothing runs after either.
func TestRunAndClose(t *testing.T) {
	nc, js := startJetStream(t)
	srv := httptest.NewServer(fixtures.Handler(fixtures.KubeletEndpoints, time.Now))
	t.Cleanup(srv.Close)
	cfg := testConfig(targetAt(srv.URL+"/metrics/probes", proto.SourceProbes, ""))

	t.Run("close before run", func(t *testing.T) {
		c, err := New(cfg, newDeps(t, nc, js, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := c.Run(t.Context()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Run after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("close while running", func(t *testing.T) {
		c, err := New(cfg, newDeps(t, nc, js, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Run(t.Context()) }()
		time.Sleep(300 * time.Millisecond) // let it scrape
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run = %v, want nil", err)
			}
		case <-time.After(time.Second):
			t.Fatal("Run did not return when Close did")
		}
		if err := c.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
		if err := c.Run(t.Context()); err == nil {
			t.Fatal("Run after Close: no error")
		}
	})
	t.Run("context ends", func(t *testing.T) {
		c, err := New(cfg, newDeps(t, nc, js, nil, nil))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		if err := c.Run(ctx); err != nil {
			t.Fatalf("Run = %v, want nil", err)
		}
		if err := c.Run(t.Context()); err == nil {
			t.Fatal("second Run: no error")
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOffsetIsStableAndWithinInterval(t *testing.T) {
	cfg := testConfig()
	cfg.ScrapeInterval = 15 * time.Second
	for i, u := range []string{"https://10.0.0.1:10250/metrics", "https://10.0.0.1:10250/metrics/cadvisor", "http://10.0.0.2:10249/metrics"} {
		l := &loop{loopConfig: loopConfig{target: cfg.resolve(targetAt(u, proto.SourceKubelet, "node-"+strconv.Itoa(i)), "")}}
		now := time.Now()
		off := l.offset(now)
		if off < 0 || off >= cfg.ScrapeInterval {
			t.Fatalf("%s: offset %s outside [0, %s)", u, off, cfg.ScrapeInterval)
		}
		// The phase in the interval does not depend on when the loop starts.
		later := now.Add(7 * time.Second)
		phase := now.Add(off).UnixNano() % int64(cfg.ScrapeInterval)
		if p := later.Add(l.offset(later)).UnixNano() % int64(cfg.ScrapeInterval); p != phase {
			t.Errorf("%s: phase %d then %d", u, phase, p)
		}
	}
}
