package loadtest

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"

	"github.com/weirmetrics/weir/internal/fixtures"
)

// scrapeOf parses a rendered scrape as a collector does and returns each
// series' value and timestamp (0 when the line had none).
func scrapeOf(t *testing.T, text []byte) map[string][2]float64 {
	t.Helper()
	p, err := textparse.New(text, "text/plain; version=0.0.4", labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][2]float64{}
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("rendered scrape does not parse: %v", err)
		}
		if e != textparse.EntrySeries {
			continue
		}
		var ls labels.Labels
		p.Labels(&ls)
		_, ts, v := p.Series()
		var stamp float64
		if ts != nil {
			stamp = float64(*ts)
		}
		if _, dup := out[ls.String()]; dup {
			t.Fatalf("series %s twice in one scrape", ls)
		}
		out[ls.String()] = [2]float64{v, stamp}
	}
}

func TestTemplateRendersEveryCapture(t *testing.T) {
	now := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC).UnixMilli()
	for _, e := range TextOnly(AllEndpoints) {
		t.Run(e.File, func(t *testing.T) {
			tmpl, err := compileTemplate(fixtures.Read(e.File))
			if err != nil {
				t.Fatal(err)
			}
			orig := scrapeOf(t, fixtures.Read(e.File))
			if tmpl.samples != len(orig) {
				t.Fatalf("template counts %d samples, the capture has %d series", tmpl.samples, len(orig))
			}
			first := scrapeOf(t, tmpl.render(nil, 0, now, func(int) int64 { return 0 }))
			if len(first) != len(orig) {
				t.Fatalf("rendered %d series, want %d", len(first), len(orig))
			}
			for s, vt := range orig {
				got, ok := first[s]
				if !ok {
					t.Fatalf("series %s missing at generation 0", s)
				}
				if got[0] != vt[0] && !(got[0] != got[0] && vt[0] != vt[0]) {
					t.Fatalf("%s = %v at seq 0, capture has %v", s, got[0], vt[0])
				}
				if (vt[1] != 0) != (got[1] != 0) || (got[1] != 0 && got[1] != float64(now)) {
					t.Fatalf("%s timestamp %v, want %v where the capture has one (%v)", s, got[1], now, vt[1])
				}
			}
			// Seq 3 moves every finite value by 3; generation 2 renames every pod.
			later := scrapeOf(t, tmpl.render(nil, 3, now, func(int) int64 { return 2 }))
			if len(later) != len(orig) {
				t.Fatalf("rendered %d series at generation 2, want %d", len(later), len(orig))
			}
			renamed, moved := 0, 0
			for s, vt := range later {
				if strings.Contains(s, `pod="`) && !strings.Contains(s, `pod=""`) {
					if !strings.Contains(s, `-g2"`) {
						t.Fatalf("pod not renamed in %s", s)
					}
					renamed++
					continue
				}
				o, ok := orig[s]
				if !ok {
					t.Fatalf("series %s not in the capture and names no pod", s)
				}
				if math.IsNaN(o[0]) || math.IsInf(o[0], 0) {
					continue
				}
				if want := o[0] + 3; vt[0] != want {
					t.Fatalf("%s = %v at seq 3, want %v", s, vt[0], want)
				}
				moved++
			}
			if moved == 0 && renamed == 0 {
				t.Fatal("no series checked")
			}
			if strings.Count(string(fixtures.Read(e.File)), `pod="`) > strings.Count(string(fixtures.Read(e.File)), `pod=""`) && renamed == 0 {
				t.Fatal("the capture names pods but none was renamed")
			}
		})
	}
}

func TestTemplateErrors(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"unterminated labels", "a{b=\"c\" 1\n", "line 1: unterminated label set"},
		{"no value", "# HELP a x\na{b=\"c\"}\n", "line 2: want a value"},
		{"bad value", "a 1x\n", "line 1: value of"},
		{"too many fields", "a 1 2 3\n", "line 1: want a value"},
		{"unterminated pod", "a{pod=\"x} 1\n", "line 1: unterminated label set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := compileTemplate([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func FuzzTemplate(f *testing.F) {
	for _, e := range TextOnly(AllEndpoints) {
		f.Add(fixtures.Read(e.File)[:min(2000, len(fixtures.Read(e.File)))])
	}
	f.Add([]byte("a{pod=\"x\",pod=\"y\"} 1 2\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		tmpl, err := compileTemplate(in)
		if err != nil {
			return
		}
		out := tmpl.render(nil, 1, 1, func(p int) int64 { return int64(p) })
		if n := bytes.Count(out, []byte("\n")); n < tmpl.samples {
			t.Fatalf("rendered %d lines for %d samples", n, tmpl.samples)
		}
	})
}
