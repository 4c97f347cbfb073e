package loadtest

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
)

// template is a text capture cut into pieces once, so that every scrape
// can render it with moved values, fresh timestamps and renamed pods at
// the cost of a few appends per line.
type template struct {
	lines   []line
	samples int      // sample lines: what one scrape offers
	pods    []string // original pod names, indexed by line.pods
}

// line is one line of the capture. A comment keeps only text. A sample is
// series pieces (static text with pod names between them), a value and
// whether the capture gave it an explicit timestamp.
type line struct {
	text     []byte   // comment or blank line, written as is
	pieces   [][]byte // static parts of the series, len(pods)+1 of them
	pods     []int    // index in template-wide pod names, one per gap between pieces
	value    float64
	hasValue bool
	stamped  bool
}

// podLabel is the label whose value is renamed to simulate pods that go
// and come back under a new name.
const podLabel = `pod="`

// compileTemplate cuts a Prometheus text exposition into lines. Pod names
// are numbered by first appearance so a pod keeps its generation across
// every series that names it.
func compileTemplate(text []byte) (*template, error) {
	t := &template{}
	pods := map[string]int{}
	defer func() {
		t.pods = make([]string, len(pods))
		for name, id := range pods {
			t.pods[id] = name
		}
	}()
	for n := 1; len(text) > 0; n++ {
		raw := text
		if i := bytes.IndexByte(text, '\n'); i >= 0 {
			raw, text = text[:i], text[i+1:]
		} else {
			text = nil
		}
		trimmed := bytes.TrimSpace(raw)
		if len(trimmed) == 0 || trimmed[0] == '#' {
			t.lines = append(t.lines, line{text: raw})
			continue
		}
		l, err := compileSample(trimmed, pods)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		t.lines = append(t.lines, l)
		t.samples++
	}
	return t, nil
}

func compileSample(s []byte, pods map[string]int) (line, error) {
	end := seriesEnd(s)
	if end < 0 {
		return line{}, fmt.Errorf("unterminated label set in %q", s)
	}
	series, rest := s[:end], bytes.Fields(s[end:])
	if len(rest) < 1 || len(rest) > 2 {
		return line{}, fmt.Errorf("want a value and an optional timestamp after the series in %q", s)
	}
	v, err := strconv.ParseFloat(string(rest[0]), 64)
	if err != nil {
		return line{}, fmt.Errorf("value of %q: %w", series, err)
	}
	l := line{value: v, hasValue: true, stamped: len(rest) == 2}
	last, pos := 0, 0
	for {
		i := bytes.Index(series[pos:], []byte(podLabel))
		if i < 0 {
			break
		}
		i += pos
		start := i + len(podLabel)
		pos = start
		// Only a label named exactly "pod" (the byte before is { or ,), and
		// not an empty one: that is a machine-level series, no pod to churn.
		if i == 0 || (series[i-1] != '{' && series[i-1] != ',') {
			continue
		}
		stop := bytes.IndexByte(series[start:], '"')
		if stop < 0 {
			return line{}, fmt.Errorf("unterminated pod label in %q", s)
		}
		if stop == 0 {
			continue
		}
		name := string(series[start : start+stop])
		id, ok := pods[name]
		if !ok {
			id = len(pods)
			pods[name] = id
		}
		l.pieces = append(l.pieces, bytes.Clone(series[last:start]))
		l.pods = append(l.pods, id)
		last = start + stop
		pos = last
	}
	l.pieces = append(l.pieces, bytes.Clone(series[last:]))
	return l, nil
}

// seriesEnd returns the index just past the series (name and label set),
// or -1 when a label set does not close.
func seriesEnd(s []byte) int {
	i := bytes.IndexAny(s, "{ \t")
	if i < 0 {
		return len(s)
	}
	if s[i] != '{' {
		return i
	}
	quoted := false
	for j := i + 1; j < len(s); j++ {
		switch {
		case quoted && s[j] == '\\':
			j++
		case s[j] == '"':
			quoted = !quoted
		case !quoted && s[j] == '}':
			return j + 1
		}
	}
	return -1
}

// render appends one scrape to buf. Values move with seq (counters stay
// monotonic), explicit timestamps become nowMs so the receiver can time
// each sample from the moment it was served, and pod names carry the
// generation gen returns for them.
func (t *template) render(buf []byte, seq int64, nowMs int64, gen func(pod int) int64) []byte {
	for i := range t.lines {
		l := &t.lines[i]
		if !l.hasValue {
			buf = append(buf, l.text...)
			buf = append(buf, '\n')
			continue
		}
		for j, p := range l.pieces {
			buf = append(buf, p...)
			if j < len(l.pods) {
				buf = appendPod(buf, t.pods[l.pods[j]], gen(l.pods[j]))
			}
		}
		buf = append(buf, ' ')
		v := l.value
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			v += float64(seq)
		}
		buf = strconv.AppendFloat(buf, v, 'g', -1, 64)
		if l.stamped {
			buf = append(buf, ' ')
			buf = strconv.AppendInt(buf, nowMs, 10)
		}
		buf = append(buf, '\n')
	}
	return buf
}

// appendPod writes a pod's name, suffixed with its generation once the
// pod has been replaced at least once.
func appendPod(buf []byte, name string, gen int64) []byte {
	buf = append(buf, name...)
	if gen > 0 {
		buf = append(buf, "-g"...)
		buf = strconv.AppendInt(buf, gen, 10)
	}
	return buf
}
