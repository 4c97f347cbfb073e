package collector

import (
	"bytes"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

const (
	textType        = "text/plain; version=0.0.4; charset=utf-8"
	openMetricsType = "application/openmetrics-text; version=1.0.0; charset=utf-8"
	scrapeAt        = int64(1_700_000_000_000)
)

var testTargetLabels = []prompb.Label{{Name: "instance", Value: "10.0.0.1:10250"}, {Name: "job", Value: "kubelet"}}

// sampleText renders the series of a batch one per line, as
// `{labels} value @timestamp`, for comparison.
func sampleText(b *proto.Batch) []string {
	var out []string
	for _, ts := range b.Series {
		var sb strings.Builder
		sb.WriteString(labelsKey(ts.Labels))
		for _, s := range ts.Samples {
			sb.WriteString(" " + formatFloat(s.Value) + " @" + itoa(s.Timestamp))
		}
		out = append(out, sb.String())
	}
	return out
}

// asBatch returns samples in the wire form the encoder writes them in.
func asBatch(samples []proto.LabeledSample) *proto.Batch {
	b := &proto.Batch{}
	for _, s := range samples {
		b.Series = append(b.Series, prompb.TimeSeries{
			Labels:  s.Labels.AppendLabels(nil),
			Samples: []prompb.Sample{{Value: s.Value, Timestamp: s.Timestamp}},
		})
	}
	return b
}

func TestParse(t *testing.T) {
	tests := []struct {
		name        string
		contentType string
		in          string
		want        []string
		wantErr     string
	}{
		{
			name:        "target labels added, labels sorted, comments skipped",
			contentType: textType,
			in:          "# HELP a_total A counter.\n# TYPE a_total counter\n# a free comment\n\na_total{zone=\"z\",code=\"200\"} 3\nb 1.5e+06\n",
			want: []string{
				`{__name__="a_total", code="200", instance="10.0.0.1:10250", job="kubelet", zone="z"} 3 @1700000000000`,
				`{__name__="b", instance="10.0.0.1:10250", job="kubelet"} 1.5e+06 @1700000000000`,
			},
		},
		{
			name:        "explicit timestamps kept",
			contentType: textType,
			in:          "container_cpu_usage_seconds_total{id=\"/\"} 12.5 1782468875486\nmachine_cpu_cores 4\n",
			want: []string{
				`{__name__="container_cpu_usage_seconds_total", id="/", instance="10.0.0.1:10250", job="kubelet"} 12.5 @1782468875486`,
				`{__name__="machine_cpu_cores", instance="10.0.0.1:10250", job="kubelet"} 4 @1700000000000`,
			},
		},
		{
			name:        "empty label values dropped",
			contentType: textType,
			in:          "container_memory_rss{container=\"\",id=\"/\",image=\"\",pod=\"\"} 1024\n",
			want:        []string{`{__name__="container_memory_rss", id="/", instance="10.0.0.1:10250", job="kubelet"} 1024 @1700000000000`},
		},
		{
			name:        "scraped job and instance become exported_",
			contentType: textType,
			in:          "up{job=\"app\",instance=\"pod:8080\",exported_job=\"older\"} 1\n",
			want: []string{
				`{__name__="up", exported_exported_job="app", exported_instance="pod:8080", exported_job="older", instance="10.0.0.1:10250", job="kubelet"} 1 @1700000000000`,
			},
		},
		{
			name:        "special values",
			contentType: textType,
			in:          "a NaN\nb +Inf\nc -Inf\nd -0.5\n",
			want: []string{
				`{__name__="a", instance="10.0.0.1:10250", job="kubelet"} NaN @1700000000000`,
				`{__name__="b", instance="10.0.0.1:10250", job="kubelet"} +Inf @1700000000000`,
				`{__name__="c", instance="10.0.0.1:10250", job="kubelet"} -Inf @1700000000000`,
				`{__name__="d", instance="10.0.0.1:10250", job="kubelet"} -0.5 @1700000000000`,
			},
		},
		{
			name:        "no Content-Type falls back to text",
			contentType: "",
			in:          "a 1\n",
			want:        []string{`{__name__="a", instance="10.0.0.1:10250", job="kubelet"} 1 @1700000000000`},
		},
		{
			name:        "OpenMetrics",
			contentType: openMetricsType,
			in:          "# TYPE a counter\na_total 2 1700000001.5\n# EOF\n",
			want:        []string{`{__name__="a_total", instance="10.0.0.1:10250", job="kubelet"} 2 @1700000001500`},
		},
		{
			name:        "empty body",
			contentType: textType,
			in:          "",
		},
		{
			name:        "label twice",
			contentType: textType,
			in:          "a{x=\"1\",x=\"2\"} 1\n",
			wantErr:     `after 0 samples: label "x" appears twice in {__name__="a", x="1", x="2"}`,
		},
		{
			name:        "no metric name",
			contentType: textType,
			in:          "b 1\n{x=\"1\"} 1\n",
			wantErr:     "after 1 samples:",
		},
		{
			name:        "value missing",
			contentType: textType,
			in:          "a 1\nb{x=\"1\"}\n",
			wantErr:     "after 1 samples:",
		},
		{
			name:        "label value not UTF-8",
			contentType: textType,
			in:          "a{x=\"\xff\xfe\"} 1\n",
			wantErr:     "invalid UTF-8",
		},
		{
			name:        "JSON",
			contentType: "application/json",
			in:          `{"node": {"nodeName": "a"}}`,
			wantErr:     "after 0 samples:",
		},
		{
			name:        "unknown TYPE",
			contentType: textType,
			in:          "# TYPE a gauges\na 1\n",
			wantErr:     `invalid metric type "gauges"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newParser(testTargetLabels)
			var samples []proto.LabeledSample
			n, err := p.parse(&samples, []byte(tt.in), tt.contentType, scrapeAt)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parse = %v, want an error containing %q", err, tt.wantErr)
				}
				if n != 0 || len(samples) != 0 {
					t.Fatalf("failed parse left %d series (n=%d)", len(samples), n)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := sampleText(asBatch(samples)); !slices.Equal(got, tt.want) || n != len(tt.want) {
				t.Fatalf("parse = %d\n%s\nwant\n%s", n, strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestParseErrorsAreShort checks that a parse error quotes a bounded part
// of a huge bad line.
func TestParseErrorsAreShort(t *testing.T) {
	long := "a{x=\"" + strings.Repeat("y", 1<<20) + "\" 1\n"
	_, err := newParser(testTargetLabels).parse(new([]proto.LabeledSample), []byte(long), textType, scrapeAt)
	if err == nil || len(err.Error()) > 2*maxErrorText {
		t.Fatalf("error of %d bytes: %.300v", len(err.Error()), err)
	}
}

// TestParseCacheFollowsTheTarget parses successive scrapes with one parser:
// series come and go, values and timestamps change, a failed scrape leaves
// the batch and the cache as they were.
func TestParseCacheFollowsTheTarget(t *testing.T) {
	p := newParser(testTargetLabels)
	var b []proto.LabeledSample
	scrape := func(text string, at int64) ([]string, error) {
		b = b[:0]
		_, err := p.parse(&b, []byte(text), textType, at)
		return sampleText(asBatch(b)), err
	}
	first, err := scrape("a{x=\"1\"} 1\na{x=\"2\"} 2\nb 3\n", 1000)
	if err != nil {
		t.Fatal(err)
	}
	second, err := scrape("a{x=\"2\"} 20\nb 30 1500\nc 40\n", 2000)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{__name__="a", instance="10.0.0.1:10250", job="kubelet", x="2"} 20 @2000`,
		`{__name__="b", instance="10.0.0.1:10250", job="kubelet"} 30 @1500`,
		`{__name__="c", instance="10.0.0.1:10250", job="kubelet"} 40 @2000`,
		// Gone since the first scrape: a staleness marker at the scrape time.
		`{__name__="a", instance="10.0.0.1:10250", job="kubelet", x="1"} NaN @2000`,
	}
	if !slices.Equal(second, want) {
		t.Fatalf("second scrape:\n%s\nwant\n%s\n(first was %v)", strings.Join(second, "\n"), strings.Join(want, "\n"), first)
	}
	if v := b[3].Value; !value.IsStaleNaN(v) {
		t.Errorf("marker is %x, not Prometheus's StaleNaN", math.Float64bits(v))
	}
	if len(p.cache) != 3 {
		t.Errorf("cache holds %d series after a scrape of 3", len(p.cache))
	}

	// A failed scrape: nothing appended to a batch that already has series,
	// and the cache keeps the last good scrape's series.
	b = b[:0]
	appendSample(&b, new(proto.FixedLabels(testTargetLabels)), 1, 1)
	if _, err := p.parse(&b, []byte("d 1\na{x=\"2\"} 20\nbroken{\n"), textType, 3000); err == nil {
		t.Fatal("no error for a broken scrape")
	}
	if len(b) != 1 {
		t.Fatalf("failed parse left %d series, want the 1 that was there", len(b))
	}
	if _, ok := p.cache[`c`]; !ok {
		t.Error("a failed scrape evicted a series of the last good one")
	}
}

// FuzzParse feeds the parser real captures and their mutations: it must
// not panic, an error must be short and leave the batch empty, and a
// successful parse must produce series every backend accepts, encode and
// decode unchanged, and give the same series when parsed again from the
// parser's cache.
func FuzzParse(f *testing.F) {
	// Metric families of every capture, spread over the file, each a seed of
	// its own with its first sample. Whole captures would stall the
	// fuzzer: it spends up to a minute minimizing every interesting input,
	// in time that grows with the square of its size.
	// TestParseEveryCapture parses them whole.
	const familiesPerCapture = 8
	for _, name := range textCaptures {
		families := familySnippets(fixtures.Read(name), 1)
		step := max(1, len(families)/familiesPerCapture)
		for i := 0; i < len(families); i += step {
			f.Add(families[i], uint8(0))
		}
	}
	for _, broken := range []string{
		"",
		"\n\n\n",
		"a",
		"a 1 2 3\n",
		"a{} 1\n",
		"a{x=\"1\",x=\"2\"} 1\n",
		"{x=\"1\"} 1\n",
		"{\"quoted.name\",x=\"1\"} 1\n",
		"a{x=\"\\\"\\n\\\\\"} 1\n",
		"a{x=\"1\" 1\n",
		"# TYPE a histogram\na_bucket{le=\"+Inf\"} 1\na_bucket{le=\"1\"} 1\n",
		"# TYPE a summary\na{quantile=\"0.5\"} 1\n",
		"a{job=\"x\",instance=\"y\",exported_job=\"z\"} 1\n",
		"a 1 -1\n",
		"a 0x1p3\n",
		"a{x=\"\xff\"} 1\n",
		"# TYPE a counter\na_total 1\n# EOF\n",
	} {
		f.Add([]byte(broken), uint8(0))
		f.Add([]byte(broken), uint8(1))
	}
	contentTypes := []string{textType, openMetricsType, ""}

	f.Fuzz(func(t *testing.T, body []byte, ct uint8) {
		contentType := contentTypes[int(ct)%len(contentTypes)]
		p := newParser(testTargetLabels)
		var samples []proto.LabeledSample
		n, err := p.parse(&samples, body, contentType, scrapeAt)
		if err != nil {
			if len(samples) != 0 || n != 0 {
				t.Fatalf("error %v left %d series", err, len(samples))
			}
			if msg := err.Error(); msg == "" || len(msg) > 4*maxErrorText {
				t.Fatalf("error of %d bytes: %.2000q", len(msg), msg)
			}
			return
		}
		if n != len(samples) {
			t.Fatalf("parse returned %d, appended %d series", n, len(samples))
		}
		first := asBatch(samples)
		for _, ts := range first.Series {
			checkValidSeries(t, ts)
		}
		want := sampleText(first)

		payload, err := new(proto.BlockEncoder).AppendSamples(nil, samples)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		var decoded proto.Batch
		if err := proto.DefaultEncoding.Decode(payload, &decoded); err != nil {
			t.Fatalf("a parsed scrape does not decode: %v", err)
		}
		if got := sampleText(&decoded); !slices.Equal(got, want) {
			t.Fatalf("encode and decode changed the series:\n%v\nwant\n%v", got, want)
		}

		var again []proto.LabeledSample
		if _, err := p.parse(&again, body, contentType, scrapeAt); err != nil {
			t.Fatalf("second parse of the same body: %v", err)
		}
		if got := sampleText(asBatch(again)); !slices.Equal(got, want) {
			t.Fatalf("second parse from the cache differs:\n%v\nwant\n%v", got, want)
		}
	})
}

// familySnippets cuts a text exposition into its metric families, each
// with its HELP and TYPE lines and at most samples sample lines.
func familySnippets(text []byte, samples int) [][]byte {
	var out [][]byte
	var cur []byte
	n := 0
	for line := range bytes.Lines(text) {
		if bytes.HasPrefix(line, []byte("# HELP ")) && n > 0 {
			out = append(out, cur)
			cur, n = nil, 0
		}
		if line[0] != '#' {
			if n >= samples {
				continue
			}
			n++
		}
		cur = append(cur, line...)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// checkValidSeries checks what a remote-write backend requires of a series.
func checkValidSeries(t *testing.T, ts prompb.TimeSeries) {
	t.Helper()
	if len(ts.Samples) != 1 {
		t.Fatalf("%d samples in a series", len(ts.Samples))
	}
	var name, job, instance string
	for i, l := range ts.Labels {
		if l.Name == "" || l.Value == "" {
			t.Fatalf("empty label name or value in %v", ts.Labels)
		}
		if i > 0 && ts.Labels[i-1].Name >= l.Name {
			t.Fatalf("labels not sorted or repeated at %q: %v", l.Name, ts.Labels)
		}
		switch l.Name {
		case "__name__":
			name = l.Value
		case "job":
			job = l.Value
		case "instance":
			instance = l.Value
		}
	}
	if name == "" || job != "kubelet" || instance != "10.0.0.1:10250" {
		t.Fatalf("name %q, job %q, instance %q in %v", name, job, instance, ts.Labels)
	}
}

// textCaptures are every Prometheus text capture in the fixtures.
var textCaptures = []string{
	fixtures.Cadvisor135, fixtures.Cadvisor121, fixtures.CadvisorPre116,
	fixtures.Kubelet121, fixtures.Kubelet110, fixtures.Resource121,
	fixtures.Probes, fixtures.KubeProxy121, fixtures.KubeStateMetrics,
}

func TestParseEveryCapture(t *testing.T) {
	for _, name := range textCaptures {
		t.Run(name, func(t *testing.T) {
			body := fixtures.Read(name)
			n, err := newParser(testTargetLabels).parse(new([]proto.LabeledSample), body, textType, scrapeAt)
			if err != nil {
				t.Fatal(err)
			}
			_, want := expectedSeries(t, body, scrapeAt, nil)
			if n != want {
				t.Fatalf("%d samples, want %d", n, want)
			}
		})
	}
}

func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
