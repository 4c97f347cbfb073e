package enricher

import (
	"maps"
	"slices"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/proto"
)

// maxGenerations is how many outputs in a row the churn path makes, each
// from the one before; the next takes the slow path, which forgets the
// metadata keys of the pods gone since.
const maxGenerations = 16

// churnScratch is what a worker's churn path reuses from one message to
// the next.
type churnScratch struct {
	reader  proto.BlockReader   // of a kept labels part
	in, out proto.SeenLabels    // the series of prev's input and output
	matched []int32             // of each input series, its index in in or -1
	unknown []int32             // the input series of pods not in the cache
	outOf   []int32             // of each series of in, its index in out or -1
	labels  []prompb.Label      // of the series read, one after the other
	ends    []int               // where each series' labels end in labels
	build   proto.LabelsBuilder // of the output's labels part
}

// churned makes the output of the payload w.reader holds from prev, the
// target's last output, made of other series: when pods come and go, most
// series of a target are the same from scrape to scrape. Those prev's
// input held keep what the join, the relabel rules and the guard made of
// them, and only the new ones are read and joined; the output is what the
// slow path makes, byte for byte. It reports false when the message must
// take the slow path: prev depended on metadata that changed since, the
// guard dropped a series, or the output is empty or outgrew a message.
func (e *Enricher) churned(w *worker, in input, prev *steadyOutput, cm *clusterMeta, sum uint64) (proto.Chunk, *steadyOutput, bool) {
	if prev.input == nil || prev.generation >= maxGenerations {
		return proto.Chunk{}, nil, false
	}
	out := &steadyOutput{labelsSum: sum, generation: prev.generation + 1}
	if cm != nil {
		change, ok := cm.changes.unchangedSince(prev.change, prev.read)
		if !ok {
			return proto.Chunk{}, nil, false
		}
		out.change = change
	}
	c := &w.churn
	if !c.read(prev) {
		return proto.Chunk{}, nil, false
	}
	var err error
	if c.matched, err = w.reader.Match(&c.in, c.matched[:0]); err != nil {
		return proto.Chunk{}, nil, false // the slow path reports it
	}
	if !c.readNew(&w.reader, &w.batch) {
		return proto.Chunk{}, nil, false
	}
	w.join.begin(cm, in.subj.Cluster, in.subj.Node)
	w.join.enrich(cm, &w.batch)
	c.unknown = c.unknownPods(prev, w.join.unknown)
	out.unknownPods, out.unknownAt = len(c.unknown), bitsOf(len(c.matched), c.unknown)

	// The series in input order, as the slow path filters them: the
	// relabel rules and the guard.
	var adm admission
	known := false // prev's series are known to the guard as seen this minute
	if e.guard != nil {
		adm = e.guard.begin(in.guardTarget)
		defer adm.end()
		known = adm.mark() == prev.mark
	}
	w.kept, w.hashes = w.kept[:0], w.hashes[:0]
	c.build.Reset(&c.out)
	next, reused := 0, 0 // next: the next series of w.batch
	for i, k := range c.matched {
		var ls []prompb.Label
		o := int32(-1)
		if k >= 0 {
			if o = c.outOf[k]; o < 0 {
				out.relabelDropped++
				continue
			}
		} else {
			ls = w.batch.Series[next].Labels
			next++
			if len(e.relabel) > 0 {
				var keep bool
				if ls, keep = w.relabel(e.relabel, ls); !keep {
					out.relabelDropped++
					continue
				}
			}
		}
		if e.guard != nil {
			var h uint64
			ok := false
			if o >= 0 {
				h = prev.hashes[o]
				ok = known || adm.admitHash(h)
			} else {
				h, ok = adm.admit(ls)
			}
			if !ok {
				return proto.Chunk{}, nil, false // the slow path drops and counts it
			}
			w.hashes = append(w.hashes, h)
		}
		if o >= 0 {
			c.build.AddSeen(int(o))
			reused++
		} else {
			c.build.Add(ls)
		}
		w.kept = append(w.kept, int32(i))
	}
	if len(w.kept) == 0 {
		return proto.Chunk{}, nil, false
	}
	if out.labels, err = c.build.AppendPart(nil); err != nil {
		return proto.Chunk{}, nil, false
	}
	out.input = slices.Clone(w.reader.LabelsPart())
	if len(w.kept) < w.reader.Len() {
		out.from = slices.Clone(w.kept)
	}
	if cm != nil {
		out.read = maps.Clone(prev.read)
		for _, k := range w.join.read {
			out.read[k] = struct{}{}
		}
	}
	out.series = len(w.kept)
	if e.guard != nil {
		out.hashes, out.mark = slices.Clone(w.hashes), adm.mark()
	}
	chunk, ok := e.assemble(w, out)
	if !ok {
		return proto.Chunk{}, nil, false
	}
	e.metrics.seriesReused.Add(float64(reused))
	e.metrics.podUnknown.Add(float64(out.unknownPods))
	if out.relabelDropped > 0 {
		e.metrics.seriesDropped.WithLabelValues(reasonRelabel).Add(float64(out.relabelDropped))
	}
	return chunk, out, true
}

// unknownPods returns the input series of pods not in the cache, as the
// slow path counts them: those prev's input held as they were then, the
// new ones as the join found them (joined: their indices in the batch of
// new series). A pod that joins the cache later is a change of a key in
// read, which the next message sees.
func (c *churnScratch) unknownPods(prev *steadyOutput, joined []int32) []int32 {
	unknown := c.unknown[:0]
	next, u := int32(0), 0 // the next new series, the next of joined
	for i, k := range c.matched {
		switch {
		case k >= 0:
			if bitOn(prev.unknownAt, k) {
				unknown = append(unknown, int32(i))
			}
			continue
		case u < len(joined) && joined[u] == next:
			unknown = append(unknown, int32(i))
			u++
		}
		next++
	}
	return unknown
}

// read reads the labels of prev's input and output, and which output
// series each input series became.
func (c *churnScratch) read(prev *steadyOutput) bool {
	if c.reader.ResetLabels(prev.input) != nil || c.reader.Keep(&c.in) != nil ||
		c.reader.ResetLabels(prev.labels) != nil || c.reader.Keep(&c.out) != nil {
		return false
	}
	c.outOf = c.outOf[:0]
	if prev.from == nil {
		for k := range c.in.Len() {
			c.outOf = append(c.outOf, int32(k))
		}
		return c.in.Len() == c.out.Len()
	}
	for range c.in.Len() {
		c.outOf = append(c.outOf, -1)
	}
	for o, k := range prev.from {
		if int(k) >= len(c.outOf) {
			return false
		}
		c.outOf[k] = int32(o)
	}
	return len(prev.from) == c.out.Len()
}

// readNew puts the series of r that c.matched found no match for in b,
// with their labels only: the join and the filters read nothing else.
func (c *churnScratch) readNew(r *proto.BlockReader, b *proto.Batch) bool {
	b.Reset()
	c.labels, c.ends = c.labels[:0], c.ends[:0]
	for i, k := range c.matched {
		if k >= 0 {
			continue
		}
		var err error
		if c.labels, err = r.AppendLabels(c.labels, i); err != nil {
			return false
		}
		c.ends = append(c.ends, len(c.labels))
	}
	start := 0
	for _, end := range c.ends {
		b.Series = append(b.Series, prompb.TimeSeries{Labels: c.labels[start:end:end]})
		start = end
	}
	return true
}
