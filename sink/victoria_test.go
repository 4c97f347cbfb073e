package sink

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/internal/promtest"
	"github.com/weirmetrics/weir/proto"
)

// startVictoria runs the Debian VictoriaMetrics single-node server until
// the test ends and returns its base URL.
func startVictoria(t *testing.T) string {
	t.Helper()
	bin := promtest.Binary(t, "victoria-metrics")
	dir := t.TempDir()
	addr := promtest.FreePort(t)
	logFile, err := os.Create(filepath.Join(dir, "vm.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-httpListenAddr="+addr, "-storageDataPath="+filepath.Join(dir, "data"), "-loggerLevel=WARN")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start victoria-metrics: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logFile.Close()
	})
	base := "http://" + addr
	waitFor(t, 30*time.Second, "victoria-metrics healthy", func() bool {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return base
}

// victoriaSamples counts the samples VictoriaMetrics holds for match.
func victoriaSamples(t *testing.T, base, match string) int {
	t.Helper()
	if resp, err := http.Get(base + "/internal/force_flush"); err == nil {
		resp.Body.Close()
	}
	resp, err := http.Get(base + "/api/v1/export?match[]=" + url.QueryEscape(match))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// Only the timestamps are read: VictoriaMetrics writes +Inf unquoted
		// among the values, which is not JSON.
		_, ts, ok := strings.Cut(sc.Text(), `"timestamps":`)
		if !ok {
			t.Fatalf("export line without timestamps: %q", sc.Text())
		}
		var stamps []int64
		if err := json.Unmarshal([]byte(strings.TrimSuffix(strings.TrimSpace(ts), "}")), &stamps); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		n += len(stamps)
	}
	return n
}

// TestRemoteWrite2ToVictoriaMetrics: the Debian VictoriaMetrics answers a
// 2.0 message 204 without the written-samples headers, as a 1.0 receiver;
// the sink falls back and every sample is stored.
func TestRemoteWrite2ToVictoriaMetrics(t *testing.T) {
	vm := startVictoria(t)
	env := newEnv(t)
	series := captureSeries(t, fixtures.KubeProxy121, scrapeMillis)
	millis := time.Now().Add(-time.Minute).UnixMilli()
	var seq uint64
	for i := range 3 {
		at := millis + int64(i)*15_000
		seq = env.publishScrape(t, subject("node-1", proto.SourceKubeProxy), at, forTarget(stamped(series, at), "vm"))
	}
	cfg := testConfig("v2-vm", vm+"/api/v1/write")
	cfg.ProtobufMessage = MessageV2
	s, _ := env.startSink(t, cfg)
	env.waitAcked(t, "v2-vm", seq)

	want := 3 * len(series)
	var got int
	waitFor(t, 10*time.Second, "every sample in VictoriaMetrics", func() bool {
		got = victoriaSamples(t, vm, `{zz_target="vm"}`)
		return got >= want
	})
	if got != want {
		t.Errorf("VictoriaMetrics holds %d samples, want %d", got, want)
	}
	if f := metricValue(t, s.metrics.protocolFallback); f != 1 {
		t.Errorf("fallbacks = %v, want 1", f)
	}
}
