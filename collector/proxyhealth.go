package collector

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/weirmetrics/weir/collector/summary"
)

// Metrics of kube-proxy's /healthz (the up series comes with every scrape).
const (
	// proxyHealthyMetric is 1 when kube-proxy answers 200, 0 when it
	// answers 503: its rules are older than its healthz timeout.
	proxyHealthyMetric = "kubeproxy_healthz_healthy"
	// proxyAgeMetric is how long ago kube-proxy last synced its rules,
	// by kube-proxy's own clock (currentTime - lastUpdated), so that clock
	// skew between nodes does not enter it.
	proxyAgeMetric = "kubeproxy_healthz_last_updated_age_seconds"
	// proxyLastUpdatedMetric is when kube-proxy last synced its rules.
	proxyLastUpdatedMetric = "kubeproxy_healthz_last_updated_timestamp_seconds"
)

// proxyHealth is kube-proxy's /healthz answer.
type proxyHealth struct {
	LastUpdated string `json:"lastUpdated"`
	CurrentTime string `json:"currentTime"`
}

// proxyHealthSamples converts a /healthz answer with HTTP status to
// samples appended to dst.
func proxyHealthSamples(dst []summary.Sample, body []byte, status int) ([]summary.Sample, error) {
	var h proxyHealth
	if err := json.Unmarshal(body, &h); err != nil {
		return dst, fmt.Errorf("kube-proxy healthz: %w", err)
	}
	if h.LastUpdated == "" || h.CurrentTime == "" {
		return dst, errors.New("kube-proxy healthz: lastUpdated or currentTime missing: not a kube-proxy /healthz answer")
	}
	last, err := parseProxyTime(h.LastUpdated)
	if err != nil {
		return dst, fmt.Errorf("kube-proxy healthz: lastUpdated: %w", err)
	}
	now, err := parseProxyTime(h.CurrentTime)
	if err != nil {
		return dst, fmt.Errorf("kube-proxy healthz: currentTime: %w", err)
	}
	healthy := 0.0
	if status == http.StatusOK {
		healthy = 1
	}
	add := func(name string, v float64) {
		dst = append(dst, summary.Sample{Labels: labels.FromStrings(labels.MetricName, name), Value: v})
	}
	add(proxyHealthyMetric, healthy)
	// A kube-proxy that never synced reports Go's zero time: it has no
	// age, and an age of two thousand years would only break graphs.
	if !last.IsZero() {
		add(proxyAgeMetric, now.Sub(last).Seconds())
		add(proxyLastUpdatedMetric, float64(last.UnixNano())/1e9)
	}
	return dst, nil
}

// parseProxyTime reads kube-proxy's times: RFC 3339 from the JSON encoder
// of newer releases, Go's time.String() (with its monotonic "m=+…" suffix)
// from the fmt.Fprintf of older ones.
func parseProxyTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if i := strings.Index(s, " m="); i >= 0 {
		s = s[:i]
	}
	t, err := time.Parse("2006-01-02 15:04:05.999999999 -0700 MST", s)
	if err != nil {
		return time.Time{}, fmt.Errorf("time %q: neither RFC 3339 nor Go's time format", truncate(s, 64))
	}
	return t, nil
}
