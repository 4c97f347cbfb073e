package collector

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/collector/summary"
	"github.com/weirmetrics/weir/internal/config"
	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// TestLimits exceeds each limit: the scrape fails with an error naming
// the limit and the value, under the limit's reason, and nothing of it is
// kept.
func TestLimits(t *testing.T) {
	body := []byte("a{x=\"1\"} 1\na{x=\"2\"} 2\nb{long_label_name=\"a-value-of-twenty-chars\"} 3\n")
	tests := []struct {
		name       string
		limits     limits
		wantReason string
		wantMsg    string
	}{
		{"sample_limit", limits{sample: 2}, reasonSampleLimit, "sample_limit exceeded: more than 2 samples (limit 2)"},
		{"label_limit", limits{label: 3}, reasonLabelLimit, "label_limit exceeded (metric: a, number of labels: 4, limit: 3)"},
		{"label_name_length_limit", limits{labelNameLength: 10}, reasonLabelNameLengthLimit, "label_name_length_limit exceeded (metric: b, label name: long_label_name, length: 15, limit: 10)"},
		{"label_value_length_limit", limits{labelValueLength: 16}, reasonLabelValueLengthLimit, `label_value_length_limit exceeded (metric: b, label name: long_label_name, value: "a-value-of-twenty-chars", length: 23, limit: 16)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newParserWith(testTargetLabels, parseOptions{honorTimestamps: true, limits: tt.limits})
			var b []proto.LabeledSample
			_, err := p.parse(&b, body, textType, scrapeAt)
			le, ok := errors.AsType[*limitError](err)
			if !ok {
				t.Fatalf("err = %v, want a limit error", err)
			}
			if le.reason != tt.wantReason || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q (reason %s), want %q (reason %s)", err, le.reason, tt.wantMsg, tt.wantReason)
			}
			if len(b) != 0 {
				t.Errorf("a failed scrape kept %d series", len(b))
			}
		})
		t.Run(tt.name+" not reached", func(t *testing.T) {
			lim := tt.limits
			lim.sample, lim.label, lim.labelNameLength, lim.labelValueLength = lim.sample*2, lim.label*2, lim.labelNameLength*2, lim.labelValueLength*2
			p := newParserWith(testTargetLabels, parseOptions{honorTimestamps: true, limits: lim})
			if n, err := p.parse(new([]proto.LabeledSample), body, textType, scrapeAt); err != nil || n != 3 {
				t.Fatalf("parse = %d, %v; want 3 samples", n, err)
			}
		})
	}
}

// TestMetricRelabelConfigs loads metric_relabel_configs from YAML written
// as for Prometheus and checks drop, replace and labeldrop, after the
// target labels are added.
func TestMetricRelabelConfigs(t *testing.T) {
	var opts ScrapeOptions
	yaml := `
metric_relabel_configs:
  - source_labels: [__name__]
    regex: container_tasks_state|container_memory_failures_total
    action: drop
  - source_labels: [job, id]
    separator: ;
    regex: kubelet;/
    target_label: scope
    replacement: node
  - regex: image|name
    action: labeldrop
`
	if err := config.Decode("weir.yaml", []byte(yaml), &opts); err != nil {
		t.Fatal(err)
	}
	var errs []string
	opts.validate("", func(f string, a ...any) { errs = append(errs, f) })
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	p := newParserWith(testTargetLabels, parseOptions{honorTimestamps: true, relabel: opts.MetricRelabelConfigs})
	var samples []proto.LabeledSample
	n, err := p.parse(&samples, fixtures.Read(fixtures.Cadvisor135), textType, scrapeAt)
	if err != nil {
		t.Fatal(err)
	}
	b := asBatch(samples)
	if n != 4621 {
		t.Errorf("scraped %d samples, want the capture's 4621 (before relabeling)", n)
	}
	if want := 4621 - 290 - 232; len(b.Series) != want {
		t.Errorf("kept %d series, want %d (tasks_state and memory_failures dropped)", len(b.Series), want)
	}
	for _, ts := range b.Series {
		m := labelMap(ts.Labels)
		if m["__name__"] == "container_tasks_state" {
			t.Fatal("dropped metric kept")
		}
		if _, ok := m["image"]; ok {
			t.Fatalf("labeldrop left image in %v", m)
		}
		if (m["id"] == "/") != (m["scope"] == "node") {
			t.Fatalf("replace: id=%q scope=%q", m["id"], m["scope"])
		}
	}
	// Loading a bad rule is a config error naming the rule.
	if err := config.Decode("weir.yaml", []byte("metric_relabel_configs:\n  - action: replace\n    regex: \"(\"\n"), &opts); err == nil || !strings.Contains(err.Error(), "error parsing regexp") {
		t.Errorf("bad regex: err = %v, want a regexp error", err)
	}
}

// relabelParser returns a parser with the metric_relabel_configs of yaml.
func relabelParser(t *testing.T, yaml string) *parser {
	t.Helper()
	var opts ScrapeOptions
	if err := config.Decode("weir.yaml", []byte(yaml), &opts); err != nil {
		t.Fatal(err)
	}
	return newParserWith(testTargetLabels, parseOptions{honorTimestamps: true, relabel: opts.MetricRelabelConfigs})
}

// TestRelabelingThatMergesSeriesKeepsTheFirst: metric_relabel_configs can
// give two series of a scrape the same labels. As Prometheus, the first
// sample is published and the others are counted as duplicates, scrape
// after scrape, and the merged series gets one staleness marker.
func TestRelabelingThatMergesSeriesKeepsTheFirst(t *testing.T) {
	p := relabelParser(t, "metric_relabel_configs:\n  - regex: id\n    action: labeldrop\n")
	var b []proto.LabeledSample
	scrape := func(body string, at int64, want ...string) {
		t.Helper()
		b = b[:0]
		if _, err := p.parse(&b, []byte(body), textType, at); err != nil {
			t.Fatal(err)
		}
		if got := sampleText(asBatch(b)); !slices.Equal(got, want) {
			t.Fatalf("scrape at %d:\n%s\nwant\n%s", at, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	const tl = `instance="10.0.0.1:10250", job="kubelet"`
	// c without an id, first, is the series c{id="z"} becomes.
	body := "a{id=\"x\"} %d\na{id=\"y\"} %d\nb %d\nc %d\nc{id=\"z\"} %d\n"
	scrape(fmt.Sprintf(body, 1, 2, 3, 5, 6), 1000,
		`{__name__="a", `+tl+`} 1 @1000`, `{__name__="b", `+tl+`} 3 @1000`, `{__name__="c", `+tl+`} 5 @1000`)
	if p.duplicates != 2 {
		t.Errorf("%d duplicates counted, want 2", p.duplicates)
	}
	// The same lines again, read by the known-lines path.
	scrape(fmt.Sprintf(body, 10, 20, 30, 50, 60), 2000,
		`{__name__="a", `+tl+`} 10 @2000`, `{__name__="b", `+tl+`} 30 @2000`, `{__name__="c", `+tl+`} 50 @2000`)
	if p.duplicates != 2 {
		t.Errorf("second scrape: %d duplicates counted, want 2", p.duplicates)
	}
	// Moved to new blocks, the texts still find their series.
	p.compactTexts()
	scrape(fmt.Sprintf(body, 11, 21, 31, 51, 61), 2500,
		`{__name__="a", `+tl+`} 11 @2500`, `{__name__="b", `+tl+`} 31 @2500`, `{__name__="c", `+tl+`} 51 @2500`)
	// Only the later text of a is left: it is a's sample now. Both texts of
	// c are gone: one marker.
	scrape("a{id=\"y\"} 200\nb 300\n", 3000,
		`{__name__="a", `+tl+`} 200 @3000`, `{__name__="b", `+tl+`} 300 @3000`, `{__name__="c", `+tl+`} NaN @3000`)
	scrape("b 400\n", 4000,
		`{__name__="b", `+tl+`} 400 @4000`, `{__name__="a", `+tl+`} NaN @4000`)
	if len(p.cache) != 1 || p.aliases != 0 || len(p.byLabels) != 1 {
		t.Errorf("after a and c went: %d cached texts, %d aliases, %d indexed series; want b alone", len(p.cache), p.aliases, len(p.byLabels))
	}
	scrape("a{id=\"x\"} 7\na{id=\"y\"} 8\nb 9\n", 5000, `{__name__="a", `+tl+`} 7 @5000`, `{__name__="b", `+tl+`} 9 @5000`)
	b = b[:0]
	if n := p.staleAll(&b, 6000); n != 2 {
		t.Errorf("a failed scrape marked %d series stale, want a and b: %v", n, sampleText(asBatch(b)))
	}
}

// TestRelabelingThatMergesCadvisorSeries drops the labels that tell
// cAdvisor's containers apart: hundreds of series merge, and none is
// published twice, from the first scrape or from the known lines.
func TestRelabelingThatMergesCadvisorSeries(t *testing.T) {
	p := relabelParser(t, "metric_relabel_configs:\n  - regex: id|name|image\n    action: labeldrop\n")
	body := fixtures.Read(fixtures.Cadvisor135)
	var published []string
	for i, at := range []int64{scrapeAt, scrapeAt + 15_000} {
		var b []proto.LabeledSample
		n, err := p.parse(&b, body, textType, at)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		var series []string
		for _, ts := range asBatch(b).Series {
			k := labelsKey(ts.Labels)
			if seen[k] {
				t.Fatalf("scrape %d: %s published twice", i, k)
			}
			if value.IsStaleNaN(ts.Samples[0].Value) {
				t.Fatalf("scrape %d: %s marked stale", i, k)
			}
			seen[k] = true
			series = append(series, k)
		}
		if p.duplicates == 0 || p.duplicates != n-len(b) {
			t.Errorf("scrape %d: %d samples, %d published, %d counted as duplicates", i, n, len(b), p.duplicates)
		}
		if i > 0 && !slices.Equal(series, published) {
			t.Errorf("scrape %d published %d series, the first %d", i, len(series), len(published))
		}
		published = series
	}
	var b []proto.LabeledSample
	if n := p.staleAll(&b, scrapeAt+30_000); n != len(published) {
		t.Errorf("%d staleness markers for %d series", n, len(published))
	}
}

func labelMap(ls []prompb.Label) map[string]string {
	m := map[string]string{}
	for _, l := range ls {
		m[l.Name] = l.Value
	}
	return m
}

// TestHonorTimestamps: cAdvisor's explicit timestamps are kept by default
// and replaced by the scrape time with honor_timestamps false.
func TestHonorTimestamps(t *testing.T) {
	body := []byte("c 1 1500\nd 2\n")
	for _, honor := range []bool{true, false} {
		p := newParserWith(testTargetLabels, parseOptions{honorTimestamps: honor})
		var b []proto.LabeledSample
		if _, err := p.parse(&b, body, textType, 2000); err != nil {
			t.Fatal(err)
		}
		want := int64(1500)
		if !honor {
			want = 2000
		}
		if got := b[0].Timestamp; got != want {
			t.Errorf("honor_timestamps %v: c at %d, want %d", honor, got, want)
		}
		if got := b[1].Timestamp; got != 2000 {
			t.Errorf("honor_timestamps %v: d at %d, want the scrape time", honor, got)
		}
	}
}

// TestStalenessAfterFailure: a failed scrape marks every series of the last
// good one stale once; the next good scrape starts afresh.
func TestStalenessAfterFailure(t *testing.T) {
	p := newParser(testTargetLabels)
	var b []proto.LabeledSample
	if _, err := p.parse(&b, []byte("a 1\nb 2 900\n"), textType, 1000); err != nil {
		t.Fatal(err)
	}
	b = b[:0]
	// The broken body touches a before failing: a must still be marked.
	if _, err := p.parse(&b, []byte("a 1\nbroken{\n"), textType, 2000); err == nil {
		t.Fatal("no error")
	}
	if n := p.staleAll(&b, 2000); n != 2 {
		t.Fatalf("staleAll marked %d series, want 2", n)
	}
	got := sampleText(asBatch(b))
	slices.Sort(got)
	want := []string{
		`{__name__="a", instance="10.0.0.1:10250", job="kubelet"} NaN @2000`,
		`{__name__="b", instance="10.0.0.1:10250", job="kubelet"} NaN @2000`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("stale markers:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, s := range b {
		if !value.IsStaleNaN(s.Value) {
			t.Fatalf("%x is not StaleNaN", math.Float64bits(s.Value))
		}
	}
	// A second failure has nothing left to mark.
	b = b[:0]
	if n := p.staleAll(&b, 3000); n != 0 || len(b) != 0 {
		t.Fatalf("second failure marked %d series", n)
	}
	// The next good scrape has no marker for a series it does not have.
	if _, err := p.parse(&b, []byte("a 5\n"), textType, 4000); err != nil || len(b) != 1 {
		t.Fatalf("parse after failure: %v, %d series", err, len(b))
	}
}

// TestIdentityLabelsStayPlainLabels: cluster and node travel in the subject;
// a scraped label of that name is data and stays as it was.
func TestIdentityLabelsStayPlainLabels(t *testing.T) {
	p := newParser(testTargetLabels)
	var b []proto.LabeledSample
	if _, err := p.parse(&b, []byte(`m{cluster="evil",node="other",__subject__="x"} 1`+"\n"), textType, scrapeAt); err != nil {
		t.Fatal(err)
	}
	m := labelMap(b[0].Labels.AppendLabels(nil))
	if m["cluster"] != "evil" || m["node"] != "other" {
		t.Errorf("labels = %v; cluster and node must stay as scraped, plain labels", m)
	}
}

func TestProxyHealth(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		status      int
		wantHealthy float64
		wantAge     float64
		wantErr     string
	}{
		{"go time format, healthy", `{"lastUpdated": "2024-05-01 10:00:00.5 +0000 UTC m=+120.1","currentTime": "2024-05-01 10:00:02 +0000 UTC m=+121.6", "nodeEligible": true}`, 200, 1, 1.5, ""},
		{"rfc3339, unhealthy", `{"lastUpdated":"2024-05-01T10:00:00Z","currentTime":"2024-05-01T10:02:00Z"}`, 503, 0, 120, ""},
		{"not json", `ok`, 200, 0, 0, "kube-proxy healthz: invalid character"},
		{"other json", `{"status":"ok"}`, 200, 0, 0, "lastUpdated or currentTime missing"},
		{"bad time", `{"lastUpdated":"yesterday","currentTime":"2024-05-01T10:02:00Z"}`, 200, 0, 0, `lastUpdated: time "yesterday"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := proxyHealthSamples(nil, []byte(tt.body), tt.status)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			vals := map[string]float64{}
			for _, s := range got {
				vals[s.Labels.Get("__name__")] = s.Value
			}
			if vals[proxyHealthyMetric] != tt.wantHealthy || math.Abs(vals[proxyAgeMetric]-tt.wantAge) > 1e-9 {
				t.Errorf("samples = %v, want healthy %v age %v", vals, tt.wantHealthy, tt.wantAge)
			}
		})
	}
}

func FuzzProxyHealth(f *testing.F) {
	f.Add([]byte(`{"lastUpdated": "2024-05-01 10:00:00.5 +0000 UTC m=+120.1","currentTime": "2024-05-01 10:00:02 +0000 UTC m=+121.6", "nodeEligible": true}`))
	f.Add([]byte(`{"lastUpdated":"2024-05-01T10:00:00Z","currentTime":"2024-05-01T10:02:00Z"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := proxyHealthSamples(nil, body, 200)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "kube-proxy healthz: ") {
				t.Fatalf("error without context: %v", err)
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("no samples from a valid answer")
		}
	})
}

// TestSummaryThroughParser parses each real summary with the target
// labels: every series valid, timestamps from the JSON.
func TestSummaryThroughParser(t *testing.T) {
	for _, name := range []string{fixtures.Summary135, fixtures.Summary2018, fixtures.SummaryWindows} {
		t.Run(name, func(t *testing.T) {
			s, err := summary.Decode(fixtures.Read(name))
			if err != nil {
				t.Fatal(err)
			}
			samples := s.Append(nil)
			p := newParser(testTargetLabels)
			var parsed []proto.LabeledSample
			n, err := p.parseSamples(&parsed, samples, scrapeAt)
			if err != nil || n != len(samples) || len(parsed) != n {
				t.Fatalf("parseSamples = %d, %v; %d series; want %d", n, err, len(parsed), len(samples))
			}
			b := asBatch(parsed)
			stamped := 0
			for i, ts := range b.Series {
				checkValidSeries(t, ts)
				// The series are keyed by their text, and their labels
				// read back from it: they must be the sample's.
				want := labels.NewBuilder(samples[i].Labels)
				for _, l := range testTargetLabels {
					want.Set(l.Name, l.Value)
				}
				if got := labelsKey(ts.Labels); got != want.Labels().String() {
					t.Fatalf("series %d is %s, want %s", i, got, want.Labels())
				}
				if ts.Samples[0].Timestamp != scrapeAt {
					stamped++
				}
			}
			if stamped < n/2 {
				t.Errorf("only %d of %d samples carry the summary's own time", stamped, n)
			}
		})
	}
}

// TestSamplesWithQuotesInValues: samples of the JSON sources are keyed by
// their text, escaped as the text format escapes it, so that a value with
// quotes cannot pass for other labels.
func TestSamplesWithQuotesInValues(t *testing.T) {
	samples := []summary.Sample{
		{Labels: labels.FromStrings(labels.MetricName, "m", "a", `x",b="y`), Value: 1},
		{Labels: labels.FromStrings(labels.MetricName, "m", "a", "x", "b", "y"), Value: 2},
		{Labels: labels.FromStrings(labels.MetricName, "m", "a", "back\\slash\nnewline"), Value: 3},
	}
	var parsed []proto.LabeledSample
	if n, err := newParser(testTargetLabels).parseSamples(&parsed, samples, scrapeAt); err != nil || n != 3 {
		t.Fatalf("parseSamples = %d, %v", n, err)
	}
	want := []string{
		`{__name__="m", a="x\",b=\"y", instance="10.0.0.1:10250", job="kubelet"} 1 @1700000000000`,
		`{__name__="m", a="x", b="y", instance="10.0.0.1:10250", job="kubelet"} 2 @1700000000000`,
		`{__name__="m", a="back\\slash\nnewline", instance="10.0.0.1:10250", job="kubelet"} 3 @1700000000000`,
	}
	if got := sampleText(asBatch(parsed)); !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
