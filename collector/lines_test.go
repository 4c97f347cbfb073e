package collector

import (
	"bytes"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"testing/iotest"

	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/model/value"

	"github.com/weirmetrics/weir/internal/fixtures"
	"github.com/weirmetrics/weir/proto"
)

// parseWithTextparse is parse with every line through textparse: the
// reference the known-line path must agree with.
func parseWithTextparse(p *parser, dst *[]proto.LabeledSample, body []byte, scrapeMillis int64) (int, error) {
	start := p.begin(dst)
	n, err := p.parseEntries(dst, textparse.NewPromParser(body, p.symbols, false), 0, scrapeMillis)
	if err != nil {
		*dst = (*dst)[:start]
		return 0, err
	}
	p.finish(dst, scrapeMillis)
	return n, nil
}

// agree parses body with both parsers and fails unless they return the
// same series, staleness markers included, or the same error. The fast
// parser reads the body in reads of half its buffer, so that lines and
// runs of new lines straddle reads.
func agree(t *testing.T, fast, reference *parser, body []byte, scrapeMillis int64) {
	t.Helper()
	var got, want []proto.LabeledSample
	gotN, gotErr := fast.parseStream(&got, iotest.HalfReader(bytes.NewReader(body)), scrapeMillis)
	wantN, wantErr := parseWithTextparse(reference, &want, body, scrapeMillis)
	if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || gotN != wantN {
		t.Fatalf("parse = %d, %v; textparse = %d, %v", gotN, gotErr, wantN, wantErr)
	}
	if g, w := samplesThenMarkers(asBatch(got)), samplesThenMarkers(asBatch(want)); !slices.Equal(g, w) {
		t.Fatalf("%d series, textparse %d; first differences:\n%s", len(g), len(w), firstDiff(g, w))
	}
}

// samplesThenMarkers is sampleText with the staleness markers, which come
// from a map in no order, sorted after the samples.
func samplesThenMarkers(b *proto.Batch) []string {
	var samples, markers []string
	for i, line := range sampleText(b) {
		if value.IsStaleNaN(b.Series[i].Samples[0].Value) {
			markers = append(markers, "stale "+line)
		} else {
			samples = append(samples, line)
		}
	}
	slices.Sort(markers)
	return append(samples, markers...)
}

func firstDiff(got, want []string) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("got  %s\nwant %s", got[i], want[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(got), len(want))
}

// edits are what happens to a target's text between two scrapes.
var edits = []struct {
	name string
	edit func(lines [][]byte, scrape int) [][]byte
}{
	{"values move", func(lines [][]byte, scrape int) [][]byte {
		return mapSamples(lines, func(series, value []byte) []byte {
			v, _ := strconv.ParseFloat(string(value), 64)
			return fmt.Appendf(nil, "%s %s", series, strconv.FormatFloat(v+float64(scrape), 'g', -1, 64))
		})
	}},
	{"every seventh line gone", func(lines [][]byte, _ int) [][]byte {
		var out [][]byte
		for i, l := range lines {
			if i%7 != 3 {
				out = append(out, l)
			}
		}
		return out
	}},
	{"a new pod in every family", func(lines [][]byte, scrape int) [][]byte {
		var out [][]byte
		for _, l := range lines {
			out = append(out, l)
			if bytes.Contains(l, []byte(`pod="`)) {
				out = append(out, bytes.Replace(l, []byte(`pod="`), fmt.Appendf(nil, `pod="new-%d-`, scrape), 1))
			}
		}
		return out
	}},
	{"families reversed", func(lines [][]byte, _ int) [][]byte {
		out := slices.Clone(lines)
		slices.Reverse(out)
		return out
	}},
	{"odd spacing and timestamps", func(lines [][]byte, _ int) [][]byte {
		return mapSamples(lines, func(series, value []byte) []byte {
			return fmt.Appendf(nil, "%s \t%s  1700000000123 ", series, value)
		})
	}},
	{"a broken line in the middle", func(lines [][]byte, _ int) [][]byte {
		out := slices.Clone(lines)
		return slices.Insert(out, len(out)/2, []byte(`broken{x="1" 1`))
	}},
	{"a bad type line", func(lines [][]byte, _ int) [][]byte {
		return append([][]byte{[]byte("# TYPE x gaugeish")}, lines...)
	}},
	{"a value textparse refuses", func(lines [][]byte, _ int) [][]byte {
		return mapSamples(lines, func(series, _ []byte) []byte { return fmt.Appendf(nil, "%s 1_000", series) })
	}},
	{"unchanged again", func(lines [][]byte, _ int) [][]byte { return lines }},
}

// mapSamples rewrites every sample line that has the plain form.
func mapSamples(lines [][]byte, f func(series, value []byte) []byte) [][]byte {
	out := make([][]byte, len(lines))
	for i, l := range lines {
		out[i] = l
		if series := seriesText(l); series != nil {
			value, _, _ := bytes.Cut(l[len(series)+1:], []byte(" "))
			out[i] = f(series, value)
		}
	}
	return out
}

// TestKnownLinesAgreeWithTextparse runs every capture through a sequence
// of scrapes that change values, drop, add and reorder lines and break
// them, and checks that the known-line path gives what textparse alone
// gives, each scrape after the one before.
func TestKnownLinesAgreeWithTextparse(t *testing.T) {
	for _, name := range textCaptures {
		t.Run(name, func(t *testing.T) {
			base := bytes.Split(bytes.TrimSuffix(fixtures.Read(name), []byte("\n")), []byte("\n"))
			fast, reference := newParser(testTargetLabels), newParser(testTargetLabels)
			at := scrapeAt
			agree(t, fast, reference, bytes.Join(base, []byte("\n")), at)
			for i, e := range edits {
				t.Run(e.name, func(t *testing.T) {
					at += 15_000
					body := append(bytes.Join(e.edit(base, i+1), []byte("\n")), '\n')
					agree(t, fast, reference, body, at)
					// The same text a second time, with the first in the cache.
					at += 15_000
					agree(t, fast, reference, body, at)
				})
			}
		})
	}
}

// FuzzKnownLines checks the known-line path against textparse on a scrape
// that follows another one.
func FuzzKnownLines(f *testing.F) {
	for _, name := range textCaptures {
		families := familySnippets(fixtures.Read(name), 3)
		step := max(1, len(families)/6)
		for i := 0; i < len(families); i += step {
			lines := bytes.Split(bytes.TrimSuffix(families[i], []byte("\n")), []byte("\n"))
			for _, e := range edits {
				f.Add(families[i], append(bytes.Join(e.edit(lines, 1), []byte("\n")), '\n'))
			}
		}
	}
	f.Add([]byte("a 1\n"), []byte("a 1"))
	f.Add([]byte("a 1\n\n# x\n"), []byte("\n# x\na 2 3\n"))
	f.Add([]byte("a{b=\"}\\\" c\"} 1\n"), []byte("a{b=\"}\\\" c\"} 2\n"))
	f.Fuzz(func(t *testing.T, first, second []byte) {
		fast, reference := newParser(testTargetLabels), newParser(testTargetLabels)
		agree(t, fast, reference, first, scrapeAt)
		agree(t, fast, reference, second, scrapeAt+1000)
		agree(t, fast, reference, first, scrapeAt+2000)
	})
}

// TestTextLabels: the labels read from a series text are those
// seriesLabels builds, sorted with the target labels; any text they might
// not be is refused, and textparse then reads it.
func TestTextLabels(t *testing.T) {
	tests := []struct {
		text string
		want string // labelsKey of the labels; "" when textLabels reports false
	}{
		{`up`, `{__name__="up", instance="10.0.0.1:10250", job="kubelet"}`},
		{`up{}`, `{__name__="up", instance="10.0.0.1:10250", job="kubelet"}`},
		{`a{z="1",b="2"}`, `{__name__="a", b="2", instance="10.0.0.1:10250", job="kubelet", z="1"}`},
		{`a{b="2",}`, `{__name__="a", b="2", instance="10.0.0.1:10250", job="kubelet"}`},
		{`a{b="",c="3"}`, `{__name__="a", c="3", instance="10.0.0.1:10250", job="kubelet"}`},
		{`a{B="x y={}"}`, `{B="x y={}", __name__="a", instance="10.0.0.1:10250", job="kubelet"}`},
		{`a{b="c\"d"}`, ""},     // an escape: textparse unescapes it
		{`a{job="x"}`, ""},      // renamed exported_job
		{`a{b="c"}d`, ""},       // text after the braces
		{`a{b="c"`, ""},         // no closing brace
		{`a{b=c}`, ""},          // unquoted
		{`{"a",b="c"}`, ""},     // name in the braces
		{`a{b="c" ,d="e"}`, ""}, // a space textparse would skip
	}
	for _, tt := range tests {
		got, ok := textLabels(nil, tt.text, testTargetLabels)
		if tt.want == "" {
			if ok {
				t.Errorf("%s: read %s, want false", tt.text, labelsKey(got))
			}
			continue
		}
		if !ok || labelsKey(got) != tt.want {
			t.Errorf("%s: %s, %v; want %s", tt.text, labelsKey(got), ok, tt.want)
		}
	}
}

// FuzzSeriesText checks seriesText, which looks for quotes and braces with
// bytes.IndexByte, against the plain byte-by-byte scan of the same grammar.
func FuzzSeriesText(f *testing.F) {
	for _, name := range textCaptures {
		for i, l := range bytes.Split(fixtures.Read(name), []byte("\n")) {
			if i%25 == 0 { // enough of every shape of line, fewer to fuzz from
				f.Add(l)
			}
		}
	}
	for _, l := range []string{`a{b="c\"}"} 1`, `a{b="c\`, `a{b="\\"} 2`, `a{b="x"}1`, `{} 1`, `a{b="}"`, `a b`} {
		f.Add([]byte(l))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		if got, want := seriesText(line), seriesTextBytewise(line); !bytes.Equal(got, want) || (got == nil) != (want == nil) {
			t.Fatalf("seriesText(%q) = %q, want %q", line, got, want)
		}
	})
}

// seriesTextBytewise is seriesText as a scan of one byte at a time.
func seriesTextBytewise(line []byte) []byte {
	i := 0
	for i < len(line) && line[i] != '{' && line[i] != ' ' {
		if line[i] == '\t' || line[i] == '"' || line[i] == '#' {
			return nil
		}
		i++
	}
	if i == 0 || i == len(line) {
		return nil
	}
	if line[i] != '{' {
		return line[:i]
	}
	quoted := false
	for i++; i < len(line); i++ {
		switch c := line[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '}':
			if i+1 < len(line) && line[i+1] == ' ' {
				return line[:i+1]
			}
			return nil
		}
	}
	return nil
}
