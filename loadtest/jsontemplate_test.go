package loadtest

import (
	"strings"
	"testing"
	"time"

	"github.com/weirmetrics/weir/collector/summary"
	"github.com/weirmetrics/weir/internal/fixtures"
)

// summaryOf converts a rendered /stats/summary as the collector does and
// returns each series' timestamp (0 when it had none).
func summaryOf(t *testing.T, body []byte) map[string]int64 {
	t.Helper()
	s, err := summary.Decode(body)
	if err != nil {
		t.Fatalf("rendered summary does not decode: %v", err)
	}
	out := map[string]int64{}
	for _, smp := range s.Append(nil) {
		out[smp.Labels.String()] = smp.TimestampMs
	}
	return out
}

// podSeries counts the series of a summary capture that name a pod.
func podSeries(t *testing.T, capture []byte) int {
	t.Helper()
	n := 0
	for s := range summaryOf(t, capture) {
		if strings.Contains(s, `pod="`) {
			n++
		}
	}
	return n
}

func TestJSONTemplateRendersSummary(t *testing.T) {
	capture := fixtures.Read(fixtures.Summary135)
	tmpl, err := compileJSONTemplate(capture)
	if err != nil {
		t.Fatal(err)
	}
	orig := summaryOf(t, capture)
	if tmpl.samples != len(orig) || tmpl.samples < 1000 {
		t.Fatalf("template counts %d samples, the capture converts to %d series", tmpl.samples, len(orig))
	}
	now := time.Date(2026, 11, 23, 3, 0, 0, 123e6, time.UTC).UnixMilli()
	first := summaryOf(t, tmpl.render(nil, 0, now, func(int) int64 { return 0 }))
	if len(first) != len(orig) {
		t.Fatalf("rendered %d series, want %d", len(first), len(orig))
	}
	for s, ts := range orig {
		got, ok := first[s]
		if !ok {
			t.Fatalf("series %s missing at generation 0", s)
		}
		// A new time every scrape, or the collector would send duplicates.
		if (ts != 0) != (got != 0) || (got != 0 && got != now) {
			t.Fatalf("%s timestamp %d, want %d where the capture has one (%d)", s, got, now, ts)
		}
	}
	later := summaryOf(t, tmpl.render(nil, 3, now, func(int) int64 { return 2 }))
	renamed := 0
	for s := range later {
		if !strings.Contains(s, `pod="`) {
			if _, ok := orig[s]; !ok {
				t.Fatalf("series %s not in the capture and names no pod", s)
			}
			continue
		}
		if !strings.Contains(s, `-g2"`) {
			t.Fatalf("pod not renamed in %s", s)
		}
		renamed++
	}
	if want := podSeries(t, capture); len(later) != len(orig) || renamed != want || want == 0 {
		t.Fatalf("generation 2: %d series, %d renamed; want %d and %d", len(later), renamed, len(orig), want)
	}
}

func TestJSONTemplateErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"not a summary", `{"pods": []}`, "node.nodeName is missing"},
		{"time not a string", `{"node": {"nodeName": "n", "cpu": {"time": 5}}}`, "decode"},
		{"truncated", `{"node": {"nodeName": "n"`, "decode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileJSONTemplate([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
