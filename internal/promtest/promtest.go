// Package promtest starts a real Prometheus (Debian's package) with its
// remote-write receiver enabled, and queries it as a user would.
package promtest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Prometheus is a running Prometheus server.
type Prometheus struct {
	URL      string // base URL, e.g. http://127.0.0.1:41234
	WriteURL string // remote-write receiver
	cmd      *exec.Cmd
}

// Binary returns the path of a program the test needs. Where it is missing
// the test is skipped, except under CI=true, where it fails: CI installs it.
func Binary(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found on PATH; the test command installs it (see README)", name)
	}
	t.Skipf("%s not found on PATH; run the test command of the README to install it", name)
	return ""
}

// FreePort returns a loopback address that was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Start runs Prometheus with an empty scrape configuration, its TSDB in a
// temporary directory, and stops it when the test ends.
func Start(t testing.TB) *Prometheus {
	t.Helper()
	bin := Binary(t, "prometheus")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte("global:\n  scrape_interval: 1m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := FreePort(t)
	cmd := exec.Command(bin,
		"--config.file="+cfg,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--web.enable-remote-write-receiver",
		"--log.level=warn",
	)
	p := &Prometheus{URL: "http://" + addr, WriteURL: "http://" + addr + "/api/v1/write", cmd: cmd}
	StartProcess(t, "prometheus", dir, p.URL+"/-/ready", cmd)
	return p
}

// Sample is one series of an instant vector.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Key is the series in the Prometheus text form, labels sorted.
func (s Sample) Key() string { return SeriesKey(s.Labels) }

// SeriesKey writes a label set as name{a="1",b="2"}, sorted, without
// __name__ among the braces, so that two label sets compare as strings.
func SeriesKey(ls map[string]string) string {
	names := make([]string, 0, len(ls))
	for n := range ls {
		if n != "__name__" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(ls["__name__"])
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s=%q", n, ls[n])
	}
	b.WriteByte('}')
	return b.String()
}

// Query runs an instant query at time at.
func (p *Prometheus) Query(q string, at time.Time) ([]Sample, error) {
	v := url.Values{"query": {q}, "time": {strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)}}
	resp, err := http.PostForm(p.URL+"/api/v1/query", v)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("query %q: decode: %w", q, err)
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, body.Error)
	}
	out := make([]Sample, 0, len(body.Data.Result))
	for _, r := range body.Data.Result {
		s, _ := r.Value[1].(string)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %q: value %q: %w", q, s, err)
		}
		out = append(out, Sample{Labels: r.Metric, Value: f})
	}
	return out, nil
}
