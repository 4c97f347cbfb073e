package alerter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/prompb"
	"go.uber.org/goleak"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/promtest"
	"github.com/weirmetrics/weir/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/golang/glog.(*fileSink).flushDaemon"))
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// alertmanager is a real Alertmanager behind a proxy that counts the
// alerts posted to it.
type alertmanager struct {
	url    string // the proxy
	direct string
	posts  atomic.Int64
	mu     sync.Mutex
	posted [][]amAlert
}

func startAlertmanager(t *testing.T) *alertmanager {
	t.Helper()
	bin := promtest.Binary(t, "prometheus-alertmanager")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "am.yml")
	conf := "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := promtest.FreePort(t)
	cmd := exec.Command(bin, "--config.file="+cfg, "--storage.path="+dir, "--web.listen-address="+addr,
		"--cluster.listen-address=", "--log.level=warn")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	am := &alertmanager{direct: "http://" + addr}
	waitFor(t, 15*time.Second, "alertmanager ready", func() bool {
		resp, err := http.Get(am.direct + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	target, _ := url.Parse(am.direct)
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/api/v2/alerts" {
			body, _ := io.ReadAll(r.Body)
			var alerts []amAlert
			_ = json.Unmarshal(body, &alerts)
			am.mu.Lock()
			am.posted = append(am.posted, alerts)
			am.mu.Unlock()
			am.posts.Add(1)
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			r.ContentLength = int64(len(body))
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	am.url = srv.URL
	return am
}

// gettableAlert is what Alertmanager's GET /api/v2/alerts returns.
type gettableAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
	Status      struct {
		State string `json:"state"`
	} `json:"status"`
}

func (am *alertmanager) alerts(t *testing.T) []gettableAlert {
	t.Helper()
	resp, err := http.Get(am.direct + "/api/v2/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []gettableAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testKubelet serves the real kubelet /metrics capture with the kubelet's
// resident memory set by the test.
type testKubelet struct {
	srv    *httptest.Server
	memory atomic.Int64
}

func startKubelet(t *testing.T) *testKubelet {
	k := &testKubelet{}
	k.memory.Store(111575040)
	capture := string(fixtures.Read(fixtures.Kubelet121))
	const line = "process_resident_memory_bytes 1.1157504e+08"
	if !strings.Contains(capture, line) {
		t.Fatalf("capture %s lacks %q", fixtures.Kubelet121, line)
	}
	k.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := strings.Replace(capture, line, fmt.Sprintf("process_resident_memory_bytes %d", k.memory.Load()), 1)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(k.srv.Close)
	return k
}

// relay stands in for the enricher: it copies every WEIR_RAW message to
// its weir.enriched subject, headers (and so the message id) unchanged.
func relay(ctx context.Context, t *testing.T, js jetstream.JetStream) func() {
	cons, err := js.CreateOrUpdateConsumer(ctx, proto.StreamRaw, proto.ConsumerConfig("test-relay", proto.StreamFilter(proto.StageRaw), 30*time.Second, 1000))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		s, err := proto.ParseSubject(m.Subject())
		if err != nil {
			_ = m.Term()
			return
		}
		s.Stage, s.Partitioned = proto.StageEnriched, false
		out := nats.NewMsg(s.String())
		out.Header = m.Headers()
		out.Data = m.Data()
		if _, err := js.PublishMsg(ctx, out); err != nil {
			_ = m.Nak()
			return
		}
		_ = m.Ack()
	})
	if err != nil {
		t.Fatal(err)
	}
	return cc.Stop
}

func writeFile(t testing.TB, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// publishLoop publishes one sample of metric on node every 100ms to
// weir.enriched, encoded as a collector would, until ctx ends.
func publishLoop(ctx context.Context, t *testing.T, js jetstream.JetStream, node, metric string, value float64) {
	subj := proto.Subject{Stage: proto.StageEnriched, Cluster: "c1", Node: node, Source: proto.SourceKubelet}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		now := time.Now().UnixMilli()
		b := proto.Batch{Series: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: metric}, {Name: "job", Value: "kubelet"}},
			Samples: []prompb.Sample{{Timestamp: now, Value: value}},
		}}}
		payload, err := proto.DefaultEncoding.Append(nil, &b)
		if err != nil {
			t.Error(err)
			return
		}
		m := nats.NewMsg(subj.String())
		m.Data = payload
		proto.Meta{MsgID: proto.MsgID(subj, now, 0), Encoding: proto.DefaultEncoding.Name(), ScrapeMillis: now, Chunks: 1, Samples: 1}.SetHeaders(m.Header)
		if _, err := js.PublishMsg(ctx, m); err != nil && ctx.Err() == nil {
			t.Error(err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
