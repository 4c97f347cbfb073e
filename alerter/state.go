package alerter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/prometheus/model/labels"
)

// stateRecord is one alert in the state bucket, under
// <rule key>.<label hash>: what a restarted alerter needs to keep the
// `for` clock and not notify twice.
type stateRecord struct {
	Labels          map[string]string `json:"labels"`
	Annotations     map[string]string `json:"annotations,omitempty"`
	State           AlertState        `json:"state"`
	Value           float64           `json:"value"`
	ActiveAt        time.Time         `json:"activeAt"`
	FiredAt         time.Time         `json:"firedAt,omitzero"`
	ResolvedAt      time.Time         `json:"resolvedAt,omitzero"`
	LastSentAt      time.Time         `json:"lastSentAt,omitzero"`
	KeepFiringSince time.Time         `json:"keepFiringSince,omitzero"`
	ValidUntil      time.Time         `json:"validUntil,omitzero"`
}

func alertKey(r *Rule, a *Alert) string {
	return fmt.Sprintf("%s.%016x", r.key, a.Labels.Hash())
}

// saveState writes the dirty alerts of g and deletes the removed ones.
func saveState(ctx context.Context, kv jetstream.KeyValue, g *Group, removed []Transition) error {
	var errs []error
	for _, tr := range removed {
		if err := kv.Delete(ctx, alertKey(tr.Rule, tr.Alert)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			errs = append(errs, err)
		}
	}
	for _, r := range g.Rules {
		for _, a := range r.active {
			if !a.dirty {
				continue
			}
			r.annotate(a)
			data, err := json.Marshal(stateRecord{
				Labels: a.Labels.Map(), Annotations: a.Annotations, State: a.State, Value: a.Value,
				ActiveAt: a.ActiveAt, FiredAt: a.FiredAt, ResolvedAt: a.ResolvedAt, LastSentAt: a.LastSentAt,
				KeepFiringSince: a.KeepFiringSince, ValidUntil: a.ValidUntil,
			})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if _, err := kv.Put(ctx, alertKey(r, a), data); err != nil {
				errs = append(errs, fmt.Errorf("put %s: %w", alertKey(r, a), err))
				continue
			}
			a.dirty = false
		}
	}
	return errors.Join(errs...)
}

// loadState puts the stored alerts back into the rules they belong to.
// Alerts of rules that no longer exist are deleted.
func loadState(ctx context.Context, kv jetstream.KeyValue, rs *RuleSet, holdUntil time.Time) (restored int, err error) {
	rules := map[string]*Rule{}
	for _, g := range rs.Groups {
		for _, r := range g.Rules {
			rules[r.key] = r
		}
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("list alert state: %w", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	for _, k := range keys {
		ruleKey, _, _ := strings.Cut(k, ".")
		r, ok := rules[ruleKey]
		if !ok {
			_ = kv.Delete(ctx, k)
			continue
		}
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return restored, fmt.Errorf("get alert state %s: %w", k, err)
		}
		var rec stateRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			_ = kv.Delete(ctx, k) // unreadable: start that alert afresh
			continue
		}
		lset := labels.FromMap(rec.Labels)
		r.active[lset.Hash()] = &Alert{
			Labels: lset, Annotations: rec.Annotations, State: rec.State, Value: rec.Value, ActiveAt: rec.ActiveAt,
			FiredAt: rec.FiredAt, ResolvedAt: rec.ResolvedAt, LastSentAt: rec.LastSentAt,
			KeepFiringSince: rec.KeepFiringSince, ValidUntil: rec.ValidUntil, holdUntil: holdUntil,
		}
		restored++
	}
	return restored, nil
}
