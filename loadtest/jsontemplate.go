package loadtest

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/weirmetrics/weir/collector/summary"
)

// jsonTemplate is a kubelet /stats/summary capture cut, like template, into
// static pieces with holes between them: every statistic's "time" becomes
// the scrape's time (the collector stamps each sample with it, so a
// repeated time would make every later scrape a duplicate), and every
// podRef name carries the pod's generation. Values do not move: the
// collector converts every field of every scrape whatever its value.
type jsonTemplate struct {
	pieces  [][]byte // static text, one more than holes
	holes   []jsonHole
	samples int      // distinct series the collector makes of one scrape
	pods    []string // original pod names, indexed by jsonHole.pod
}

// jsonHole is a time (pod < 0) or the name of pod number pod.
type jsonHole struct{ pod int }

var (
	timeKey   = []byte(`"time":`)
	podRefKey = []byte(`"podRef":`)
	nameKey   = []byte(`"name":`)
)

// compileJSONTemplate cuts a /stats/summary capture and counts the series
// collector/summary makes of it.
func compileJSONTemplate(text []byte) (*jsonTemplate, error) {
	s, err := summary.Decode(text)
	if err != nil {
		return nil, err
	}
	t := &jsonTemplate{samples: distinctSeries(s.Append(nil))}
	pods := map[string]int{}
	last := 0
	for pos := 0; ; {
		i, hole, ok := nextJSONHole(text, pos)
		if !ok {
			break
		}
		start, end, err := quotedValue(text, i)
		if err != nil {
			return nil, err
		}
		if hole.pod >= 0 {
			name := string(text[start:end])
			id, ok := pods[name]
			if !ok {
				id = len(pods)
				pods[name] = id
				t.pods = append(t.pods, name)
			}
			hole.pod = id
		}
		t.pieces = append(t.pieces, text[last:start])
		t.holes = append(t.holes, hole)
		last, pos = end, end
	}
	t.pieces = append(t.pieces, text[last:])
	return t, nil
}

// nextJSONHole finds the next "time" key, or podRef's "name" key, at or
// after pos, and returns the offset just past the key.
func nextJSONHole(text []byte, pos int) (int, jsonHole, bool) {
	ti := bytes.Index(text[pos:], timeKey)
	pi := bytes.Index(text[pos:], podRefKey)
	switch {
	case ti < 0 && pi < 0:
		return 0, jsonHole{}, false
	case pi < 0 || (ti >= 0 && ti < pi):
		return pos + ti + len(timeKey), jsonHole{pod: -1}, true
	}
	ref := pos + pi + len(podRefKey)
	ni := bytes.Index(text[ref:], nameKey)
	if ni < 0 || bytes.IndexByte(text[ref:ref+ni], '}') >= 0 {
		return 0, jsonHole{}, false // a podRef without a name: nothing to rename
	}
	return ref + ni + len(nameKey), jsonHole{pod: 0}, true
}

// quotedValue returns where the string value that follows a key at i
// starts and ends, quotes excluded.
func quotedValue(text []byte, i int) (start, end int, err error) {
	for i < len(text) && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r') {
		i++
	}
	if i >= len(text) || text[i] != '"' {
		return 0, 0, fmt.Errorf("byte %d: want a string value", i)
	}
	stop := bytes.IndexByte(text[i+1:], '"')
	if stop < 0 {
		return 0, 0, fmt.Errorf("byte %d: unterminated string", i)
	}
	return i + 1, i + 1 + stop, nil
}

// distinctSeries counts the label sets of samples: a series twice in one
// scrape is one sample for the collector.
func distinctSeries(samples []summary.Sample) int {
	keys := make([]string, len(samples))
	for i, s := range samples {
		keys[i] = s.Labels.String()
	}
	slices.Sort(keys)
	return len(slices.Compact(keys))
}

// render appends one scrape to buf: times are nowMs, pods carry the
// generation gen returns for them. seq is unused: values do not move.
func (t *jsonTemplate) render(buf []byte, _ int64, nowMs int64, gen func(pod int) int64) []byte {
	now := time.UnixMilli(nowMs).UTC()
	for i, h := range t.holes {
		buf = append(buf, t.pieces[i]...)
		if h.pod < 0 {
			buf = now.AppendFormat(buf, "2006-01-02T15:04:05.000Z07:00")
			continue
		}
		buf = appendPod(buf, t.pods[h.pod], gen(h.pod))
	}
	return append(buf, t.pieces[len(t.holes)]...)
}
