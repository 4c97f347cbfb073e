package alerter

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/weirmetrics/weir/internal/config"
)

// testFile is the layout of `promtool test rules` files, alerting part.
type testFile struct {
	RuleFiles          []string       `yaml:"rule_files"`
	EvaluationInterval model.Duration `yaml:"evaluation_interval"`
	Tests              []testGroup    `yaml:"tests"`
}

type testGroup struct {
	Name          string          `yaml:"name"`
	Interval      model.Duration  `yaml:"interval"`
	InputSeries   []inputSeries   `yaml:"input_series"`
	AlertRuleTest []alertTestCase `yaml:"alert_rule_test"`
}

type inputSeries struct {
	Series string `yaml:"series"`
	Values string `yaml:"values"`
}

type alertTestCase struct {
	EvalTime  model.Duration `yaml:"eval_time"`
	Alertname string         `yaml:"alertname"`
	ExpAlerts []expAlert     `yaml:"exp_alerts"`
}

type expAlert struct {
	ExpLabels      map[string]string `yaml:"exp_labels"`
	ExpAnnotations map[string]string `yaml:"exp_annotations"`
}

// lookback is how long a latest value stays valid, as in Prometheus.
const lookback = 5 * time.Minute

// TestRules runs the unit tests in file, as `promtool test rules` does, and
// writes one line per test group to w. The error lists every failed case.
func TestRules(file string, w io.Writer) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("read rule test: %w", err)
	}
	var tf testFile
	if err := config.Decode(file, data, &tf); err != nil {
		return err
	}
	interval := time.Duration(tf.EvaluationInterval)
	if interval <= 0 {
		interval = time.Minute
	}
	ruleFiles := make([]string, len(tf.RuleFiles))
	for i, f := range tf.RuleFiles {
		if !filepath.IsAbs(f) {
			f = filepath.Join(filepath.Dir(file), f)
		}
		ruleFiles[i] = f
	}
	var errs []error
	for i, tg := range tf.Tests {
		name := tg.Name
		if name == "" {
			name = fmt.Sprintf("tests[%d]", i)
		}
		err := runTestGroup(ruleFiles, interval, tg)
		if err != nil {
			fmt.Fprintf(w, "FAIL %s: %s\n", file, name)
			errs = append(errs, fmt.Errorf("%s: %s: %w", file, name, err))
			continue
		}
		fmt.Fprintf(w, "ok   %s: %s\n", file, name)
	}
	return errors.Join(errs...)
}

// maxTestSteps bounds what one test may ask for, evaluations and values of
// one input series alike, so a typo (10000000x) fails instead of filling
// memory.
const maxTestSteps = 100000

var expansionRE = regexp.MustCompile(`x(\d+)`)

func checkExpansion(values string) error {
	total := 0
	for _, m := range expansionRE.FindAllStringSubmatch(values, -1) {
		n, err := strconv.Atoi(m[1])
		if err != nil || n > maxTestSteps {
			return fmt.Errorf("values %q: expands to more than %d values", values, maxTestSteps)
		}
		total += n
	}
	if total > maxTestSteps {
		return fmt.Errorf("values %q: expands to more than %d values", values, maxTestSteps)
	}
	return nil
}

type testPoint struct {
	lset labels.Labels
	t    int64
	v    float64
}

func runTestGroup(ruleFiles []string, interval time.Duration, tg testGroup) error {
	rs, err := LoadRules(ruleFiles, interval)
	if err != nil {
		return err
	}
	for _, g := range rs.Groups {
		g.Interval = interval
	}
	step := time.Duration(tg.Interval)
	if step <= 0 {
		step = interval
	}
	var points []testPoint
	for _, in := range tg.InputSeries {
		if err := checkExpansion(in.Values); err != nil {
			return fmt.Errorf("input series %s: %w", in.Series, err)
		}
		lset, vals, err := promParser.ParseSeriesDesc(in.Series + " " + in.Values)
		if err != nil {
			return fmt.Errorf("input series %s: %w", in.Series, err)
		}
		for i, sv := range vals {
			if !sv.Omitted {
				points = append(points, testPoint{lset, int64(i) * step.Milliseconds(), sv.Value})
			}
		}
	}
	sort.SliceStable(points, func(i, j int) bool { return points[i].t < points[j].t })
	store := newStore(rs.sels, interval.Milliseconds(), lookback.Milliseconds())
	var last time.Duration
	cases := map[time.Duration][]alertTestCase{}
	for _, c := range tg.AlertRuleTest {
		d := time.Duration(c.EvalTime)
		if d%interval != 0 {
			return fmt.Errorf("eval_time %s: not a multiple of evaluation_interval %s", d, interval)
		}
		if d < 0 || d/interval > maxTestSteps {
			return fmt.Errorf("eval_time %s: more than %d evaluations of %s", d, maxTestSteps, interval)
		}
		cases[d] = append(cases[d], c)
		last = max(last, d)
	}
	var errs []error
	next := 0
	for ts := time.Duration(0); ts <= last; ts += interval {
		for next < len(points) && points[next].t <= ts.Milliseconds() {
			store.ingestLabels(points[next].lset, points[next].t, points[next].v)
			next++
		}
		at := time.UnixMilli(0).UTC().Add(ts)
		for _, g := range rs.Groups {
			if _, evalErrs := g.Eval(store, at); len(evalErrs) > 0 {
				errs = append(errs, fmt.Errorf("at %s: %w", model.Duration(ts), errors.Join(evalErrs...)))
			}
		}
		for _, c := range cases[ts] {
			if err := checkAlerts(rs, c); err != nil {
				errs = append(errs, fmt.Errorf("eval_time %s alertname %s: %w", model.Duration(ts), c.Alertname, err))
			}
		}
	}
	return errors.Join(errs...)
}

// checkAlerts compares the firing alerts of the rules named c.Alertname
// with the expected ones, in any order.
func checkAlerts(rs *RuleSet, c alertTestCase) error {
	var got []string
	found := false
	for _, g := range rs.Groups {
		for _, r := range g.Rules {
			if r.Name != c.Alertname {
				continue
			}
			found = true
			for _, a := range r.Alerts() {
				if a.State == StateFiring {
					r.annotate(a)
					got = append(got, describe(a.Labels.Map(), a.Annotations))
				}
			}
		}
	}
	if !found {
		return fmt.Errorf("no rule named %q", c.Alertname)
	}
	var want []string
	for _, e := range c.ExpAlerts {
		lm := maps.Clone(e.ExpLabels)
		if lm == nil {
			lm = map[string]string{}
		}
		lm[labels.AlertName] = c.Alertname
		want = append(want, describe(lm, e.ExpAnnotations))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		return fmt.Errorf("\n  got  %s\n  want %s", orNone(got), orNone(want))
	}
	return nil
}

func describe(lm, ann map[string]string) string {
	return fmt.Sprintf("labels %s annotations %s", labels.FromMap(lm), labels.FromMap(ann))
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "(no alerts)"
	}
	return strings.Join(ss, "\n       ")
}
