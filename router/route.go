package router

import (
	"fmt"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/weirmetrics/weir/proto"
)

// Env is what a route's expr predicate sees, once per series. Besides
// these, expr-lang's operators and builtins apply: `in`, `matches`,
// `startsWith`, `endsWith`, `contains`, `??`, `len`, `lower` …
//
//	label("namespace") != "kube-system" && name startsWith "container_"
//	"pod" in labels && source == "cadvisor"
type Env struct {
	// Labels maps every label name of the series to its value; a missing
	// name reads as "": `labels.namespace`, `labels["le"]`, `"pod" in labels`.
	Labels map[string]string `expr:"labels"`
	// Name is the metric name, the __name__ label.
	Name string `expr:"name"`
	// Cluster, Node and Source name the scrape the series came from.
	Cluster string `expr:"cluster"`
	Node    string `expr:"node"`
	Source  string `expr:"source"`
	// Label returns the value of a label, or "" when the series lacks it.
	Label func(name string) string `expr:"label"`
}

var promqlParser = parser.NewParser(parser.Options{})

func parseSelector(s string) ([]*labels.Matcher, error) {
	ms, err := promqlParser.ParseMetricSelector(s)
	if err != nil {
		return nil, fmt.Errorf("selector %q: %w", s, err)
	}
	return ms, nil
}

func compileExpr(src string) (*vm.Program, error) {
	p, err := expr.Compile(src, expr.Env(Env{}), expr.AsBool())
	if err != nil {
		// expr's message spans lines (source and a caret); keep it on one.
		return nil, fmt.Errorf("expr %q: %s", src, strings.Join(strings.Fields(err.Error()), " "))
	}
	return p, nil
}

// Why a route drops a series: the index into dropReasons, whose values
// are the reason label of the drop metrics.
const (
	dropMatch     = iota // no selector matched
	dropExpr             // the predicate returned false
	dropExprError        // the predicate failed on this series
	dropRelabel          // write_relabel_configs dropped it, or left no label
	numDropReasons

	kept = -1
)

var dropReasons = [numDropReasons]string{"match", "expr", "expr_error", "relabel"}

// route is a Route compiled once at New.
type route struct {
	name      string
	stream    string
	selectors [][]*labels.Matcher // OR of ANDs; none matches everything
	program   *vm.Program         // nil when the route has no expr
	steps     []relabelStep       // write_relabel_configs
	// direct is set when every step only keeps, drops or removes labels:
	// they then run on the series' own labels, without a labels.Builder.
	direct  bool
	metrics *routeMetrics
}

// relabelStep is one write_relabel_config. Keep, drop, labelkeep and
// labeldrop, the actions most routes use, match with Prometheus'
// FastRegexMatcher, which PromQL selectors use: the same anchored regular
// expression as relabel.Regexp, with fast paths for literals, prefixes,
// suffixes and sets. The other actions run as Prometheus runs them.
type relabelStep struct {
	cfg  *relabel.Config
	fast *labels.FastRegexMatcher // nil: relabel.ProcessBuilder
}

func newRelabelStep(cfg *relabel.Config) (relabelStep, error) {
	st := relabelStep{cfg: cfg}
	switch cfg.Action {
	case relabel.Keep, relabel.Drop, relabel.LabelKeep, relabel.LabelDrop:
		m, err := labels.NewFastRegexMatcher(cfg.Regex.String())
		if err != nil {
			return st, fmt.Errorf("regex %q: %w", cfg.Regex.String(), err)
		}
		st.fast = m
	}
	return st, nil
}

// filters reports whether the step keeps or drops the whole series.
func (st relabelStep) filters() bool {
	return st.fast != nil && (st.cfg.Action == relabel.Keep || st.cfg.Action == relabel.Drop)
}

// keeps applies a keep or drop step to the labels get reads, as
// relabel.Process does: the source labels' values joined by the separator
// are matched against the regex.
func (st relabelStep) keeps(get func(name string) string) bool {
	var v string
	switch src := st.cfg.SourceLabels; len(src) {
	case 0:
	case 1:
		v = get(string(src[0]))
	default:
		vals := make([]string, len(src))
		for i, n := range src {
			vals[i] = get(string(n))
		}
		v = strings.Join(vals, st.cfg.Separator)
	}
	return st.fast.MatchString(v) == (st.cfg.Action == relabel.Keep)
}

func compileRoute(r Route) (*route, error) {
	// The configs are validated (and their name validation scheme set) by
	// checkRoute, through Config.Validate, before New compiles the route.
	out := &route{name: r.Name, stream: proto.RouteStreamName(r.Name), direct: true}
	for _, cfg := range r.WriteRelabelConfigs {
		st, err := newRelabelStep(cfg)
		if err != nil {
			return nil, err
		}
		out.steps = append(out.steps, st)
		out.direct = out.direct && st.fast != nil
	}
	for _, s := range r.Match {
		ms, err := parseSelector(s)
		if err != nil {
			return nil, err
		}
		out.selectors = append(out.selectors, ms)
	}
	if strings.TrimSpace(r.Expr) != "" {
		p, err := compileExpr(r.Expr)
		if err != nil {
			return nil, err
		}
		out.program = p
	}
	return out, nil
}

// matches reports whether ls matches any of the route's selectors.
func (r *route) matches(ls []prompb.Label) bool {
	if len(r.selectors) == 0 {
		return true
	}
next:
	for _, sel := range r.selectors {
		for _, m := range sel {
			if !m.Matches(labelValue(ls, m.Name)) {
				continue next
			}
		}
		return true
	}
	return false
}

// labelValue is the value of name in ls, or "" as PromQL matchers expect
// for a missing label.
func labelValue(ls []prompb.Label, name string) string {
	for i := range ls {
		if ls[i].Name == name {
			return ls[i].Value
		}
	}
	return ""
}

// routeCounts are what one message did to one route; they go to the
// metrics once per message instead of once per series.
type routeCounts struct {
	seriesIn, samplesIn     int
	seriesKept, samplesKept int
	seriesDropped           [numDropReasons]int
	samplesDropped          [numDropReasons]int
	// rewritten counts kept series whose labels relabeling changed; with
	// nothing dropped either, the route's output is the input as it is.
	rewritten int
}

// unchanged reports whether the route kept the batch as it came.
func (c *routeCounts) unchanged() bool {
	return c.seriesKept == c.seriesIn && c.rewritten == 0
}

// router is the per-goroutine state that applies every route to a batch.
// It is reused from message to message, so that routing allocates little
// beyond what relabeling creates.
type router struct {
	routes []*route
	out    [][]prompb.TimeSeries // per route, the series it keeps
	counts []routeCounts
	arena  []prompb.Label // labels of relabeled series, reset per batch

	// Per-series views, built the first time a route needs them.
	lset       labels.Labels
	lsetFor    int
	scratch    labels.ScratchBuilder
	builder    *labels.Builder
	env        Env
	envFor     int
	machine    vm.VM
	exprErrors []error // the first few expr errors of a batch, for the log
}

func newRouter(routes []*route) *router {
	rt := &router{
		routes:  routes,
		out:     make([][]prompb.TimeSeries, len(routes)),
		counts:  make([]routeCounts, len(routes)),
		scratch: labels.NewScratchBuilder(16),
		builder: labels.NewBuilder(labels.EmptyLabels()),
		env:     Env{Labels: map[string]string{}},
	}
	rt.env.Label = func(name string) string { return rt.env.Labels[name] }
	return rt
}

// maxExprErrors bounds the expr errors one batch keeps for the log.
const maxExprErrors = 3

// route applies every route to the series of b. Afterwards rt.out[i]
// holds what route i keeps, sharing samples (and, where relabeling did not
// change them, labels) with b, and rt.counts[i] what happened.
func (rt *router) route(subj proto.Subject, b *proto.Batch) {
	rt.arena = rt.arena[:0]
	rt.lsetFor, rt.envFor = -1, -1
	rt.exprErrors = rt.exprErrors[:0]
	rt.env.Cluster, rt.env.Node, rt.env.Source = subj.Cluster, subj.Node, string(subj.Source)
	for i := range rt.routes {
		rt.out[i] = rt.out[i][:0]
		rt.counts[i] = routeCounts{}
	}
	for si := range b.Series {
		s := &b.Series[si]
		n := len(s.Samples) + len(s.Histograms)
		for ri, r := range rt.routes {
			c := &rt.counts[ri]
			c.seriesIn++
			c.samplesIn += n
			ls, drop := rt.apply(r, si, s.Labels)
			if drop != kept {
				c.seriesDropped[drop]++
				c.samplesDropped[drop] += n
				continue
			}
			c.seriesKept++
			c.samplesKept += n
			if &ls[0] != &s.Labels[0] || len(ls) != len(s.Labels) {
				c.rewritten++
			}
			rt.out[ri] = append(rt.out[ri], prompb.TimeSeries{
				Labels: ls, Samples: s.Samples, Exemplars: s.Exemplars, Histograms: s.Histograms,
			})
		}
	}
}

// keepAll records a message of series and samples that every route keeps
// as it came.
func (rt *router) keepAll(series, samples int) {
	rt.exprErrors = rt.exprErrors[:0]
	for i := range rt.routes {
		rt.out[i] = rt.out[i][:0]
		rt.counts[i] = routeCounts{seriesIn: series, samplesIn: samples, seriesKept: series, samplesKept: samples}
	}
}

// keepsEverything reports whether r publishes every series as it came: no
// matcher, no expr, no relabeling.
func (r *route) keepsEverything() bool {
	return len(r.selectors) == 0 && r.program == nil && len(r.steps) == 0
}

// apply runs one route on the series at index si: the labels to publish,
// or why it is dropped (kept when it is not).
func (rt *router) apply(r *route, si int, ls []prompb.Label) ([]prompb.Label, int) {
	if !r.matches(ls) {
		return nil, dropMatch
	}
	if r.program != nil {
		rt.fillEnv(si, ls)
		ok, err := rt.machine.Run(r.program, &rt.env)
		switch {
		case err != nil:
			if len(rt.exprErrors) < maxExprErrors {
				rt.exprErrors = append(rt.exprErrors, fmt.Errorf("route %s: %w", r.name, err))
			}
			return nil, dropExprError
		case ok != true:
			return nil, dropExpr
		}
	}
	switch {
	case len(r.steps) == 0:
		return ls, kept
	case r.direct:
		return rt.filter(r, ls)
	}
	rt.builder.Reset(rt.labelsOf(si, ls))
	for _, st := range r.steps {
		if st.filters() {
			if !st.keeps(rt.builder.Get) {
				return nil, dropRelabel
			}
		} else if !relabel.ProcessBuilder(rt.builder, st.cfg) {
			return nil, dropRelabel
		}
	}
	out := rt.builder.Labels()
	if out.IsEmpty() {
		return nil, dropRelabel
	}
	start := len(rt.arena)
	out.Range(func(l labels.Label) {
		rt.arena = append(rt.arena, prompb.Label{Name: l.Name, Value: l.Value})
	})
	return rt.arena[start:len(rt.arena):len(rt.arena)], kept
}

// filter runs a route whose steps only keep, drop or remove labels on the
// series' own labels: what is left is a subset, still sorted, shared with
// the input when no label was removed.
func (rt *router) filter(r *route, ls []prompb.Label) ([]prompb.Label, int) {
	cur := ls
	get := func(name string) string { return labelValue(cur, name) }
	for _, st := range r.steps {
		if st.filters() {
			if !st.keeps(get) {
				return nil, dropRelabel
			}
			continue
		}
		keep := st.cfg.Action == relabel.LabelKeep
		start := len(rt.arena)
		for _, l := range cur {
			if st.fast.MatchString(l.Name) == keep {
				rt.arena = append(rt.arena, l)
			}
		}
		if len(rt.arena)-start == len(cur) {
			rt.arena = rt.arena[:start] // nothing removed: keep sharing
			continue
		}
		cur = rt.arena[start:len(rt.arena):len(rt.arena)]
	}
	if len(cur) == 0 {
		return nil, dropRelabel
	}
	return cur, kept
}

// labelsOf converts the series at si once, however many routes relabel it.
func (rt *router) labelsOf(si int, ls []prompb.Label) labels.Labels {
	if rt.lsetFor != si {
		rt.scratch.Reset()
		for _, l := range ls {
			rt.scratch.Add(l.Name, l.Value)
		}
		rt.lset, rt.lsetFor = rt.scratch.Labels(), si
	}
	return rt.lset
}

// fillEnv sets the env to the series at si once, however many routes
// evaluate it. The map is reused: expr does not keep it.
func (rt *router) fillEnv(si int, ls []prompb.Label) {
	if rt.envFor == si {
		return
	}
	clear(rt.env.Labels)
	for _, l := range ls {
		rt.env.Labels[l.Name] = l.Value
	}
	rt.env.Name = rt.env.Labels[labels.MetricName]
	rt.envFor = si
}
