package deploy

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/weirmetrics/weir/internal/partition"
	"github.com/weirmetrics/weir/proto"
)

// TestManifestFilesDecodeStrictly decodes every file a kustomization names,
// on its own, before kustomize touches it.
func TestManifestFilesDecodeStrictly(t *testing.T) {
	for _, f := range manifestFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeDocs(data, f)
		if err != nil {
			t.Error(err)
			continue
		}
		if len(objs) == 0 {
			t.Errorf("%s: no object", f)
		}
	}
}

// TestStrictDecodingRejects shows that the decoding the other tests rely
// on fails on the mistakes it is there to catch.
func TestStrictDecodingRejects(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"unknown field in a Deployment", `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  replica: 2
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}
`, `unknown field "spec.replica"`},
		{"misspelled env source", `
apiVersion: v1
kind: Pod
metadata: {name: x}
spec:
  containers:
    - name: c
      image: i
      env: [{name: A, valueFrom: {secretRef: {name: s, key: k}}}]
`, `unknown field "spec.containers[0].env[0].valueFrom.secretRef"`},
		{"unknown kind", `
apiVersion: example.com/v1
kind: Gadget
metadata: {name: x}
`, "kind unknown"},
		{"ScaledObject trigger without consumer", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: x}
  maxReplicaCount: 2
  triggers:
    - type: nats-jetstream
      metadata: {natsServerMonitoringEndpoint: "n:8222", account: A, stream: S, lagThreshold: "10"}
`, "metadata.consumer: missing"},
		{"ScaledObject misspelled field", `
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: x}
spec:
  scaleTargetRef: {name: x}
  maxReplicas: 2
  triggers: []
`, "spec.maxReplicas: unknown field"},
		{"PrometheusRule with a bad expression", `
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: x}
spec:
  groups: [{name: g, rules: [{alert: A, expr: "rate(x[5m]"}]}]
`, "unclosed left parenthesis"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeDocs([]byte(tt.doc), "test")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestOverlays builds each overlay as `kubectl apply -k` would and checks
// its output: strict types, references that resolve, pod security, and
// what each overlay must and must not contain.
func TestOverlays(t *testing.T) {
	want := map[string]struct {
		has, hasNot []string // "Kind/name"
	}{
		"overlays/single-cluster": {
			has: []string{"Namespace/weir", "DaemonSet/weir-collector", "StatefulSet/nats", "Deployment/weir-enricher",
				"Deployment/weir-router", "Deployment/weir-sink-prometheus", "Deployment/weir-alerter",
				"ScaledObject/weir-enricher", "ScaledObject/weir-router", "ScaledObject/weir-sink-prometheus",
				"PodMonitor/weir", "PrometheusRule/weir-pipeline"},
			hasNot: []string{"Service/nats-leafnodes"},
		},
		"overlays/hub": {
			has: []string{"StatefulSet/nats", "Service/nats-leafnodes", "Deployment/weir-enricher", "Deployment/weir-router",
				"Deployment/weir-sink-prometheus", "Deployment/weir-alerter", "ScaledObject/weir-router"},
			hasNot: []string{"DaemonSet/weir-collector", "ClusterRole/weir-collector"},
		},
		"overlays/edge": {
			has: []string{"DaemonSet/weir-collector", "StatefulSet/nats", "Service/nats", "Secret/weir-nats-hub", "PodMonitor/weir",
				"ServiceAccount/weir-hub-enricher", "ClusterRole/weir-enricher"},
			hasNot: []string{"Deployment/weir-enricher", "Deployment/weir-router", "Deployment/weir-sink-prometheus",
				"Deployment/weir-alerter", "ScaledObject/weir-router", "Service/nats-headless"},
		},
	}
	for _, dir := range overlays {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			objs := build(t, dir)
			idx := index(objs)
			for _, k := range want[dir].has {
				if _, ok := idx[k]; !ok {
					t.Errorf("missing %s", k)
				}
			}
			for _, k := range want[dir].hasNot {
				if _, ok := idx[k]; ok {
					t.Errorf("has %s, which does not belong in %s", k, dir)
				}
			}
			checkAll(t, objs)
		})
	}
}

// TestOverlayTopology checks what makes the hub a hub and the edge an edge.
func TestOverlayTopology(t *testing.T) {
	hub := index(build(t, "overlays/hub"))
	natsConf := configMapByPrefix(t, hub, "nats-config")
	if !strings.Contains(natsConf.Data["leafnodes.conf"], "listen: 0.0.0.0:7422") {
		t.Errorf("hub nats-config leafnodes.conf has no leaf node listener:\n%s", natsConf.Data["leafnodes.conf"])
	}
	sts := hub["StatefulSet/nats"].typed.(*appsv1.StatefulSet)
	if *sts.Spec.Replicas != 3 {
		t.Errorf("hub NATS: %d servers, want 3", *sts.Spec.Replicas)
	}
	if !slices.ContainsFunc(sts.Spec.Template.Spec.Containers[0].Ports, func(p corev1.ContainerPort) bool { return p.Name == "leafnodes" && p.ContainerPort == 7422 }) {
		t.Error("hub NATS container does not expose the leafnodes port 7422")
	}

	edge := index(build(t, "overlays/edge"))
	leaf := edge["StatefulSet/nats"].typed.(*appsv1.StatefulSet)
	if *leaf.Spec.Replicas != 1 {
		t.Errorf("edge leaf NATS: %d servers, want 1", *leaf.Spec.Replicas)
	}
	if len(leaf.Spec.VolumeClaimTemplates) != 1 {
		t.Error("edge leaf NATS has no persistent volume: it must store while the link is down")
	}
	conf := configMapByPrefix(t, edge, "nats-leaf-config").Data["nats.conf"]
	for _, want := range []string{"domain: $WEIR_EDGE_DOMAIN", "url: $HUB_LEAF_URL", `deny_exports: ["weir.>"]`} {
		if !strings.Contains(conf, want) {
			t.Errorf("edge nats.conf lacks %q", want)
		}
	}
	cfg := weirConfig(t, edge)
	if cfg.Streams.Replicas != 1 {
		t.Errorf("edge weir.yaml streams.replicas %d, want 1: there is one leaf server", cfg.Streams.Replicas)
	}
	single := weirConfig(t, index(build(t, "overlays/single-cluster")))
	if cfg.Streams.Partitions != single.Streams.Partitions {
		t.Errorf("edge streams.partitions %d, base %d: the hub sources edge subjects with their partition token, so they must match",
			cfg.Streams.Partitions, single.Streams.Partitions)
	}
}

// TestComponentHostNetwork applies the host-network component to the
// single-cluster overlay, as its comment tells users to.
func TestComponentHostNetwork(t *testing.T) {
	dir := t.TempDir()
	abs, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	rel := func(p string) string {
		r, err := filepath.Rel(dir, filepath.Join(abs, p))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	k := fmt.Sprintf("resources:\n  - %s\ncomponents:\n  - %s\n", rel("overlays/single-cluster"), rel("components/collector-hostnetwork"))
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := build(t, dir)
	idx := index(objs)
	ds := idx["DaemonSet/weir-collector"].typed.(*appsv1.DaemonSet)
	if !ds.Spec.Template.Spec.HostNetwork || ds.Spec.Template.Spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("collector hostNetwork %v dnsPolicy %q, want true and ClusterFirstWithHostNet",
			ds.Spec.Template.Spec.HostNetwork, ds.Spec.Template.Spec.DNSPolicy)
	}
	if got := idx["Namespace/weir"].u.GetLabels()["pod-security.kubernetes.io/enforce"]; got != "privileged" {
		t.Errorf("namespace enforces %q with a host-network collector, want privileged", got)
	}
	checkAll(t, objs)
}

func index(objs []object) map[string]object {
	m := map[string]object{}
	for _, o := range objs {
		m[o.u.GetKind()+"/"+o.u.GetName()] = o
	}
	return m
}

// configMapByPrefix finds a generated ConfigMap (its name ends in a hash).
func configMapByPrefix(t *testing.T, idx map[string]object, prefix string) *corev1.ConfigMap {
	t.Helper()
	for k, o := range idx {
		if strings.HasPrefix(k, "ConfigMap/"+prefix+"-") {
			return o.typed.(*corev1.ConfigMap)
		}
	}
	t.Fatalf("no ConfigMap %s-<hash>", prefix)
	return nil
}

// weirFile is what the tests read of the Weir configuration in weir-config.
type weirFile struct {
	Cluster string              `json:"cluster"`
	Streams proto.StreamsConfig `json:"-"`
	Raw     struct {
		Replicas   int `json:"replicas"`
		Partitions int `json:"partitions"`
	} `json:"streams"`
	Sinks []struct {
		Name string `json:"name"`
	} `json:"sinks"`
	Collector struct {
		Buffer struct {
			SpoolDir string `json:"spool_dir"`
		} `json:"buffer"`
		Discovery struct {
			KubeProxyAddress *string `json:"kube_proxy_address"`
		} `json:"discovery"`
	} `json:"collector"`
}

func weirConfig(t *testing.T, idx map[string]object) weirFile {
	t.Helper()
	cm := configMapByPrefix(t, idx, "weir-config")
	var f weirFile
	if err := yaml.Unmarshal([]byte(cm.Data["weir.yaml"]), &f); err != nil {
		t.Fatalf("weir.yaml: %v", err)
	}
	f.Streams.Replicas, f.Streams.Partitions = f.Raw.Replicas, f.Raw.Partitions
	if f.Streams.Partitions < 1 {
		t.Fatalf("weir.yaml: streams.partitions %d", f.Streams.Partitions)
	}
	return f
}

// checkAll runs every check that holds for any overlay's output.
func checkAll(t *testing.T, objs []object) {
	t.Helper()
	idx := index(objs)
	pods := podTemplates(objs)
	if len(pods) == 0 {
		t.Fatal("no workloads")
	}
	for name, pt := range pods {
		checkPodSecurity(t, name, pt)
		checkReferences(t, name, pt.Spec, idx)
	}
	for _, o := range objs {
		if ns := o.u.GetNamespace(); o.u.GetKind() != "Namespace" && isNamespaced(o.u) && ns != "weir" {
			t.Errorf("%s: namespace %q, want weir", o, ns)
		}
		switch obj := o.typed.(type) {
		case *corev1.Service:
			checkService(t, obj, pods)
		case *policyv1.PodDisruptionBudget:
			if matching(obj.Spec.Selector, pods) == 0 {
				t.Errorf("%s selects no pods", o)
			}
		}
		switch o.u.GetKind() {
		case "ScaledObject":
			checkScaledObjectTarget(t, o.u, idx)
		case "PodMonitor":
			sel := &metav1.LabelSelector{}
			m, _, _ := unstructured.NestedStringMap(o.u.Object, "spec", "selector", "matchLabels")
			sel.MatchLabels = m
			if matching(sel, pods) != len(pods) {
				t.Errorf("%s selects %d of the %d workloads", o, matching(sel, pods), len(pods))
			}
		case "PrometheusRule":
			checkRunbooks(t, o.u)
		}
	}
	// Every Deployment has a PodDisruptionBudget.
	for name, pt := range pods {
		if !strings.HasPrefix(name, "Deployment/") && !strings.HasPrefix(name, "StatefulSet/") {
			continue
		}
		if strings.HasPrefix(name, "StatefulSet/") && idx[name].typed.(*appsv1.StatefulSet).Spec.Replicas != nil && *idx[name].typed.(*appsv1.StatefulSet).Spec.Replicas == 1 {
			continue // a single leaf server: nothing to keep available
		}
		found := false
		for _, o := range objs {
			if pdb, ok := o.typed.(*policyv1.PodDisruptionBudget); ok {
				s, _ := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
				found = found || s.Matches(labels.Set(pt.Labels))
			}
		}
		if !found {
			t.Errorf("%s has no PodDisruptionBudget", name)
		}
	}
	if ds, ok := idx["DaemonSet/weir-collector"]; ok {
		checkCollector(t, ds.typed.(*appsv1.DaemonSet), weirConfig(t, idx))
	}
}

func isNamespaced(u *unstructured.Unstructured) bool {
	switch u.GetKind() {
	case "Namespace", "ClusterRole", "ClusterRoleBinding":
		return false
	}
	return true
}

func podTemplates(objs []object) map[string]corev1.PodTemplateSpec {
	m := map[string]corev1.PodTemplateSpec{}
	for _, o := range objs {
		switch w := o.typed.(type) {
		case *appsv1.Deployment:
			m["Deployment/"+w.Name] = w.Spec.Template
		case *appsv1.DaemonSet:
			m["DaemonSet/"+w.Name] = w.Spec.Template
		case *appsv1.StatefulSet:
			m["StatefulSet/"+w.Name] = w.Spec.Template
		}
	}
	return m
}

func matching(sel *metav1.LabelSelector, pods map[string]corev1.PodTemplateSpec) int {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || s.Empty() {
		return 0
	}
	n := 0
	for _, pt := range pods {
		if s.Matches(labels.Set(pt.Labels)) {
			n++
		}
	}
	return n
}

// checkPodSecurity holds every pod to the restricted Pod Security Standard
// and to bounded resources.
func checkPodSecurity(t *testing.T, name string, pt corev1.PodTemplateSpec) {
	t.Helper()
	ps := pt.Spec.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot {
		t.Errorf("%s: pod securityContext.runAsNonRoot is not true", name)
	}
	if ps == nil || ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile is not RuntimeDefault", name)
	}
	if pt.Spec.HostPID || pt.Spec.HostIPC {
		t.Errorf("%s: shares the host's PID or IPC namespace", name)
	}
	if pt.Spec.HostNetwork && name != "DaemonSet/weir-collector" {
		t.Errorf("%s: host network", name)
	}
	for _, v := range pt.Spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: hostPath volume %s", name, v.Name)
		}
	}
	for _, c := range append(slices.Clone(pt.Spec.InitContainers), pt.Spec.Containers...) {
		cn := name + " container " + c.Name
		sc := c.SecurityContext
		switch {
		case sc == nil:
			t.Errorf("%s: no securityContext", cn)
			continue
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			t.Errorf("%s: allowPrivilegeEscalation is not false", cn)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			t.Errorf("%s: root filesystem is writable", cn)
		case sc.Privileged != nil && *sc.Privileged:
			t.Errorf("%s: privileged", cn)
		case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0:
			t.Errorf("%s: capabilities: want drop ALL and add none, got %+v", cn, sc.Capabilities)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: needs cpu and memory requests and a memory limit, got %v", cn, c.Resources)
		}
		if !regexp.MustCompile(`:[0-9][0-9A-Za-z.\-]*$`).MatchString(c.Image) {
			t.Errorf("%s: image %q: pin a version tag", cn, c.Image)
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
		for _, pr := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
			if pr != nil && pr.HTTPGet != nil && pr.HTTPGet.Port.StrVal != "" && !ports[pr.HTTPGet.Port.StrVal] {
				t.Errorf("%s: probe on port %q, which the container does not name", cn, pr.HTTPGet.Port.StrVal)
			}
		}
	}
	if !slices.ContainsFunc(pt.Spec.Containers, func(c corev1.Container) bool {
		return slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" })
	}) {
		t.Errorf("%s: no container port named metrics for the PodMonitor", name)
	}
}

// checkReferences resolves every ConfigMap, Secret, key and ServiceAccount a
// pod names against the same build, so a renamed or hashed object cannot
// leave a pod that never starts.
func checkReferences(t *testing.T, name string, spec corev1.PodSpec, idx map[string]object) {
	t.Helper()
	if sa := spec.ServiceAccountName; sa != "" {
		if _, ok := idx["ServiceAccount/"+sa]; !ok {
			t.Errorf("%s: ServiceAccount %s not in the build", name, sa)
		}
	}
	secretKey := func(sec, key string) {
		o, ok := idx["Secret/"+sec]
		if !ok {
			t.Errorf("%s: Secret %s not in the build", name, sec)
			return
		}
		s := o.typed.(*corev1.Secret)
		if _, ok := s.StringData[key]; !ok {
			if _, ok := s.Data[key]; !ok {
				t.Errorf("%s: Secret %s has no key %q", name, sec, key)
			}
		}
	}
	for _, v := range spec.Volumes {
		switch {
		case v.ConfigMap != nil && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional):
			if _, ok := idx["ConfigMap/"+v.ConfigMap.Name]; !ok {
				t.Errorf("%s: volume %s: ConfigMap %s not in the build", name, v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil && (v.Secret.Optional == nil || !*v.Secret.Optional):
			if _, ok := idx["Secret/"+v.Secret.SecretName]; !ok {
				t.Errorf("%s: volume %s: Secret %s not in the build", name, v.Name, v.Secret.SecretName)
			}
		}
	}
	for _, c := range spec.Containers {
		mounts := map[string]bool{}
		for _, m := range c.VolumeMounts {
			mounts[m.Name] = true
			if m.SubPath != "" {
				vol := spec.Volumes[slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })]
				if vol.ConfigMap != nil {
					if _, ok := idx["ConfigMap/"+vol.ConfigMap.Name].typed.(*corev1.ConfigMap).Data[m.SubPath]; !ok {
						t.Errorf("%s: mount of %s: ConfigMap %s has no key %s", name, m.MountPath, vol.ConfigMap.Name, m.SubPath)
					}
				}
			}
		}
		for _, v := range spec.Volumes {
			if !mounts[v.Name] && !slices.ContainsFunc(spec.Containers, func(o corev1.Container) bool {
				return slices.ContainsFunc(o.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == v.Name })
			}) {
				t.Errorf("%s: volume %s is mounted by no container", name, v.Name)
			}
		}
		defined := map[string]bool{}
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				secretKey(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			// $(VAR) expands only variables defined before it.
			for _, m := range regexp.MustCompile(`\$\(([A-Z_]+)\)`).FindAllStringSubmatch(e.Value, -1) {
				if !defined[m[1]] {
					t.Errorf("%s container %s: env %s uses $(%s) before it is defined", name, c.Name, e.Name, m[1])
				}
			}
			defined[e.Name] = true
		}
	}
}

func checkService(t *testing.T, svc *corev1.Service, pods map[string]corev1.PodTemplateSpec) {
	t.Helper()
	sel := &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}
	if matching(sel, pods) == 0 {
		t.Errorf("Service %s selects no pods", svc.Name)
		return
	}
	for _, p := range svc.Spec.Ports {
		if p.TargetPort.StrVal == "" {
			continue
		}
		for name, pt := range pods {
			s, _ := metav1.LabelSelectorAsSelector(sel)
			if !s.Matches(labels.Set(pt.Labels)) {
				continue
			}
			if !slices.ContainsFunc(pt.Spec.Containers, func(c corev1.Container) bool {
				return slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.Name == p.TargetPort.StrVal })
			}) {
				t.Errorf("Service %s: target port %q not named by %s", svc.Name, p.TargetPort.StrVal, name)
			}
		}
	}
}

// checkScaledObjectTarget checks a ScaledObject against the build and the
// Weir conventions: its Deployment exists, one trigger per partition of the
// stage's durable consumer on the stream the stage reads, a formula that
// sums them all, and scale to zero only where it is safe.
func checkScaledObjectTarget(t *testing.T, u *unstructured.Unstructured, idx map[string]object) {
	t.Helper()
	target, _, _ := unstructured.NestedString(u.Object, "spec", "scaleTargetRef", "name")
	if _, ok := idx["Deployment/"+target]; !ok {
		t.Errorf("ScaledObject %s: Deployment %s not in the build", u.GetName(), target)
		return
	}
	cfg := weirConfig(t, idx)
	stage := strings.TrimPrefix(target, "weir-")
	var stream string
	switch {
	case stage == "enricher":
		stream = proto.StreamRaw
	case stage == "router":
		stream = proto.StreamEnriched
	case strings.HasPrefix(stage, "sink-"):
		sink := strings.TrimPrefix(stage, "sink-")
		if !slices.ContainsFunc(cfg.Sinks, func(s struct {
			Name string `json:"name"`
		}) bool {
			return s.Name == sink
		}) {
			t.Errorf("ScaledObject %s: no sink %q in weir.yaml", u.GetName(), sink)
		}
		stream = proto.RouteStreamName(sink)
	default:
		t.Errorf("ScaledObject %s: no stream known for stage %q", u.GetName(), stage)
		return
	}
	minR, _, _ := unstructured.NestedInt64(u.Object, "spec", "minReplicaCount")
	maxR, _, _ := unstructured.NestedInt64(u.Object, "spec", "maxReplicaCount")
	if zeroOK := stage == "router" || strings.HasPrefix(stage, "sink-"); minR == 0 && !zeroOK {
		t.Errorf("ScaledObject %s scales %s to zero", u.GetName(), stage)
	}
	if maxR > int64(cfg.Streams.Partitions) {
		t.Errorf("ScaledObject %s: maxReplicaCount %d above streams.partitions %d: the extra replicas would have no partition", u.GetName(), maxR, cfg.Streams.Partitions)
	}
	triggers, _, _ := unstructured.NestedSlice(u.Object, "spec", "triggers")
	consumers := map[string]bool{}
	var names []string
	for _, tr := range triggers {
		m := tr.(map[string]any)
		md, _, _ := unstructured.NestedStringMap(m, "metadata")
		if md["stream"] != stream {
			t.Errorf("ScaledObject %s: trigger on stream %s, want %s", u.GetName(), md["stream"], stream)
		}
		if md["account"] != "WEIR" {
			t.Errorf("ScaledObject %s: account %q, want WEIR (nats.conf)", u.GetName(), md["account"])
		}
		consumers[md["consumer"]] = true
		names = append(names, m["name"].(string))
	}
	want := map[string]bool{}
	for p := range cfg.Streams.Partitions {
		want[partition.ConsumerName(stage, p)] = true
	}
	if !maps.Equal(consumers, want) {
		t.Errorf("ScaledObject %s: consumers %v, want one per partition %v", u.GetName(), slices.Sorted(maps.Keys(consumers)), slices.Sorted(maps.Keys(want)))
	}
	formula, _, _ := unstructured.NestedString(u.Object, "spec", "advanced", "scalingModifiers", "formula")
	terms := strings.Split(strings.ReplaceAll(formula, " ", ""), "+")
	slices.Sort(terms)
	slices.Sort(names)
	if !slices.Equal(terms, names) {
		t.Errorf("ScaledObject %s: formula %q does not sum every trigger once (%v)", u.GetName(), formula, names)
	}
}

// checkRunbooks checks that every alert links to its section of
// deploy/README.md.
func checkRunbooks(t *testing.T, u *unstructured.Unstructured) {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for line := range strings.Lines(string(readme)) {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			a := strings.ToLower(strings.TrimSpace(strings.TrimLeft(h, "#")))
			a = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(a, "")
			anchors[strings.ReplaceAll(a, " ", "-")] = true
		}
	}
	groups, _, _ := unstructured.NestedSlice(u.Object, "spec", "groups")
	n := 0
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rules {
			rm := r.(map[string]any)
			alert, _ := rm["alert"].(string)
			if alert == "" {
				continue
			}
			n++
			url, _, _ := unstructured.NestedString(rm, "annotations", "runbook_url")
			_, anchor, _ := strings.Cut(url, "#")
			if !strings.Contains(url, "deploy/README.md#") || !anchors[anchor] {
				t.Errorf("alert %s: runbook_url %q has no section in deploy/README.md", alert, url)
			}
		}
	}
	if n == 0 {
		t.Error("PrometheusRule has no alerts")
	}
}

func checkCollector(t *testing.T, ds *appsv1.DaemonSet, cfg weirFile) {
	t.Helper()
	spec := ds.Spec.Template.Spec
	if cmd := spec.Containers[0].Command; len(cmd) == 0 || filepath.Base(cmd[0]) != "weir-collector" {
		t.Errorf("collector command %q, want the weir-collector binary", cmd)
	}
	// The root filesystem is read-only: the spool needs a writable volume.
	if dir := cfg.Collector.Buffer.SpoolDir; dir != "" && !slices.ContainsFunc(spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.MountPath == dir && !m.ReadOnly
	}) {
		t.Errorf("collector.buffer.spool_dir %s is not a writable volume of the collector", dir)
	}
	env := map[string]string{}
	for _, e := range spec.Containers[0].Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if env["NODE_NAME"] != "spec.nodeName" || env["HOST_IP"] != "status.hostIP" {
		t.Errorf("collector downward API: NODE_NAME=%q HOST_IP=%q, want spec.nodeName and status.hostIP", env["NODE_NAME"], env["HOST_IP"])
	}
	// Out of the host network, 127.0.0.1 (the collector's default) is the
	// pod's own loopback, where no kube-proxy listens: "" reads it on HOST_IP.
	if addr := cfg.Collector.Discovery.KubeProxyAddress; !spec.HostNetwork && (addr == nil || *addr != "") {
		t.Errorf("collector.discovery.kube_proxy_address is not \"\" while the collector is not in the host network: kube-proxy would be scraped on the pod's own 127.0.0.1")
	}
	if !slices.ContainsFunc(spec.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Operator == corev1.TolerationOpExists && tl.Key == "" && tl.Effect == ""
	}) {
		t.Errorf("collector tolerations %v do not tolerate every taint: it would miss tainted nodes", spec.Tolerations)
	}
	if spec.NodeSelector["kubernetes.io/os"] != "linux" {
		t.Errorf("collector nodeSelector %v: tolerating every taint, it would be scheduled on Windows nodes, where its image does not run", spec.NodeSelector)
	}
	if spec.AutomountServiceAccountToken == nil || !*spec.AutomountServiceAccountToken {
		t.Error("collector has no service-account token to authenticate to the kubelet")
	}
}
