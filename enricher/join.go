package enricher

import (
	"hash/maphash"
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
// in the cache. shape numbers the distinct name lists of the message's
// extra labels (0 is the node's), so that a plan merges with each once.
type podExtra struct {
	labels []prompb.Label
	known  bool
	shape  int
}

// recentPod is a slot of the joiner's direct-mapped pod cache.
type recentPod struct {
	ref   podRef
	extra podExtra
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
	// cAdvisor scrape names each pod dozens of times. recentPods is a
	// direct-mapped cache in front of it, slotted by a hash of the pod
	// name: cheaper than the map's hash and probe of both strings.
	pods       map[podRef]podExtra
	recentPods [128]recentPod
	seed       maphash.Seed
	// shapes holds, for each shape of the message, the first extra labels
	// seen with it.
	shapes [][]prompb.Label
	// plans are the message's plans by the hash of their name lengths, with
	// a direct-mapped cache in front. allPlans holds every plan allocated,
	// the first usedPlans of them in use: they are reused from message to
	// message.
	plans       map[uint64]*mergePlan
	recentPlans [64]*mergePlan
	allPlans    []*mergePlan
	usedPlans   int
	// read are the keys of the metadata objects the message's join looked
	// up, found or not: its output changes only when one of them does.
	read []string
	// unknown are the indices of the series of the batch whose pod is not
	// in the cache, in order.
	unknown []int32
}

// keptPlans is how many plans a joiner keeps for the next message; a
// target has a few dozen name sets, but kube-state-metrics' label_* names
// make one per set of pod labels.
const keptPlans = 4096

func newJoiner(nodeRules, podRules []rule) *joiner {
	return &joiner{nodeRules: nodeRules, podRules: podRules, pods: map[podRef]podExtra{}, seed: maphash.MakeSeed(),
		plans: map[uint64]*mergePlan{}}
}

// joinStats counts what one message's join did.
type joinStats struct {
	podSeries   int // series that name a pod
	unknownPods int // of those, series whose pod is not in the cache
}

// begin prepares the join of one message of cluster and node; meta is nil
// for a cluster without credentials. It forgets the previous message's
// caches, which hold its strings.
func (j *joiner) begin(meta *clusterMeta, cluster, node string) {
	j.arena = j.arena[:0]
	clear(j.pods)
	clear(j.recentPods[:])
	clear(j.plans)
	clear(j.recentPlans[:])
	for _, p := range j.allPlans[:j.usedPlans] {
		p.reset()
	}
	if len(j.allPlans) > keptPlans {
		clear(j.allPlans[keptPlans:])
		j.allPlans = j.allPlans[:keptPlans]
	}
	j.usedPlans = 0
	j.read = append(j.read[:0], node)
	j.unknown = j.unknown[:0]
	j.node = append(j.node[:0], prompb.Label{Name: LabelCluster, Value: cluster}, prompb.Label{Name: LabelNode, Value: node})
	if meta != nil {
		if n := get(meta.nodes, node); n != nil {
			for _, r := range j.nodeRules {
				j.node = r.apply(j.node, n.Labels)
			}
		}
	}
	sortLabels(j.node)
	clear(j.shapes)
	j.shapes = append(j.shapes[:0], j.node)
}

// enrich rewrites the labels of every series of b in place.
func (j *joiner) enrich(meta *clusterMeta, b *proto.Batch) joinStats {
	var st joinStats
	nodeOnly := podExtra{labels: j.node}
	for i := range b.Series {
		s := &b.Series[i]
		p := j.plan(s.Labels)
		extra := nodeOnly
		if ns, pod := p.podOf(s.Labels); ns != "" && pod != "" {
			st.podSeries++
			extra = j.pod(meta, ns, pod)
			if !extra.known {
				st.unknownPods++
				j.unknown = append(j.unknown, int32(i))
			}
		}
		s.Labels = j.merge(p, s.Labels, extra)
	}
	return st
}

// pod returns the extra labels of a pod's series, computing them once per
// message.
func (j *joiner) pod(meta *clusterMeta, namespace, name string) podExtra {
	ref := podRef{namespace, name}
	slot := &j.recentPods[maphash.String(j.seed, name)%uint64(len(j.recentPods))]
	if slot.ref == ref {
		return slot.extra
	}
	e, ok := j.pods[ref]
	if !ok {
		e = j.lookupPod(meta, namespace, name)
		j.pods[ref] = e
	}
	*slot = recentPod{ref, e}
	return e
}

// lookupPod builds the extra labels of a pod from the metadata cache.
func (j *joiner) lookupPod(meta *clusterMeta, namespace, name string) podExtra {
	if meta == nil {
		return podExtra{labels: j.node}
	}
	key := namespace + "/" + name
	j.read = append(j.read, key)
	p := get(meta.pods, key)
	if p == nil {
		return podExtra{labels: j.node}
	}
	ls := slices.Clone(j.node)
	for _, r := range j.podRules {
		ls = r.apply(ls, p.Labels)
	}
	kind, wl, owner := meta.workload(p)
	if owner != "" {
		j.read = append(j.read, owner)
	}
	ls = append(ls, prompb.Label{Name: LabelWorkloadKind, Value: kind}, prompb.Label{Name: LabelWorkload, Value: wl})
	sortLabels(ls)
	return podExtra{labels: ls, known: true, shape: j.shapeOf(ls)}
}

// shapeOf numbers the name list of extra labels within the message.
func (j *joiner) shapeOf(extra []prompb.Label) int {
	for i, sh := range j.shapes {
		if slices.EqualFunc(sh, extra, func(a, b prompb.Label) bool { return a.Name == b.Name }) {
			return i
		}
	}
	j.shapes = append(j.shapes, extra)
	return len(j.shapes) - 1
}

// mergePlan is what the join knows of every series of a message with the
// same label names: where the labels naming its pod are, and how its labels
// interleave with each shape of extra labels. A cAdvisor scrape has a few
// dozen name sets over thousands of series, so the join compares names per
// name set rather than per series; and since a decoded message shares one
// string per name, comparing a series' names to its plan's mostly compares
// pointers.
type mergePlan struct {
	names []string
	next  *mergePlan // another plan of the message whose names hash alike
	// namespace, pod and podName index the labels of those names; -1 when
	// a series has none.
	namespace, pod, podName int
	merges                  []planMerge // by shape
}

// planMerge is how a name set and a shape of extra labels merge: order
// gives the source of each label out, a scraped label's index, or ^index
// of an extra label. conflict is set when a scraped label has the name of
// an extra one. built is false until the message needs the merge.
type planMerge struct {
	order    []int32
	conflict bool
	built    bool
}

// plan returns the plan of a series' label names.
func (j *joiner) plan(ls []prompb.Label) *mergePlan {
	// The lengths of the names are in the labels themselves: hashing them
	// reads no other memory, and the names are compared on a match.
	h := uint64(len(ls))
	for i := range ls {
		h = (h ^ uint64(len(ls[i].Name))) * 0x100000001b3
	}
	slot := &j.recentPlans[h%uint64(len(j.recentPlans))]
	if p := *slot; p != nil && p.matches(ls) {
		return p
	}
	p := j.plans[h]
	for p != nil && !p.matches(ls) {
		p = p.next
	}
	if p == nil {
		p = j.newPlan(ls)
		p.next = j.plans[h]
		j.plans[h] = p
	}
	*slot = p
	return p
}

// newPlan returns a plan for the names of ls, reusing one of an earlier
// message if there is one.
func (j *joiner) newPlan(ls []prompb.Label) *mergePlan {
	if j.usedPlans == len(j.allPlans) {
		j.allPlans = append(j.allPlans, &mergePlan{})
	}
	p := j.allPlans[j.usedPlans]
	j.usedPlans++
	p.namespace, p.pod, p.podName = -1, -1, -1
	for i, l := range ls {
		p.names = append(p.names, l.Name)
		switch l.Name {
		case "namespace":
			p.namespace = i
		case "pod":
			p.pod = i
		case "pod_name":
			p.podName = i
		}
	}
	return p
}

// reset empties p for another message, keeping its memory.
func (p *mergePlan) reset() {
	clear(p.names)
	p.names, p.next = p.names[:0], nil
	for i := range p.merges {
		p.merges[i].built = false
	}
}

func (p *mergePlan) matches(ls []prompb.Label) bool {
	if len(ls) != len(p.names) {
		return false
	}
	for i := range ls {
		if ls[i].Name != p.names[i] {
			return false
		}
	}
	return true
}

// podOf finds the namespace and pod of a series of the plan: "pod", or
// "pod_name" as cAdvisor named it before Kubernetes 1.16.
func (p *mergePlan) podOf(ls []prompb.Label) (namespace, pod string) {
	if p.namespace >= 0 {
		namespace = ls[p.namespace].Value
	}
	if p.pod >= 0 {
		pod = ls[p.pod].Value
	}
	if pod == "" && p.podName >= 0 {
		pod = ls[p.podName].Value
	}
	return namespace, pod
}

// mergeWith returns how the plan's names merge with extra labels of a
// shape.
func (p *mergePlan) mergeWith(extra []prompb.Label, shape int) planMerge {
	for len(p.merges) <= shape {
		p.merges = append(p.merges, planMerge{})
	}
	m := &p.merges[shape]
	if !m.built {
		*m = mergeOrder(p.names, extra, m.order)
	}
	return *m
}

// mergeOrder interleaves sorted names with the sorted extra labels.
func mergeOrder(names []string, extra []prompb.Label, order []int32) planMerge {
	order = order[:0]
	i, k := 0, 0
	for i < len(names) && k < len(extra) {
		switch c := strings.Compare(names[i], extra[k].Name); {
		case c < 0:
			order = append(order, int32(i))
			i++
		case c > 0:
			order = append(order, ^int32(k))
			k++
		default:
			return planMerge{order: order, conflict: true, built: true}
		}
	}
	for ; i < len(names); i++ {
		order = append(order, int32(i))
	}
	for ; k < len(extra); k++ {
		order = append(order, ^int32(k))
	}
	return planMerge{order: order, built: true}
}

// merge returns the union of a series' sorted labels and the sorted extra
// labels, in the arena. As Prometheus does with honor_labels false, the
// enricher's label wins a conflict and the scraped one is kept as
// exported_<name>.
func (j *joiner) merge(p *mergePlan, scraped []prompb.Label, extra podExtra) []prompb.Label {
	m := p.mergeWith(extra.labels, extra.shape)
	if m.conflict {
		return j.mergeConflict(scraped, extra.labels)
	}
	start := len(j.arena)
	n := len(m.order)
	j.arena = slices.Grow(j.arena, n)[:start+n]
	out := j.arena[start : start+n : start+n]
	for o, src := range m.order {
		if src >= 0 {
			out[o] = scraped[src]
		} else {
			out[o] = extra.labels[^src]
		}
	}
	return out
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

func sortLabels(ls []prompb.Label) {
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
}
