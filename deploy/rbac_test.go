package deploy

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// rbac answers "may this ServiceAccount do this?" from the Roles and
// bindings of one build, the way the API server's RBAC authorizer does for
// the rules Weir uses (no aggregation, no non-resource URLs).
type rbac struct {
	clusterRoles map[string]*rbacv1.ClusterRole
	roles        map[string]*rbacv1.Role
	crbs         []*rbacv1.ClusterRoleBinding
	rbs          []*rbacv1.RoleBinding
}

func newRBAC(objs []object) *rbac {
	r := &rbac{clusterRoles: map[string]*rbacv1.ClusterRole{}, roles: map[string]*rbacv1.Role{}}
	for _, o := range objs {
		switch v := o.typed.(type) {
		case *rbacv1.ClusterRole:
			r.clusterRoles[v.Name] = v
		case *rbacv1.Role:
			r.roles[v.Namespace+"/"+v.Name] = v
		case *rbacv1.ClusterRoleBinding:
			r.crbs = append(r.crbs, v)
		case *rbacv1.RoleBinding:
			r.rbs = append(r.rbs, v)
		}
	}
	return r
}

// request is one API request: resource may carry a subresource
// ("nodes/metrics"); namespace is empty for cluster-scoped resources.
type request struct {
	verb, group, resource, namespace string
}

func (q request) String() string {
	g := q.group
	if g == "" {
		g = "core"
	}
	return fmt.Sprintf("%s %s/%s", q.verb, g, q.resource)
}

func (r *rbac) allowed(ns, sa string, q request) bool {
	subject := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == sa && s.Namespace == ns
		})
	}
	var rules []rbacv1.PolicyRule
	for _, b := range r.crbs {
		if subject(b.Subjects) && b.RoleRef.Kind == "ClusterRole" && r.clusterRoles[b.RoleRef.Name] != nil {
			rules = append(rules, r.clusterRoles[b.RoleRef.Name].Rules...)
		}
	}
	for _, b := range r.rbs {
		if !subject(b.Subjects) || (q.namespace != b.Namespace) {
			continue
		}
		switch b.RoleRef.Kind {
		case "ClusterRole":
			if cr := r.clusterRoles[b.RoleRef.Name]; cr != nil {
				rules = append(rules, cr.Rules...)
			}
		case "Role":
			if role := r.roles[b.Namespace+"/"+b.RoleRef.Name]; role != nil {
				rules = append(rules, role.Rules...)
			}
		}
	}
	return slices.ContainsFunc(rules, func(p rbacv1.PolicyRule) bool {
		return has(p.Verbs, q.verb) && has(p.APIGroups, q.group) && has(p.Resources, q.resource) && len(p.ResourceNames) == 0
	})
}

func has(list []string, v string) bool { return slices.Contains(list, v) || slices.Contains(list, "*") }

// TestRBAC checks least privilege on the single-cluster build, the one with
// every ServiceAccount: each stage can do what it needs and nothing else.
func TestRBAC(t *testing.T) {
	objs := build(t, "overlays/single-cluster")
	r := newRBAC(objs)
	core := func(verb, resource string) request { return request{verb: verb, resource: resource} }
	apps := func(verb, resource string) request { return request{verb: verb, group: "apps", resource: resource} }
	batch := func(verb, resource string) request { return request{verb: verb, group: "batch", resource: resource} }
	inNS := func(q request) request { q.namespace = "weir"; return q }

	tests := []struct {
		sa          string
		may, mayNot []request
	}{
		{
			sa:  "weir-collector",
			may: []request{core("get", "nodes"), core("get", "nodes/metrics"), core("get", "nodes/stats"), core("get", "nodes/proxy")},
			mayNot: []request{core("list", "pods"), inNS(core("list", "pods")), core("list", "nodes"), core("watch", "nodes"),
				inNS(core("get", "secrets")), core("update", "nodes"), core("create", "nodes/proxy"), core("get", "pods/log"),
				inNS(core("create", "pods"))},
		},
		{
			sa: "weir-enricher",
			may: []request{core("list", "pods"), core("watch", "pods"), core("list", "nodes"), core("watch", "nodes"),
				apps("list", "replicasets"), apps("watch", "replicasets"), batch("list", "jobs"), batch("watch", "jobs"),
				apps("list", "deployments"), apps("list", "statefulsets"), apps("list", "daemonsets"), batch("list", "cronjobs")},
			mayNot: []request{inNS(core("get", "secrets")), core("list", "secrets"), core("list", "configmaps"), core("update", "pods"),
				core("delete", "pods"), core("get", "nodes/proxy"), core("get", "nodes/metrics"), core("create", "pods/exec"),
				apps("patch", "deployments")},
		},
	}
	check := func(r *rbac, sa string, may, mayNot []request) {
		t.Helper()
		for _, q := range may {
			if !r.allowed("weir", sa, q) {
				t.Errorf("%s cannot %s, which it needs", sa, q)
			}
		}
		for _, q := range mayNot {
			if r.allowed("weir", sa, q) {
				t.Errorf("%s can %s, which it must not", sa, q)
			}
		}
	}
	for _, tt := range tests {
		check(r, tt.sa, tt.may, tt.mayNot)
	}
	// On an edge, the hub's enricher reads the API with the same rights as
	// a local enricher, and the collector keeps its own.
	edge := newRBAC(build(t, "overlays/edge"))
	check(edge, "weir-hub-enricher", tests[1].may, tests[1].mayNot)
	check(edge, "weir-collector", tests[0].may, tests[0].mayNot)

	// The router, sinks and alerter never talk to the Kubernetes API: no
	// binding, and no token mounted to steal.
	some := []request{core("get", "nodes"), core("list", "pods"), inNS(core("get", "secrets")), core("get", "nodes/proxy")}
	idx := index(objs)
	for _, sa := range []string{"weir-router", "weir-sink-prometheus", "weir-alerter", "default"} {
		for _, q := range some {
			if r.allowed("weir", sa, q) {
				t.Errorf("%s can %s", sa, q)
			}
		}
		if sa == "default" {
			continue
		}
		acct := idx["ServiceAccount/"+sa].typed.(*corev1.ServiceAccount)
		pod := idx["Deployment/"+sa].typed
		if acct.AutomountServiceAccountToken == nil || *acct.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s mounts its token by default", sa)
		}
		if spec := podTemplates([]object{{typed: pod, u: idx["Deployment/"+sa].u}})["Deployment/"+sa].Spec; spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("Deployment %s mounts a service-account token it does not need", sa)
		}
	}

	// No rule anywhere grants a wildcard, and none touches secrets.
	for name, cr := range r.clusterRoles {
		for _, p := range cr.Rules {
			if slices.Contains(p.Verbs, "*") || slices.Contains(p.Resources, "*") || slices.Contains(p.APIGroups, "*") {
				t.Errorf("ClusterRole %s has a wildcard rule %v", name, p)
			}
			if slices.ContainsFunc(p.Resources, func(s string) bool { return strings.HasPrefix(s, "secrets") }) {
				t.Errorf("ClusterRole %s grants secrets", name)
			}
		}
	}

	// Central mode's role exists for those who bind it, and is bound to
	// nobody by default.
	if r.clusterRoles["weir-collector-central"] == nil {
		t.Fatal("ClusterRole weir-collector-central missing")
	}
	for _, b := range r.crbs {
		if b.RoleRef.Name == "weir-collector-central" {
			t.Errorf("ClusterRoleBinding %s binds the central-mode role by default", b.Name)
		}
	}
}
