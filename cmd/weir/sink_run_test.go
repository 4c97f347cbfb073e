package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/natstest"
	"github.com/weirmetrics/weir/proto"
)

// countingBackend is a remote-write 1.0 endpoint that counts samples.
type countingBackend struct {
	srv     *httptest.Server
	mu      sync.Mutex
	samples int
}

func newCountingBackend(t *testing.T) *countingBackend {
	b := &countingBackend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		raw, err := snappy.Decode(nil, body)
		var wr prompb.WriteRequest
		if err == nil {
			err = wr.Unmarshal(raw)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		for _, ts := range wr.Timeseries {
			b.samples += len(ts.Samples)
		}
		b.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *countingBackend) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.samples
}

// TestSinkCommandReadsItsRoute runs `weir sink --route` against a real
// NATS server: it creates its route's stream, sends what is published
// there to its backend, and nothing of another route.
func TestSinkCommandReadsItsRoute(t *testing.T) {
	srv := natstest.Run(t)
	_, js := natstest.Connect(t, srv)
	mine, other := newCountingBackend(t), newCountingBackend(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "weir.yaml")
	writeFile(t, path, fmt.Sprintf(`
nats:
  url: %s
streams:
  max_bytes: 64MiB
sinks:
  - name: prom
    route: containers
    listen_address: 127.0.0.1:0
    url: %s/api/v1/write
  - name: vm
    route: nobuckets
    listen_address: 127.0.0.1:0
    url: %s/api/v1/write
`, srv.ClientURL(), mine.srv.URL, other.srv.URL))

	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		exit <- run(ctx, []string{"sink", "--config", path, "--route", "containers"}, io.Discard, &stderr)
	}()
	defer func() {
		cancel()
		select {
		case code := <-exit:
			if code != 0 {
				t.Errorf("weir sink exited %d; stderr:\n%s", code, stderr.String())
			}
		case <-time.After(20 * time.Second):
			t.Error("weir sink did not stop within 20s of its context ending")
		}
	}()

	streams := proto.DefaultStreamsConfig()
	streams.MaxBytes = 64 << 20
	waitUntil(t, 10*time.Second, "the sink creates its route's stream", func() bool {
		_, err := js.Stream(context.Background(), proto.RouteStreamName("containers"))
		return err == nil
	})
	if _, err := js.CreateStream(context.Background(), streams.RouteStream("nobuckets")); err != nil {
		t.Fatal(err)
	}
	series := []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: "container_cpu_usage_seconds_total"}, {Name: "pod", Value: "a"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
	}}
	for _, route := range []string{"containers", "nobuckets"} {
		for n := range 5 {
			subj := proto.Subject{Stage: proto.StageRoute, Route: route, Cluster: "c", Node: fmt.Sprintf("n%d", n), Source: proto.SourceCadvisor}
			chunks, err := proto.EncodeChunks(proto.DefaultEncoding, series, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			msg := nats.NewMsg(subj.String())
			proto.Meta{MsgID: proto.MsgID(subj, 1, 0), Encoding: proto.DefaultEncoding.Name(), ScrapeMillis: 1, Chunk: 0, Chunks: 1, Samples: chunks[0].Samples}.SetHeaders(msg.Header)
			msg.Data = chunks[0].Payload
			if _, err := js.PublishMsg(context.Background(), msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitUntil(t, 15*time.Second, "5 samples at the route's backend", func() bool { return mine.count() >= 5 })
	time.Sleep(200 * time.Millisecond) // room for a sample that must not come
	if got := mine.count(); got != 5 {
		t.Errorf("route containers' backend got %d samples, want 5", got)
	}
	if got := other.count(); got != 0 {
		t.Errorf("the other route's backend got %d samples from a sink it is not configured for", got)
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
