package alerter

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
)

// Sample is one labeled value of a Vector.
type Sample struct {
	Labels labels.Labels
	Value  float64
}

// Vector is what most functions of the rule language return: a list of
// labeled values, one per series or per group. A Vector made by series()
// also remembers its selection, so that range functions can read the
// window of every selected series.
type Vector struct {
	Samples []Sample
	sel     *selection
	// ec is set on a Vector of series() until something reads its latest
	// values: a range function reads the window instead, and skips that.
	ec *evalCtx
}

func (v Vector) samples() []Sample {
	if v.ec != nil {
		return v.ec.latest(v.sel)
	}
	return v.Samples
}

func (v Vector) String() string {
	ss := v.samples()
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = fmt.Sprintf("%s => %g", s.Labels, s.Value)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// arithmetic and comparison operators between vectors and numbers.
type binOp struct {
	name  string // name of the expr function the operator is rewritten to
	token string
	cmp   bool
	fn    func(a, b float64) (float64, bool)
}

var binOps = []binOp{
	{"__op_add", "+", false, func(a, b float64) (float64, bool) { return a + b, true }},
	{"__op_sub", "-", false, func(a, b float64) (float64, bool) { return a - b, true }},
	{"__op_mul", "*", false, func(a, b float64) (float64, bool) { return a * b, true }},
	{"__op_div", "/", false, func(a, b float64) (float64, bool) { return a / b, true }},
	{"__op_gt", ">", true, func(a, b float64) (float64, bool) { return a, a > b }},
	{"__op_lt", "<", true, func(a, b float64) (float64, bool) { return a, a < b }},
	{"__op_ge", ">=", true, func(a, b float64) (float64, bool) { return a, a >= b }},
	{"__op_le", "<=", true, func(a, b float64) (float64, bool) { return a, a <= b }},
	{"__op_eq", "==", true, func(a, b float64) (float64, bool) { return a, a == b }},
	{"__op_ne", "!=", true, func(a, b float64) (float64, bool) { return a, a != b }},
}

// apply evaluates op with at least one Vector operand. A comparison keeps
// the elements for which it holds (with the vector's value, as PromQL does
// without bool); arithmetic drops the metric name.
func (op binOp) apply(l, r any) (any, error) {
	lv, lok := l.(Vector)
	rv, rok := r.(Vector)
	lv.Samples, rv.Samples = lv.samples(), rv.samples()
	switch {
	case lok && rok:
		return op.vectors(lv, rv)
	case lok:
		n, err := toFloat(r)
		if err != nil {
			return nil, fmt.Errorf("%s: right operand: %w", op.token, err)
		}
		return op.scalar(lv, n, false), nil
	case rok:
		n, err := toFloat(l)
		if err != nil {
			return nil, fmt.Errorf("%s: left operand: %w", op.token, err)
		}
		return op.scalar(rv, n, true), nil
	}
	return nil, fmt.Errorf("%s: no vector operand", op.token)
}

func (op binOp) scalar(v Vector, n float64, scalarLeft bool) Vector {
	out := make([]Sample, 0, len(v.Samples))
	for _, s := range v.Samples {
		a, b := s.Value, n
		if scalarLeft {
			a, b = n, s.Value
		}
		val, keep := op.fn(a, b)
		if !keep {
			continue
		}
		if op.cmp {
			out = append(out, Sample{Labels: s.Labels, Value: s.Value})
			continue
		}
		out = append(out, Sample{Labels: s.Labels.DropMetricName(), Value: val})
	}
	return Vector{Samples: out}
}

// vectors joins l and r on the label names both sides carry (the metric
// name aside). One side may have several elements per join key (many to
// one); the result then keeps that side's labels.
func (op binOp) vectors(l, r Vector) (Vector, error) {
	shared := sharedNames(l.Samples, r.Samples)
	lIdx, lDup := indexBy(l.Samples, shared)
	rIdx, rDup := indexBy(r.Samples, shared)
	if lDup && rDup {
		return Vector{}, fmt.Errorf("%s: many-to-many match on labels %v: aggregate one side first", op.token, shared)
	}
	// Iterate the side that may repeat a key; the result keeps its labels.
	keepRight := !lDup && rDup
	outer, inner, innerIdx := l.Samples, r.Samples, rIdx
	if keepRight {
		outer, inner, innerIdx = r.Samples, l.Samples, lIdx
	}
	var out []Sample
	buf := make([]byte, 0, 256)
	for _, s := range outer {
		buf = s.Labels.BytesWithLabels(buf[:0], shared...)
		j, ok := innerIdx[string(buf)]
		if !ok {
			continue
		}
		a, b := s.Value, inner[j].Value
		if keepRight {
			a, b = b, a
		}
		val, keep := op.fn(a, b)
		switch {
		case !keep:
		case op.cmp:
			out = append(out, Sample{Labels: s.Labels, Value: a})
		default:
			out = append(out, Sample{Labels: s.Labels.DropMetricName(), Value: val})
		}
	}
	return Vector{Samples: out}, nil
}

func sharedNames(l, r []Sample) []string {
	names := func(ss []Sample) map[string]bool {
		m := map[string]bool{}
		for _, s := range ss {
			s.Labels.Range(func(lb labels.Label) { m[lb.Name] = true })
		}
		return m
	}
	ln, rn := names(l), names(r)
	var shared []string
	for n := range ln {
		if rn[n] && n != labels.MetricName {
			shared = append(shared, n)
		}
	}
	slices.Sort(shared)
	return shared
}

func indexBy(ss []Sample, names []string) (map[string]int, bool) {
	idx := make(map[string]int, len(ss))
	dup := false
	buf := make([]byte, 0, 256)
	for i, s := range ss {
		buf = s.Labels.BytesWithLabels(buf[:0], names...)
		if _, ok := idx[string(buf)]; ok {
			dup = true
			continue
		}
		idx[string(buf)] = i
	}
	return idx, dup
}

func toFloat(x any) (float64, error) {
	switch n := x.(type) {
	case float64:
		return n, nil
	case int:
		return float64(n), nil
	case Vector:
		ss := n.samples()
		if len(ss) != 1 {
			return math.NaN(), fmt.Errorf("vector of %d elements where one number is needed", len(ss))
		}
		return ss[0].Value, nil
	}
	return math.NaN(), fmt.Errorf("%T is not a number", x)
}
