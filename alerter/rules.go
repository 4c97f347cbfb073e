package alerter

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/weirmetrics/weir/internal/config"
)

// ruleFile is the layout every Prometheus user knows; only alerting rules.
type ruleFile struct {
	Groups []groupNode `yaml:"groups"`
}

type groupNode struct {
	Name     string         `yaml:"name"`
	Interval model.Duration `yaml:"interval"`
	Rules    []ruleNode     `yaml:"rules"`
}

type ruleNode struct {
	Alert         yaml.Node         `yaml:"alert"`
	Expr          yaml.Node         `yaml:"expr"`
	For           model.Duration    `yaml:"for"`
	KeepFiringFor model.Duration    `yaml:"keep_firing_for"`
	Labels        map[string]string `yaml:"labels"`
	Annotations   map[string]string `yaml:"annotations"`
}

// RuleSet is every group of a set of rule files, compiled, and the
// selections the store keeps for them.
type RuleSet struct {
	Groups []*Group
	sels   []*selection
}

// Group is evaluated at its interval, its rules in order.
type Group struct {
	Name     string
	File     string
	Interval time.Duration
	Rules    []*Rule
	ec       *evalCtx
}

// Rule is one alerting rule and the alerts it holds.
type Rule struct {
	Name          string
	Expr          string
	For           time.Duration
	KeepFiringFor time.Duration
	File          string
	Line          int
	key           string // names the rule's alerts in the state bucket
	prog          *compiled
	labels        map[string]*template.Template // the templated ones
	staticLabels  map[string]string
	annotations   map[string]*template.Template
	active        map[uint64]*Alert
	lastErr       error
	loggedErr     string // the error last logged, so a failing rule logs once
}

// LoadRules reads and compiles files. Every error names file:line[:column]
// and the group and rule; all of them are returned at once.
func LoadRules(files []string, defaultInterval time.Duration) (*RuleSet, error) {
	rs := &RuleSet{}
	var errs []error
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("read rules: %w", err))
			continue
		}
		errs = append(errs, rs.add(f, data, defaultInterval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// One selection per key, with the widest window any rule reads.
	merged := map[string]*selection{}
	for _, g := range rs.Groups {
		for _, r := range g.Rules {
			for _, s := range r.prog.sels {
				if m, ok := merged[s.key]; ok {
					m.window = max(m.window, s.window)
					continue
				}
				cp := *s
				merged[s.key] = &cp
			}
		}
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rs.sels = append(rs.sels, merged[k])
	}
	return rs, nil
}

func (rs *RuleSet) add(file string, data []byte, defaultInterval time.Duration) error {
	var rf ruleFile
	if err := config.Decode(file, data, &rf); err != nil {
		return err
	}
	var errs []error
	groups := map[string]bool{}
	for _, gn := range rs.Groups {
		groups[gn.Name] = true
	}
	for gi, gn := range rf.Groups {
		if gn.Name == "" {
			errs = append(errs, fmt.Errorf("%s: groups[%d]: name is empty", file, gi))
			continue
		}
		if groups[gn.Name] {
			errs = append(errs, fmt.Errorf("%s: group %q: name used twice", file, gn.Name))
		}
		groups[gn.Name] = true
		g := &Group{Name: gn.Name, File: file, Interval: time.Duration(gn.Interval), ec: &evalCtx{}}
		if g.Interval <= 0 {
			g.Interval = defaultInterval
		}
		// A rule's alerts are keyed by group, name and which rule of that
		// name it is, so inserting another rule does not orphan them.
		seen := map[string]int{}
		for i, rn := range gn.Rules {
			occurrence := seen[rn.Alert.Value]
			seen[rn.Alert.Value]++
			r, err := compileRule(file, g, i, occurrence, rn)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			g.Rules = append(g.Rules, r)
		}
		rs.Groups = append(rs.Groups, g)
	}
	return errors.Join(errs...)
}

func compileRule(file string, g *Group, idx, occurrence int, rn ruleNode) (*Rule, error) {
	r := &Rule{
		Name: rn.Alert.Value, Expr: rn.Expr.Value, For: time.Duration(rn.For), KeepFiringFor: time.Duration(rn.KeepFiringFor),
		File: file, Line: rn.Alert.Line, labels: map[string]*template.Template{}, annotations: map[string]*template.Template{},
		active: map[uint64]*Alert{}, staticLabels: map[string]string{},
	}
	where := func(line, col int, format string, a ...any) error {
		return fmt.Errorf("%s:%d:%d: group %q rule %q: "+format, append([]any{file, line, col, g.Name, r.Name}, a...)...)
	}
	if r.Line == 0 {
		r.Line = rn.Expr.Line
	}
	if r.Name == "" || strings.ContainsAny(r.Name, "\n") {
		return nil, where(r.Line, rn.Alert.Column, "alert: name is empty (rules[%d])", idx)
	}
	if strings.TrimSpace(r.Expr) == "" {
		return nil, where(r.Line, rn.Alert.Column, "expr: empty")
	}
	if r.For < 0 || r.KeepFiringFor < 0 {
		return nil, where(r.Line, rn.Alert.Column, "for and keep_firing_for must not be negative")
	}
	c, err := compileExpr(r.Expr, g.ec)
	if err != nil {
		line, col := rn.Expr.Line, rn.Expr.Column
		var ee *ExprError
		if errors.As(err, &ee) {
			line, col = exprPosition(&rn.Expr, ee.Line, ee.Column)
		}
		return nil, where(line, col, "expr: %w", err)
	}
	r.prog = c
	var errs []error
	for _, m := range []struct {
		kind string
		src  map[string]string
		dst  map[string]*template.Template
	}{{"labels", rn.Labels, r.labels}, {"annotations", rn.Annotations, r.annotations}} {
		for k, v := range m.src {
			if m.kind == "labels" && !model.UTF8Validation.IsValidLabelName(k) {
				errs = append(errs, where(r.Line, 1, "labels: bad label name %q", k))
				continue
			}
			if m.kind == "labels" && !strings.Contains(v, "{{") {
				r.staticLabels[k] = v
				continue
			}
			t, err := parseTemplate(k, v)
			if err != nil {
				errs = append(errs, where(r.Line, 1, "%s.%s: template: %v", m.kind, k, err))
				continue
			}
			m.dst[k] = t
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%d", g.Name, r.Name, occurrence)
	r.key = fmt.Sprintf("%016x", h.Sum64())
	return r, nil
}

// exprPosition maps a position inside an expression to the file: a block
// scalar (| or >) starts on the line after its key.
func exprPosition(n *yaml.Node, line, col int) (int, int) {
	switch n.Style {
	case yaml.LiteralStyle, yaml.FoldedStyle:
		return n.Line + line, n.Column + col - 1
	case yaml.DoubleQuotedStyle, yaml.SingleQuotedStyle:
		if line == 1 {
			return n.Line, n.Column + col
		}
	}
	if line == 1 {
		return n.Line, n.Column + col - 1
	}
	return n.Line + line - 1, col
}
