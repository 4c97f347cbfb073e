package alerter

import (
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/expr-lang/expr/vm"
	"github.com/prometheus/prometheus/model/labels"
)

// AlertState is where an alert is in its life.
type AlertState int

// The states of an alert: inactive (resolved, kept a while so Alertmanager
// hears it), pending (true, waiting for `for`), firing.
const (
	StateInactive AlertState = iota
	StatePending
	StateFiring
)

func (s AlertState) String() string {
	switch s {
	case StatePending:
		return "pending"
	case StateFiring:
		return "firing"
	}
	return "inactive"
}

// resolvedRetention is how long a resolved alert is kept and re-sent as
// resolved, as Prometheus does, so an Alertmanager that missed the first
// resolved notification still hears it.
const resolvedRetention = 15 * time.Minute

// Alert is one instance of a rule: one label set.
type Alert struct {
	Labels          labels.Labels
	Annotations     map[string]string
	State           AlertState
	Value           float64
	ActiveAt        time.Time
	FiredAt         time.Time
	ResolvedAt      time.Time
	LastSentAt      time.Time
	KeepFiringSince time.Time
	ValidUntil      time.Time
	// holdUntil keeps a restored alert while the windows fill again.
	holdUntil time.Time
	// annotated is false when Value or Labels changed since the
	// annotations were expanded: they are expanded only when read.
	annotated bool
	// dirty marks a change the state bucket has not stored yet.
	dirty bool
}

// needsSending: firing alerts are re-sent every resendDelay; a resolved
// one is sent once more when it resolved since the last send.
func (a *Alert) needsSending(ts time.Time, resendDelay time.Duration) bool {
	if a.State == StatePending {
		return false
	}
	if a.ResolvedAt.After(a.LastSentAt) {
		return true
	}
	return !a.LastSentAt.Add(resendDelay).After(ts)
}

// Transition is one state change of one alert.
type Transition struct {
	Rule     *Rule
	Alert    *Alert
	From, To AlertState
	At       time.Time
	Removed  bool // the alert is forgotten (pending that stopped, or resolved long ago)
}

// run evaluates the expression and returns the elements that make alerts.
func (r *Rule) run() ([]Sample, error) {
	out, err := vm.Run(r.prog.prog, nil)
	if err != nil {
		return nil, err
	}
	switch v := out.(type) {
	case Vector:
		return v.samples(), nil
	case bool:
		if v {
			return []Sample{{Labels: labels.EmptyLabels(), Value: 1}}, nil
		}
		return nil, nil
	case float64:
		if v != 0 && !math.IsNaN(v) {
			return []Sample{{Labels: labels.EmptyLabels(), Value: v}}, nil
		}
		return nil, nil
	case int:
		if v != 0 {
			return []Sample{{Labels: labels.EmptyLabels(), Value: float64(v)}}, nil
		}
		return nil, nil
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("expression returned %T, want a vector, a bool or a number", out)
}

// Eval runs the rule at ts and moves its alerts through their states, as
// Prometheus's AlertingRule.Eval does. It returns every state change.
func (r *Rule) Eval(ts time.Time) ([]Transition, error) {
	samples, err := r.run()
	if err != nil {
		r.lastErr = err
		return nil, err
	}
	r.lastErr = nil
	var changes []Transition
	seen := make(map[uint64]struct{}, len(samples))
	for _, s := range samples {
		lset := r.alertLabels(s)
		h := lset.Hash()
		if _, dup := seen[h]; dup {
			r.lastErr = fmt.Errorf("two elements have the labels %s once the rule's labels are added", lset)
			return changes, r.lastErr
		}
		seen[h] = struct{}{}
		if a, ok := r.active[h]; ok && a.State != StateInactive {
			a.Value, a.Labels, a.annotated = s.Value, lset, false
			continue
		}
		a := &Alert{Labels: lset, State: StatePending, Value: s.Value, ActiveAt: ts, dirty: true}
		r.annotate(a)
		r.active[h] = a
		changes = append(changes, Transition{Rule: r, Alert: a, From: StateInactive, To: StatePending, At: ts})
	}
	for h, a := range r.active {
		if _, ok := seen[h]; !ok {
			if ts.Before(a.holdUntil) {
				continue
			}
			keepFiring := false
			if a.State == StateFiring && r.KeepFiringFor > 0 {
				if a.KeepFiringSince.IsZero() {
					a.KeepFiringSince, a.dirty = ts, true
				}
				keepFiring = ts.Sub(a.KeepFiringSince) < r.KeepFiringFor
			}
			if keepFiring {
				continue
			}
			if a.State == StatePending || (a.State == StateInactive && ts.Sub(a.ResolvedAt) > resolvedRetention) {
				delete(r.active, h)
				changes = append(changes, Transition{Rule: r, Alert: a, From: a.State, To: StateInactive, At: ts, Removed: true})
				a.State = StateInactive
				continue
			}
			if a.State != StateInactive {
				changes = append(changes, Transition{Rule: r, Alert: a, From: a.State, To: StateInactive, At: ts})
				a.State = StateInactive
				a.ResolvedAt = ts
				a.dirty = true
			}
			continue
		}
		if !a.KeepFiringSince.IsZero() {
			a.KeepFiringSince, a.dirty = time.Time{}, true
		}
		if a.State == StatePending && ts.Sub(a.ActiveAt) >= r.For {
			a.State = StateFiring
			a.FiredAt = ts
			a.dirty = true
			changes = append(changes, Transition{Rule: r, Alert: a, From: StatePending, To: StateFiring, At: ts})
		}
	}
	return changes, nil
}

// alertLabels builds an alert's labels: the element's without the metric
// name, then the rule's, then alertname.
func (r *Rule) alertLabels(s Sample) labels.Labels {
	b := labels.NewBuilder(s.Labels.DropMetricName())
	for k, v := range r.staticLabels {
		b.Set(k, v)
	}
	if len(r.labels) > 0 {
		data := tmplData{Labels: s.Labels.DropMetricName().Map(), Value: s.Value}
		for k, t := range r.labels {
			v, err := expand(t, data)
			if err != nil {
				v = fmt.Sprintf("<error expanding template: %v>", err)
			}
			b.Set(k, v)
		}
	}
	b.Set(labels.AlertName, r.Name)
	return b.Labels()
}

// annotate expands a's annotations over its labels and value, if they
// changed since the last time.
func (r *Rule) annotate(a *Alert) {
	if a.annotated && a.Annotations != nil {
		return
	}
	data := tmplData{Labels: a.Labels.Map(), Value: a.Value}
	ann := make(map[string]string, len(r.annotations))
	for k, t := range r.annotations {
		v, err := expand(t, data)
		if err != nil {
			v = fmt.Sprintf("<error expanding template: %v>", err)
		}
		ann[k] = v
	}
	a.Annotations, a.annotated = ann, true
}

// Alerts returns the rule's alerts ordered by labels.
func (r *Rule) Alerts() []*Alert {
	out := make([]*Alert, 0, len(r.active))
	for _, a := range r.active {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return labels.Compare(out[i].Labels, out[j].Labels) < 0 })
	return out
}

// Health is nil when the last evaluation worked.
func (r *Rule) Health() error { return r.lastErr }

// Eval sets the group's evaluation time and evaluates every rule; a rule
// that fails is reported and the others still run.
func (g *Group) Eval(store *Store, ts time.Time) (changes []Transition, errs []error) {
	store.mu.RLock()
	defer store.mu.RUnlock()
	g.ec.reset(store, ts.UnixMilli())
	for _, r := range g.Rules {
		c, err := r.Eval(ts)
		changes = append(changes, c...)
		if err != nil {
			errs = append(errs, fmt.Errorf("group %q rule %q (%s:%d): %w", g.Name, r.Name, r.File, r.Line, err))
		}
	}
	return changes, errs
}
