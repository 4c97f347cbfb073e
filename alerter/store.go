package alerter

import (
	"math"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
)

// selection is one series(name, matchers...) of the rules: the series it
// selects and how much of their past the rules read.
type selection struct {
	key      string
	name     string
	matchers []*labels.Matcher // without the metric name
	// window is the longest range a rule reads from this selection, in
	// milliseconds; 0 when only the latest value is read.
	window int64
	// series is a slice, not a map: evaluation iterates it at every
	// interval, and gc, once a minute, is the only one to remove from it.
	series []*memSeries
}

func (s *selection) matches(ls labels.Labels) bool {
	for _, m := range s.matchers {
		if !m.Matches(ls.Get(m.Name)) {
			return false
		}
	}
	return true
}

// memSeries is the window of one selected series: samples in time order,
// older than its retention trimmed at every append.
type memSeries struct {
	lset      labels.Labels
	noName    labels.Labels // lset without the metric name, what functions return
	ts        []int64
	vs        []float64
	retention int64
	sels      []*selection // nil for a series whose name is selected but that no matcher wants
	last      int64        // newest timestamp seen, for gc
	gone      bool         // removed by gc
}

func (m *memSeries) append(t int64, v float64) bool {
	if n := len(m.ts); n > 0 && t <= m.ts[n-1] {
		return false // out of order or a replay: windows only move forward
	}
	m.ts = append(m.ts, t)
	m.vs = append(m.vs, v)
	cut := 0
	for cut < len(m.ts)-1 && m.ts[cut] <= t-m.retention {
		cut++
	}
	if cut > 0 {
		// Copy down rather than reslice, so the backing array never grows
		// past what the window needs.
		n := copy(m.ts, m.ts[cut:])
		copy(m.vs, m.vs[cut:])
		m.ts, m.vs = m.ts[:n], m.vs[:n]
	}
	return true
}

// Store holds the windows of the series the rules select, and nothing of
// the others: memory grows with the selected series, not with all series.
type Store struct {
	mu     sync.RWMutex
	byName map[string][]*selection
	sels   map[string]*selection
	series map[uint64]*memSeries
	// maxSeries bounds the selected series; past it new ones are not kept,
	// and counted in dropped.
	maxSeries int
	selectedN int
	dropped   int64
	extra     int64 // evaluation interval in ms, added to every window
	lookback  int64 // ms a latest value stays valid
	targets   map[Target]*targetCache
	digest    *xxhash.Digest
	lbuf      labels.ScratchBuilder
	samples   []prompb.Sample // scratch of ingestBlock
}

// newStore returns a store for sels; extra is added to every window so
// that a window still covers its range between two evaluations.
func newStore(sels []*selection, extra, lookback int64) *Store {
	s := &Store{
		byName:   map[string][]*selection{},
		sels:     map[string]*selection{},
		series:   map[uint64]*memSeries{},
		targets:  map[Target]*targetCache{},
		extra:    extra,
		lookback: lookback,
		digest:   xxhash.New(),
	}
	for _, sel := range sels {
		sel.series = nil
		s.sels[sel.key] = sel
		s.byName[sel.name] = append(s.byName[sel.name], sel)
	}
	return s
}

// selectsName reports whether a rule selects series of the metric name. It
// takes no lock: byName does not change after newStore.
func (s *Store) selectsName(name string) bool {
	_, ok := s.byName[name]
	return ok
}

// Ingest adds the samples of b, read from cluster and node. The cluster and
// node labels are added from the subject when the series lacks them. It
// returns how many samples were kept.
func (s *Store) Ingest(cluster, node string, b []prompb.TimeSeries) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := 0
	for i := range b {
		ts := &b[i]
		name := metricName(ts.Labels)
		if _, ok := s.byName[name]; !ok {
			continue
		}
		kept += s.lookup(cluster, node, name, ts.Labels).ingest(ts.Samples)
	}
	return kept
}

// lookup returns the series of ls read from cluster and node, added if new.
func (s *Store) lookup(cluster, node, name string, ls []prompb.Label) *memSeries {
	h := s.hash(cluster, node, ls)
	ms, ok := s.series[h]
	if !ok {
		ms = s.add(h, name, s.toLabels(cluster, node, ls))
	}
	return ms
}

// ingest appends the samples of the series and returns how many were kept.
func (ms *memSeries) ingest(samples []prompb.Sample) (kept int) {
	if n := len(samples); n > 0 {
		ms.last = max(ms.last, samples[n-1].Timestamp)
	}
	if ms.sels == nil {
		return 0
	}
	for _, smp := range samples {
		if ms.append(smp.Timestamp, smp.Value) {
			kept++
		}
	}
	return kept
}

// ingestLabels adds one sample of a series given as labels (rule tests).
func (s *Store) ingestLabels(ls labels.Labels, t int64, v float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := ls.Get(labels.MetricName)
	if _, ok := s.byName[name]; !ok {
		return
	}
	h := ls.Hash()
	ms, ok := s.series[h]
	if !ok {
		ms = s.add(h, name, ls)
	}
	ms.last = max(ms.last, t)
	if ms.sels != nil {
		ms.append(t, v)
	}
}

func (s *Store) add(h uint64, name string, ls labels.Labels) *memSeries {
	ms := &memSeries{lset: ls, noName: ls.DropMetricName(), last: math.MinInt64}
	for _, sel := range s.byName[name] {
		if sel.matches(ls) {
			ms.sels = append(ms.sels, sel)
			ms.retention = max(ms.retention, sel.window+s.extra)
		}
	}
	if ms.sels != nil && s.maxSeries > 0 && s.selectedN >= s.maxSeries {
		// Full: remembered as unselected, so the next scrape skips it
		// fast; gc forgets it with the others, and it may be kept then.
		s.dropped++
		ms.sels = nil
	}
	for _, sel := range ms.sels {
		sel.series = append(sel.series, ms)
	}
	// A series read only for its latest value keeps one sample, plus what
	// arrives within the evaluation interval.
	ms.retention = max(ms.retention, s.extra, 1)
	if ms.sels == nil {
		ms.lset, ms.noName = labels.EmptyLabels(), labels.EmptyLabels() // remembered only to skip it fast
	} else {
		s.selectedN++
	}
	s.series[h] = ms
	return ms
}

func metricName(ls []prompb.Label) string {
	for _, l := range ls {
		if l.Name == labels.MetricName {
			return l.Value
		}
	}
	return ""
}

func hasLabel(ls []prompb.Label, name string) bool {
	for _, l := range ls {
		if l.Name == name {
			return true
		}
	}
	return false
}

func (s *Store) hash(cluster, node string, ls []prompb.Label) uint64 {
	d := s.digest
	d.Reset()
	for _, l := range ls {
		_, _ = d.WriteString(l.Name)
		_, _ = d.Write(sep)
		_, _ = d.WriteString(l.Value)
		_, _ = d.Write(sep)
	}
	_, _ = d.Write(sep)
	_, _ = d.WriteString(cluster)
	_, _ = d.Write(sep)
	_, _ = d.WriteString(node)
	return d.Sum64()
}

var sep = []byte{0xff}

func (s *Store) toLabels(cluster, node string, ls []prompb.Label) labels.Labels {
	b := &s.lbuf
	b.Reset()
	for _, l := range ls {
		b.Add(strings.Clone(l.Name), strings.Clone(l.Value))
	}
	if cluster != "" && !hasLabel(ls, "cluster") {
		b.Add("cluster", cluster)
	}
	if node != "" && !hasLabel(ls, "node") {
		b.Add("node", node)
	}
	b.Sort()
	return b.Labels()
}

// gc forgets the series that received nothing for longer than their
// retention and the lookback: targets that went away.
func (s *Store) gc(now int64) (removed int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	touched := map[*selection]bool{}
	for h, ms := range s.series {
		if ms.last >= now-ms.retention-s.lookback {
			continue
		}
		for _, sel := range ms.sels {
			touched[sel] = true
		}
		if ms.sels != nil {
			s.selectedN--
		}
		ms.gone = true
		delete(s.series, h)
		removed++
	}
	// A target that sent nothing since the last gc is forgotten.
	for t, tc := range s.targets {
		if !tc.used {
			delete(s.targets, t)
		}
		tc.used = false
	}
	for sel := range touched {
		sel.series = slices.DeleteFunc(sel.series, func(ms *memSeries) bool { return ms.gone })
	}
	return removed
}

// droppedSeries counts the series not kept because the store was full.
func (s *Store) droppedSeries() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.dropped
}

// selected counts the series whose samples the store keeps.
func (s *Store) selected() (series, samples int) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, ms := range s.series {
		if ms.sels != nil {
			series++
			samples += len(ms.ts)
		}
	}
	return series, samples
}

// migrate moves the windows of old into s for the series s still selects,
// so a reload does not empty the range functions' windows.
func (s *Store) migrate(old *Store) {
	old.mu.RLock()
	defer old.mu.RUnlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for h, oms := range old.series {
		if oms.sels == nil {
			continue
		}
		name := oms.lset.Get(labels.MetricName)
		if _, ok := s.byName[name]; !ok {
			continue
		}
		ms := s.add(h, name, oms.lset)
		if ms.sels == nil {
			continue
		}
		for i := range oms.ts {
			ms.append(oms.ts[i], oms.vs[i])
		}
		ms.last = oms.last
	}
}

// latest returns the last sample of every series of sel within the
// lookback before now; a stale marker ends a series.
func (s *Store) latest(sel *selection, now int64) []Sample {
	out := make([]Sample, 0, len(sel.series))
	for _, ms := range sel.series {
		i := len(ms.ts) - 1
		if i >= 0 && ms.ts[i] > now {
			i = sort.Search(len(ms.ts), func(i int) bool { return ms.ts[i] > now }) - 1
		}
		if i < 0 || ms.ts[i] <= now-s.lookback || value.IsStaleNaN(ms.vs[i]) {
			continue
		}
		out = append(out, Sample{Labels: ms.lset, Value: ms.vs[i]})
	}
	return out
}

// windowScratch holds a window copied without its staleness markers; one
// per group, reused by every window its evaluation reads.
type windowScratch struct {
	ts []int64
	vs []float64
}

// window returns the samples of ms in (now-rng, now] without the staleness
// markers, as PromQL's range vectors: a marker says the series ended, it is
// not a value, and a counter reset or a change across it must still show.
// The markers stay in ms for latest. A window with a marker before its last
// sample is copied into scratch, so the returned slices are valid until the
// next window read with the same scratch.
func (ms *memSeries) window(now, rng int64, scratch *windowScratch) ([]int64, []float64) {
	lo := sort.Search(len(ms.ts), func(i int) bool { return ms.ts[i] > now-rng })
	hi := sort.Search(len(ms.ts), func(i int) bool { return ms.ts[i] > now })
	ts, vs := ms.ts[lo:hi], ms.vs[lo:hi]
	// Trailing markers, a target gone until gc forgets it, need no copy.
	for len(vs) > 0 && value.IsStaleNaN(vs[len(vs)-1]) {
		ts, vs = ts[:len(ts)-1], vs[:len(vs)-1]
	}
	i := slices.IndexFunc(vs, value.IsStaleNaN)
	if i < 0 {
		return ts, vs
	}
	scratch.ts, scratch.vs = append(scratch.ts[:0], ts[:i]...), append(scratch.vs[:0], vs[:i]...)
	for j := i + 1; j < len(vs); j++ {
		if !value.IsStaleNaN(vs[j]) {
			scratch.ts, scratch.vs = append(scratch.ts, ts[j]), append(scratch.vs, vs[j])
		}
	}
	return scratch.ts, scratch.vs
}

func sortSamples(ss []Sample) {
	sort.Slice(ss, func(i, j int) bool { return labels.Compare(ss[i].Labels, ss[j].Labels) < 0 })
}
