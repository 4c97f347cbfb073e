package alerter

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// evalCtx is what the functions of one group's expressions read: the store
// and the evaluation time. A group evaluates its rules one at a time, so
// one evalCtx per group is set before each evaluation.
type evalCtx struct {
	store *Store
	now   int64 // milliseconds
	// memo holds what this evaluation already computed from a selection:
	// rules of a group often share a rate or a selection (a warning and a
	// critical threshold), and read it once. Reset at every evaluation.
	memo map[string][]Sample
	// scratch holds a window read around staleness markers.
	scratch windowScratch
}

func (c *evalCtx) reset(store *Store, now int64) {
	c.store, c.now = store, now
	if c.memo == nil {
		c.memo = map[string][]Sample{}
	}
	clear(c.memo)
}

// latest is store.latest, once per selection and evaluation.
func (c *evalCtx) latest(sel *selection) []Sample {
	key := "\x00latest\x00" + sel.key
	if ss, ok := c.memo[key]; ok {
		return ss
	}
	ss := c.store.latest(sel, c.now)
	c.memo[key] = ss
	return ss
}

// rangeFunc computes one value from the samples of one series in a range;
// ok false means no value (too few samples).
type rangeFunc func(ts []int64, vs []float64, now, rng int64) (v float64, ok bool)

// rangeFuncs are the functions over a window: name(series(...), "5m").
var rangeFuncs = map[string]rangeFunc{
	"rate": func(ts []int64, vs []float64, now, rng int64) (float64, bool) {
		return extrapolated(ts, vs, now, rng, true, true)
	},
	"increase": func(ts []int64, vs []float64, now, rng int64) (float64, bool) {
		return extrapolated(ts, vs, now, rng, true, false)
	},
	"delta": func(ts []int64, vs []float64, now, rng int64) (float64, bool) {
		return extrapolated(ts, vs, now, rng, false, false)
	},
	"irate": func(ts []int64, vs []float64, _, _ int64) (float64, bool) {
		n := len(vs)
		if n < 2 || ts[n-1] == ts[n-2] {
			return 0, false
		}
		d := vs[n-1] - vs[n-2]
		if d < 0 { // counter reset: the new value counts from zero
			d = vs[n-1]
		}
		return d / (float64(ts[n-1]-ts[n-2]) / 1000), true
	},
	"avg_over_time": func(_ []int64, vs []float64, _, _ int64) (float64, bool) {
		if len(vs) == 0 {
			return 0, false
		}
		sum := 0.0
		for _, v := range vs {
			sum += v
		}
		return sum / float64(len(vs)), true
	},
	"sum_over_time": func(_ []int64, vs []float64, _, _ int64) (float64, bool) {
		sum := 0.0
		for _, v := range vs {
			sum += v
		}
		return sum, len(vs) > 0
	},
	"min_over_time": func(_ []int64, vs []float64, _, _ int64) (float64, bool) {
		if len(vs) == 0 {
			return 0, false
		}
		return slices.Min(vs), true
	},
	"max_over_time": func(_ []int64, vs []float64, _, _ int64) (float64, bool) {
		if len(vs) == 0 {
			return 0, false
		}
		return slices.Max(vs), true
	},
	"count_over_time": func(_ []int64, vs []float64, _, _ int64) (float64, bool) {
		return float64(len(vs)), len(vs) > 0
	},
	"changes": func(_ []int64, vs []float64, _, _ int64) (float64, bool) {
		n := 0
		for i := 1; i < len(vs); i++ {
			if vs[i] != vs[i-1] && !(math.IsNaN(vs[i]) && math.IsNaN(vs[i-1])) {
				n++
			}
		}
		return float64(n), len(vs) > 0
	},
	"resets": func(_ []int64, vs []float64, _, _ int64) (float64, bool) {
		n := 0
		for i := 1; i < len(vs); i++ {
			if vs[i] < vs[i-1] {
				n++
			}
		}
		return float64(n), len(vs) > 0
	},
}

// extrapolated is PromQL's extrapolatedRate: the change over the samples in
// the range, extrapolated to the range's edges (or to zero for a counter).
func extrapolated(ts []int64, vs []float64, now, rng int64, counter, perSecond bool) (float64, bool) {
	n := len(vs)
	if n < 2 {
		return 0, false
	}
	result := vs[n-1] - vs[0]
	if counter {
		prev := vs[0]
		for _, v := range vs[1:] {
			if v < prev {
				result += prev
			}
			prev = v
		}
	}
	start, end := now-rng, now
	toStart := float64(ts[0]-start) / 1000
	toEnd := float64(end-ts[n-1]) / 1000
	sampled := float64(ts[n-1]-ts[0]) / 1000
	avg := sampled / float64(n-1)
	threshold := avg * 1.1
	if toStart >= threshold {
		toStart = avg / 2
	}
	if counter && result > 0 && vs[0] >= 0 {
		if toZero := sampled * (vs[0] / result); toZero < toStart {
			toStart = toZero
		}
	}
	if toEnd >= threshold {
		toEnd = avg / 2
	}
	factor := (sampled + toStart + toEnd) / sampled
	if perSecond {
		factor /= float64(rng) / 1000
	}
	return result * factor, true
}

func (c *evalCtx) series(args ...any) (any, error) {
	strs, err := stringArgs("series", args)
	if err != nil {
		return nil, err
	}
	key := selectionKey(strs[0], strs[1:])
	sel, ok := c.store.sels[key]
	if !ok {
		return nil, fmt.Errorf("series %s: not selected when the rules were loaded", key)
	}
	return Vector{sel: sel, ec: c}, nil
}

func (c *evalCtx) rangeCall(name string, f rangeFunc) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		v, ok := args[0].(Vector)
		if !ok || v.sel == nil {
			return nil, fmt.Errorf("%s: first argument must be series(...)", name)
		}
		rs, _ := args[1].(string)
		rng, err := parseRange(rs)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if name == "absent_over_time" {
			return c.absent(v.sel, rng), nil
		}
		key := name + "\x00" + rs + "\x00" + v.sel.key
		if ss, ok := c.memo[key]; ok {
			return Vector{Samples: ss}, nil
		}
		out := make([]Sample, 0, len(v.sel.series))
		for _, ms := range v.sel.series {
			ts, vs := ms.window(c.now, rng, &c.scratch)
			if r, ok := f(ts, vs, c.now, rng); ok {
				out = append(out, Sample{Labels: ms.noName, Value: r})
			}
		}
		c.memo[key] = out
		return Vector{Samples: out}, nil
	}
}

// absent is absent_over_time: one element valued 1, labeled with the
// selection's equality matchers, when no series has a sample in the range.
func (c *evalCtx) absent(sel *selection, rng int64) Vector {
	for _, ms := range sel.series {
		if ts, _ := ms.window(c.now, rng, &c.scratch); len(ts) > 0 {
			return Vector{}
		}
	}
	b := labels.NewScratchBuilder(len(sel.matchers))
	for _, m := range sel.matchers {
		if m.Type == labels.MatchEqual {
			b.Add(m.Name, m.Value)
		}
	}
	b.Sort()
	return Vector{Samples: []Sample{{Labels: b.Labels(), Value: 1}}}
}

func parseRange(s string) (int64, error) {
	d, err := model.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("range %q: %w", s, err)
	}
	if d <= 0 {
		return 0, fmt.Errorf("range %q: must be positive", s)
	}
	return int64(d) / 1e6, nil
}

// aggregate groups v by the given labels (all labels dropped when none).
func aggregate(name string, args []any) (any, error) {
	v, ok := args[0].(Vector)
	if !ok {
		return nil, fmt.Errorf("%s: first argument is %T, not a vector", name, args[0])
	}
	by, err := stringArgs(name, args[1:])
	if err != nil {
		return nil, err
	}
	slices.Sort(by) // BytesWithLabels reads the names in label order
	type group struct {
		lset       labels.Labels
		sum, n     float64
		minV, maxV float64
	}
	groups := map[string]*group{}
	var order []string
	buf := make([]byte, 0, 256)
	for _, s := range v.samples() {
		buf = s.Labels.BytesWithLabels(buf[:0], by...)
		g, ok := groups[string(buf)]
		if !ok {
			g = &group{lset: s.Labels.MatchLabels(true, by...), minV: s.Value, maxV: s.Value}
			groups[string(buf)] = g
			order = append(order, string(buf))
		}
		g.sum += s.Value
		g.n++
		g.minV = min(g.minV, s.Value)
		g.maxV = max(g.maxV, s.Value)
	}
	out := make([]Sample, 0, len(groups))
	for _, k := range order {
		g := groups[k]
		var val float64
		switch name {
		case "sum_by":
			val = g.sum
		case "avg_by":
			val = g.sum / g.n
		case "min_by":
			val = g.minV
		case "max_by":
			val = g.maxV
		case "count_by":
			val = g.n
		}
		out = append(out, Sample{Labels: g.lset, Value: val})
	}
	return Vector{Samples: out}, nil
}

// histogramQuantile is histogram_quantile(q, v) over the _bucket series of
// classic histograms (already rated, usually): buckets grouped by every
// label but le, interpolated linearly within the bucket as PromQL does.
func histogramQuantile(args ...any) (any, error) {
	q, err := toFloat(args[0])
	if err != nil {
		return nil, fmt.Errorf("histogram_quantile: quantile: %w", err)
	}
	v, ok := args[1].(Vector)
	if !ok {
		return nil, fmt.Errorf("histogram_quantile: second argument is %T, not a vector", args[1])
	}
	type bucket struct{ le, count float64 }
	type group struct {
		lset    labels.Labels
		buckets []bucket
	}
	groups := map[string]*group{}
	buf := make([]byte, 0, 256)
	for _, s := range v.samples() {
		leStr := s.Labels.Get("le")
		le, err := strconv.ParseFloat(leStr, 64)
		if err != nil {
			continue // not a bucket
		}
		buf = s.Labels.BytesWithoutLabels(buf[:0], labels.MetricName, "le")
		g, ok := groups[string(buf)]
		if !ok {
			g = &group{lset: labels.NewBuilder(s.Labels).Del(labels.MetricName, "le").Labels()}
			groups[string(buf)] = g
		}
		g.buckets = append(g.buckets, bucket{le, s.Value})
	}
	out := make([]Sample, 0, len(groups))
	for _, g := range groups {
		slices.SortFunc(g.buckets, func(a, b bucket) int { return cmpFloat(a.le, b.le) })
		n := len(g.buckets)
		if n < 2 || !math.IsInf(g.buckets[n-1].le, 1) {
			continue
		}
		// Counts must not decrease with le; a scrape mid-update may break it.
		for i := 1; i < n; i++ {
			g.buckets[i].count = max(g.buckets[i].count, g.buckets[i-1].count)
		}
		total := g.buckets[n-1].count
		var val float64
		switch {
		case q < 0:
			val = math.Inf(-1)
		case q > 1:
			val = math.Inf(1)
		case math.IsNaN(q) || total == 0 || math.IsNaN(total):
			// A NaN count turns every count above it NaN (max above):
			// nothing to interpolate.
			val = math.NaN()
		default:
			rank := q * total
			b := slices.IndexFunc(g.buckets, func(b bucket) bool { return b.count >= rank })
			if b < 0 {
				// No count reaches the rank (a negative total, 0 × +Inf):
				// the highest finite bound, as PromQL's sort.Search.
				b = n - 1
			}
			switch {
			case b == n-1:
				val = g.buckets[n-2].le
			case b == 0 && g.buckets[0].le <= 0:
				val = g.buckets[0].le
			default:
				start, prevCount := 0.0, 0.0
				if b > 0 {
					start, prevCount = g.buckets[b-1].le, g.buckets[b-1].count
				}
				end := g.buckets[b].le
				inBucket := g.buckets[b].count - prevCount
				val = start + (end-start)*((rank-prevCount)/inBucket)
			}
		}
		out = append(out, Sample{Labels: g.lset, Value: val})
	}
	sortSamples(out)
	return Vector{Samples: out}, nil
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func stringArgs(fn string, args []any) ([]string, error) {
	out := make([]string, len(args))
	for i, a := range args {
		s, ok := a.(string)
		if !ok {
			return nil, fmt.Errorf("%s: argument %d is %T, not a string", fn, i+1, a)
		}
		out[i] = s
	}
	return out, nil
}

// selectionKey names one series(name, matchers...) call.
func selectionKey(name string, matchers []string) string {
	return name + "{" + strings.Join(matchers, ",") + "}"
}

var promParser = parser.NewParser(parser.Options{})

// parseSelection reads the arguments of series(): a metric name and label
// matchers in PromQL syntax, several per string or one per argument.
func parseSelection(name string, matchers []string) (*selection, error) {
	if !model.UTF8Validation.IsValidMetricName(name) || name == "" {
		return nil, fmt.Errorf("series: bad metric name %q", name)
	}
	sel := &selection{key: selectionKey(name, matchers), name: name}
	for _, m := range matchers {
		if strings.TrimSpace(m) == "" {
			continue
		}
		ms, err := promParser.ParseMetricSelector("{" + m + "}")
		if err != nil {
			return nil, fmt.Errorf("series %q: bad matcher %q: %w", name, m, err)
		}
		for _, lm := range ms {
			if lm.Name == labels.MetricName {
				return nil, fmt.Errorf("series %q: matcher %q: give the metric name as the first argument", name, m)
			}
		}
		sel.matchers = append(sel.matchers, ms...)
	}
	return sel, nil
}
