package deploy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// checkCustom checks a custom resource for the fields its controller needs,
// and rejects fields its CRD does not have, as the API server's structural
// schema would.
func checkCustom(u *unstructured.Unstructured) error {
	spec, ok := u.Object["spec"].(map[string]any)
	if !ok {
		return errors.New("spec: missing")
	}
	switch u.GetKind() {
	case "ScaledObject":
		return checkScaledObject(spec)
	case "TriggerAuthentication":
		return onlyKeys("spec", spec, "secretTargetRef", "env", "hashiCorpVault", "podIdentity", "configMapTargetRef")
	case "PodMonitor":
		return checkMonitor(spec, "podMetricsEndpoints", "podTargetLabels", "jobLabel", "namespaceSelector", "sampleLimit")
	case "ServiceMonitor":
		return checkMonitor(spec, "endpoints", "targetLabels", "podTargetLabels", "jobLabel", "namespaceSelector", "sampleLimit")
	case "PrometheusRule":
		return checkPrometheusRule(spec)
	}
	return fmt.Errorf("no checks for kind %s", u.GetKind())
}

func checkScaledObject(spec map[string]any) error {
	var errs []error
	errs = append(errs, onlyKeys("spec", spec, "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
		"idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"))
	if name, _, _ := unstructured.NestedString(spec, "scaleTargetRef", "name"); name == "" {
		errs = append(errs, errors.New("spec.scaleTargetRef.name: missing"))
	}
	minR, _, _ := unstructured.NestedInt64(spec, "minReplicaCount")
	maxR, found, _ := unstructured.NestedInt64(spec, "maxReplicaCount")
	if !found || maxR < 1 || minR > maxR {
		errs = append(errs, fmt.Errorf("spec: minReplicaCount %d and maxReplicaCount %d: want 0 <= min <= max, max >= 1", minR, maxR))
	}
	triggers, _, _ := unstructured.NestedSlice(spec, "triggers")
	if len(triggers) == 0 {
		errs = append(errs, errors.New("spec.triggers: empty"))
	}
	for i, tr := range triggers {
		path := fmt.Sprintf("spec.triggers[%d]", i)
		m, ok := tr.(map[string]any)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: not an object", path))
			continue
		}
		errs = append(errs, onlyKeys(path, m, "type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"))
		if m["type"] != "nats-jetstream" {
			errs = append(errs, fmt.Errorf("%s.type: %v, want nats-jetstream", path, m["type"]))
			continue
		}
		md, _, _ := unstructured.NestedStringMap(m, "metadata")
		errs = append(errs, onlyKeys(path+".metadata", toAny(md), "natsServerMonitoringEndpoint", "account", "stream", "consumer",
			"lagThreshold", "activationLagThreshold", "useHttps"))
		for _, k := range []string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"} {
			if md[k] == "" {
				errs = append(errs, fmt.Errorf("%s.metadata.%s: missing", path, k))
			}
		}
		if _, err := strconv.ParseInt(md["lagThreshold"], 10, 64); md["lagThreshold"] != "" && err != nil {
			errs = append(errs, fmt.Errorf("%s.metadata.lagThreshold: %w", path, err))
		}
	}
	if mods, found, _ := unstructured.NestedMap(spec, "advanced", "scalingModifiers"); found {
		errs = append(errs, onlyKeys("spec.advanced.scalingModifiers", mods, "formula", "target", "activationTarget", "metricType"))
		if f, _ := mods["formula"].(string); f == "" {
			errs = append(errs, errors.New("spec.advanced.scalingModifiers.formula: missing"))
		}
		if _, err := strconv.ParseFloat(fmt.Sprint(mods["target"]), 64); err != nil {
			errs = append(errs, fmt.Errorf("spec.advanced.scalingModifiers.target: %w", err))
		}
		for i, tr := range triggers {
			if name, _, _ := unstructured.NestedString(tr.(map[string]any), "name"); name == "" {
				errs = append(errs, fmt.Errorf("spec.triggers[%d].name: missing; the formula of scalingModifiers refers to triggers by name", i))
			}
		}
	}
	return errors.Join(errs...)
}

func checkMonitor(spec map[string]any, endpointsKey string, more ...string) error {
	var errs []error
	errs = append(errs, onlyKeys("spec", spec, append([]string{"selector", endpointsKey}, more...)...))
	if sel, _, _ := unstructured.NestedMap(spec, "selector"); len(sel) == 0 {
		errs = append(errs, errors.New("spec.selector: missing (an empty selector would scrape every pod)"))
	}
	eps, _, _ := unstructured.NestedSlice(spec, endpointsKey)
	if len(eps) == 0 {
		errs = append(errs, fmt.Errorf("spec.%s: empty", endpointsKey))
	}
	for i, ep := range eps {
		m, _ := ep.(map[string]any)
		if p, _ := m["port"].(string); p == "" {
			errs = append(errs, fmt.Errorf("spec.%s[%d].port: missing", endpointsKey, i))
		}
	}
	return errors.Join(errs...)
}

// checkPrometheusRule parses the groups as Prometheus would load them: every
// expression must parse and every template must compile.
func checkPrometheusRule(spec map[string]any) error {
	if err := onlyKeys("spec", spec, "groups"); err != nil {
		return err
	}
	data, err := yaml.Marshal(map[string]any{"groups": spec["groups"]})
	if err != nil {
		return err
	}
	p := parser.NewParser(parser.Options{})
	rgs, errs := rulefmt.Parse(data, false, model.UTF8Validation, p, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if len(errs) > 0 {
		return fmt.Errorf("spec.groups: %w", errors.Join(errs...))
	}
	if len(rgs.Groups) == 0 {
		return errors.New("spec.groups: empty")
	}
	return nil
}

// onlyKeys rejects keys outside allowed, naming them with path.
func onlyKeys(path string, m map[string]any, allowed ...string) error {
	var errs []error
	for k := range m {
		if !slices.Contains(allowed, k) {
			errs = append(errs, fmt.Errorf("%s.%s: unknown field", path, k))
		}
	}
	return errors.Join(errs...)
}

func toAny(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
