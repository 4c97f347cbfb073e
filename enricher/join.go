package enricher

import (
	"slices"
	"strings"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/proto"
)

// rule is a LabelRule ready for the join.
type rule struct {
	name string
	from []string
}

func compileRules(rules []LabelRule) ([]rule, map[string]bool) {
	out := make([]rule, len(rules))
	keys := map[string]bool{}
	for i, r := range rules {
		out[i] = rule{name: r.Name, from: r.From}
		for _, f := range r.From {
			keys[f] = true
		}
	}
	return out, keys
}

// apply appends the labels rules take from src to dst.
func (r rule) apply(dst []prompb.Label, src map[string]string) []prompb.Label {
	for _, f := range r.from {
		if v := src[f]; v != "" {
			return append(dst, prompb.Label{Name: r.name, Value: v})
		}
	}
	return dst
}

// podRef names a pod by the strings of a decoded series, so that looking it
// up in the per-message cache allocates nothing.
type podRef struct{ namespace, name string }

// podExtra is what the join adds to the series of one pod: the node's
// labels and the pod's, sorted by name. known is false while the pod is not
// in the cache.
type podExtra struct {
	labels []prompb.Label
	known  bool
}

// joiner adds labels to the series of one message at a time. Each worker
// has its own; nothing in it is shared.
type joiner struct {
	nodeRules []rule
	podRules  []rule

	// arena holds the labels of every series of the current message; it is
	// reused by the next message once the current one is encoded.
	arena []prompb.Label
	// node is what every series of the message gets: cluster, node and the
	// node's labels, sorted.
	node []prompb.Label
	// pods caches the extra labels of each pod seen in the message: a
	// cAdvisor scrape names each pod dozens of times.
	pods map[podRef]podExtra
}

func newJoiner(nodeRules, podRules []rule) *joiner {
	return &joiner{nodeRules: nodeRules, podRules: podRules, pods: map[podRef]podExtra{}}
}

// joinStats counts what one message's join did.
type joinStats struct {
	podSeries   int // series that name a pod
	unknownPods int // of those, series whose pod is not in the cache
}

// begin prepares the join of one message of cluster and node; meta is nil
// for a cluster without credentials.
func (j *joiner) begin(meta *clusterMeta, cluster, node string) {
	j.arena = j.arena[:0]
	clear(j.pods)
	j.node = append(j.node[:0], prompb.Label{Name: LabelCluster, Value: cluster}, prompb.Label{Name: LabelNode, Value: node})
	if meta != nil {
		if n := get(meta.nodes, node); n != nil {
			for _, r := range j.nodeRules {
				j.node = r.apply(j.node, n.Labels)
			}
		}
	}
	sortLabels(j.node)
}

// enrich rewrites the labels of every series of b in place.
func (j *joiner) enrich(meta *clusterMeta, b *proto.Batch) joinStats {
	var st joinStats
	for i := range b.Series {
		s := &b.Series[i]
		extra := j.node
		if ns, pod := podOf(s.Labels); ns != "" && pod != "" {
			st.podSeries++
			e := j.pod(meta, ns, pod)
			if !e.known {
				st.unknownPods++
			}
			extra = e.labels
		}
		s.Labels = j.merge(s.Labels, extra)
	}
	return st
}

// podOf finds the namespace and pod of a series: "pod", or "pod_name" as
// cAdvisor named it before Kubernetes 1.16. It looks at the length of a
// name before its bytes: the bytes of most names are elsewhere in memory,
// and this scan runs for every series.
func podOf(ls []prompb.Label) (namespace, pod string) {
	var podName string
	for i := range ls {
		switch n := ls[i].Name; len(n) {
		case len("namespace"):
			if n == "namespace" {
				namespace = ls[i].Value
			}
		case len("pod"):
			if n == "pod" {
				pod = ls[i].Value
			}
		case len("pod_name"):
			if n == "pod_name" {
				podName = ls[i].Value
			}
		}
	}
	if pod == "" {
		pod = podName
	}
	return namespace, pod
}

// pod returns the extra labels of a pod's series, computing them once per
// message.
func (j *joiner) pod(meta *clusterMeta, namespace, name string) podExtra {
	ref := podRef{namespace, name}
	if e, ok := j.pods[ref]; ok {
		return e
	}
	e := podExtra{labels: j.node}
	if meta != nil {
		if p := get(meta.pods, namespace+"/"+name); p != nil {
			ls := slices.Clone(j.node)
			for _, r := range j.podRules {
				ls = r.apply(ls, p.Labels)
			}
			kind, wl := meta.workload(p)
			ls = append(ls, prompb.Label{Name: LabelWorkloadKind, Value: kind}, prompb.Label{Name: LabelWorkload, Value: wl})
			sortLabels(ls)
			e = podExtra{labels: ls, known: true}
		}
	}
	j.pods[ref] = e
	return e
}

// merge returns the union of a series' sorted labels and the sorted extra
// labels, in the arena. As Prometheus does with honor_labels false, the
// enricher's label wins a conflict and the scraped one is kept as
// exported_<name>.
func (j *joiner) merge(scraped, extra []prompb.Label) []prompb.Label {
	start := len(j.arena)
	i, k := 0, 0
	for i < len(scraped) && k < len(extra) {
		switch c := compareNames(scraped[i].Name, extra[k].Name); {
		case c < 0:
			j.arena = append(j.arena, scraped[i])
			i++
		case c > 0:
			j.arena = append(j.arena, extra[k])
			k++
		default:
			j.arena = j.arena[:start]
			return j.mergeConflict(scraped, extra)
		}
	}
	j.arena = append(j.arena, scraped[i:]...)
	j.arena = append(j.arena, extra[k:]...)
	return j.arena[start:len(j.arena):len(j.arena)]
}

// mergeConflict is merge when a scraped label has the name of an extra one:
// rare, so it may allocate the new names.
func (j *joiner) mergeConflict(scraped, extra []prompb.Label) []prompb.Label {
	start := len(j.arena)
	taken := func(name string) bool {
		has := func(ls []prompb.Label) bool {
			_, ok := slices.BinarySearchFunc(ls, name, func(l prompb.Label, n string) int { return strings.Compare(l.Name, n) })
			return ok
		}
		return has(scraped) || has(extra) || slices.ContainsFunc(j.arena[start:], func(l prompb.Label) bool { return l.Name == name })
	}
	for _, l := range scraped {
		if _, ok := slices.BinarySearchFunc(extra, l.Name, func(e prompb.Label, n string) int { return strings.Compare(e.Name, n) }); ok {
			name := "exported_" + l.Name
			for taken(name) {
				name = "exported_" + name
			}
			l.Name = name
		}
		j.arena = append(j.arena, l)
	}
	j.arena = append(j.arena, extra...)
	out := j.arena[start:len(j.arena):len(j.arena)]
	sortLabels(out)
	return out
}

// compareNames is strings.Compare with a shortcut: label names mostly
// differ in their first byte.
func compareNames(a, b string) int {
	if a != "" && b != "" && a[0] != b[0] {
		if a[0] < b[0] {
			return -1
		}
		return 1
	}
	return strings.Compare(a, b)
}

func sortLabels(ls []prompb.Label) {
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
}
