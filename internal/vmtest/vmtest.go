// Package vmtest starts a real single-node VictoriaMetrics (Debian's
// package victoria-metrics) and reads back what it stored, as a user would.
package vmtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/weirmetrics/weir/internal/promtest"
)

// VictoriaMetrics is a running server.
type VictoriaMetrics struct {
	URL      string // base URL, e.g. http://127.0.0.1:41234
	WriteURL string // Prometheus remote-write endpoint
}

// Start runs VictoriaMetrics with its storage in a temporary directory,
// and stops it when the test ends. Where the program is missing the test
// is skipped, except under CI=true, where it fails (promtest.Binary).
func Start(t testing.TB) *VictoriaMetrics {
	t.Helper()
	bin := promtest.Binary(t, "victoria-metrics")
	dir := t.TempDir()
	addr := promtest.FreePort(t)
	cmd := exec.Command(bin,
		"-httpListenAddr="+addr,
		"-storageDataPath="+filepath.Join(dir, "data"),
		"-retentionPeriod=100y", // captures may carry old timestamps
		"-search.latencyOffset=0s",
		"-search.disableCache",
		"-loggerLevel=WARN",
	)
	vm := &VictoriaMetrics{URL: "http://" + addr, WriteURL: "http://" + addr + "/api/v1/write"}
	promtest.StartProcess(t, "victoria-metrics", dir, vm.URL+"/health", cmd)
	return vm
}

// Series is one series of an export, with its raw samples.
type Series struct {
	Labels     map[string]string
	Values     []float64
	Timestamps []int64 // Unix milliseconds
}

// Export returns the raw samples of every series matching the selector,
// after making what was just written searchable.
func (vm *VictoriaMetrics) Export(selector string) ([]Series, error) {
	resp, err := http.Get(vm.URL + "/internal/force_flush")
	if err != nil {
		return nil, fmt.Errorf("force flush: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	q := url.Values{"match[]": {selector}, "start": {"0"}}
	resp, err = http.Get(vm.URL + "/api/v1/export?" + q.Encode())
	if err != nil {
		return nil, fmt.Errorf("export %s: %w", selector, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("export %s: %s: %s", selector, resp.Status, body)
	}
	var out []Series
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var line struct {
			Metric     map[string]string `json:"metric"`
			Values     []any             `json:"values"`
			Timestamps []int64           `json:"timestamps"`
		}
		if err := json.Unmarshal(quoteSpecials(sc.Bytes()), &line); err != nil {
			return nil, fmt.Errorf("export %s: %w in %q", selector, err, sc.Text())
		}
		s := Series{Labels: line.Metric, Timestamps: line.Timestamps}
		for _, v := range line.Values {
			s.Values = append(s.Values, number(v))
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("export %s: %w", selector, err)
	}
	return out, nil
}

// quoteSpecials quotes the values JSON cannot hold, which the export
// writes bare (NaN, +Inf, -Inf), so that the line decodes. Only the values
// array holds them; label values are left alone.
func quoteSpecials(line []byte) []byte {
	start := bytes.Index(line, []byte(`"values":[`))
	if start < 0 {
		return line
	}
	start += len(`"values":[`)
	end := bytes.IndexByte(line[start:], ']')
	if end < 0 {
		return line
	}
	end += start
	values := line[start:end]
	for _, tok := range []string{"NaN", "+Inf", "-Inf"} {
		values = bytes.ReplaceAll(values, []byte(tok), []byte(`"`+tok+`"`))
	}
	return slices.Concat(line[:start], values, line[end:])
}

// number reads an exported value: a JSON number, or a string such as
// "NaN" or "Inf" for what JSON cannot hold.
func number(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case string:
		switch x {
		case "Inf", "+Inf":
			return math.Inf(1)
		case "-Inf":
			return math.Inf(-1)
		}
	}
	return math.NaN()
}
