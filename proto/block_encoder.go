package proto

import (
	"encoding/binary"
	"slices"

	"github.com/prometheus/prometheus/prompb"
)

// LabelSet is the labels of one series as the code that builds its samples
// keeps them: a collector holds tens of thousands of series from scrape to
// scrape, and their wire form, prompb labels of 64 bytes each, would be
// most of its memory. Implementations must be comparable, pointers in
// practice: BlockEncoder tells the label sets of two batches apart with ==.
type LabelSet interface {
	// AppendLabels appends the labels, sorted by name, to dst.
	AppendLabels(dst []prompb.Label) []prompb.Label
}

// FixedLabels is a LabelSet built once and kept, such as the series a
// collector reports about each scrape. Use it by pointer.
type FixedLabels []prompb.Label

// AppendLabels implements LabelSet.
func (l *FixedLabels) AppendLabels(dst []prompb.Label) []prompb.Label { return append(dst, *l...) }

// LabeledSample is one sample of the series its Labels name.
type LabeledSample struct {
	Labels    LabelSet
	Value     float64
	Timestamp int64
}

// BlockEncoder writes BlockZstd payloads for one sender of the same series
// scrape after scrape, as a collector's target is: when a batch holds the
// same label sets as the last one, in the same order, it reuses the labels
// frame it compressed for that one and encodes only the samples, without
// asking the label sets for their labels. When some series came or went,
// the series it encoded last take their label refs from the last columns,
// and only the new ones are asked for their labels. Not safe for
// concurrent use.
type BlockEncoder struct {
	state blockState
	// last are the label sets of the last batch; columns are their label
	// columns, from countsAt on the label counts, lastSymbols the strings
	// of their symbol refs, and labelsPart the start of every payload of
	// them, the compressed columns.
	last        []LabelSet
	lastSymbols []string
	columns     []byte
	countsAt    int
	labelsPart  []byte
	// labels and prev hold the labels of a series and of the one before
	// it while the label columns are built.
	labels, prev []prompb.Label
}

// Name is the name of the encoding of the payloads: BlockZstd's.
func (e *BlockEncoder) Name() string { return BlockZstd{}.Name() }

// AppendSamples appends to dst the BlockZstd payload of samples, each a
// series of one sample.
func (e *BlockEncoder) AppendSamples(dst []byte, samples []LabeledSample) ([]byte, error) {
	if !e.sameLabels(samples) {
		if err := e.buildLabels(samples); err != nil {
			return dst, err
		}
	}
	dst = append(dst, e.labelsPart...)
	w := e.state.sampleWriter(len(samples))
	for range samples {
		w.raw = append(w.raw, 1) // the uvarint sample count of each series
	}
	for _, s := range samples {
		w.add(s.Timestamp, s.Value)
	}
	return e.state.compress(dst, w, len(e.columns))
}

// maxSampleBytes is the most a one-sample series adds to a block: its
// sample count, its timestamp delta and its value.
const maxSampleBytes = 1 + binary.MaxVarintLen64 + 8

// buildLabels builds and compresses the label columns of samples and
// remembers their label sets. A series of the last batch is taken from
// the last columns by a LabelsBuilder, which renumbers its refs: symbols
// are numbered in the order they first appear whichever way they are
// found, so the columns are those a build from the labels alone writes.
func (e *BlockEncoder) buildLabels(samples []LabeledSample) error {
	old := e.lastColumns()
	// The scratch space of the build is not kept (see below): sized as
	// the last columns, it is allocated once per build.
	var b LabelsBuilder
	b.s.raw, b.s.refs = e.state.raw[:0], make(map[string]uint32, len(e.lastSymbols))
	b.s.names, b.s.values = make([]uint32, 0, len(old.names)), make([]uint32, 0, len(old.names))
	b.Reset(&old)
	last := make([]LabelSet, 0, len(samples))
	ls, prev := e.labels[:0], e.prev[:0]
	next := 0 // the series of the last batch expected next
	var index map[LabelSet]int
	for i := range samples {
		set := samples[i].Labels
		last = append(last, set)
		k, found := next, next < len(e.last) && e.last[next] == set
		if !found && len(e.last) > 0 {
			if index == nil {
				index = make(map[LabelSet]int, len(e.last))
				for j, l := range e.last {
					index[l] = j
				}
			}
			k, found = index[set]
		}
		if found {
			next = k + 1
			b.AddSeen(k)
			continue
		}
		// The builder holds the labels it was given last: they go in the
		// other buffer.
		ls = set.AppendLabels(ls[:0])
		b.Add(ls)
		ls, prev = prev, ls
	}
	e.lastSymbols = append(e.lastSymbols[:0], b.s.symbols...)
	part, err := b.AppendPart(e.labelsPart[:0])
	// The strings belong to the label sets.
	clear(ls[:cap(ls)])
	clear(prev[:cap(prev)])
	e.labels, e.prev = ls[:0], prev[:0]
	if err != nil {
		e.last, e.columns = nil, nil
		return err
	}
	e.last = last
	e.columns, e.countsAt, e.labelsPart = slices.Clone(b.s.raw), b.s.countsAt, part
	// A collector keeps an encoder per target from scrape to scrape: it
	// keeps the label columns, compressed and not, and room for the
	// samples, and lets the scratch space of the build go.
	raw := make([]byte, 0, binary.MaxVarintLen64+len(samples)*maxSampleBytes)
	e.state = blockState{raw: raw, floats: e.state.floats}
	return nil
}

// lastColumns are the label columns of the last batch, decoded, with the
// strings of their symbols.
func (e *BlockEncoder) lastColumns() SeenLabels {
	if len(e.columns) == 0 {
		return SeenLabels{}
	}
	raw := e.columns[e.countsAt:]
	next := func() uint32 {
		v, n := binary.Uvarint(raw)
		raw = raw[n:]
		return uint32(v)
	}
	c := SeenLabels{symbols: e.lastSymbols, starts: make([]uint32, len(e.last)+1)}
	for k := range e.last {
		c.starts[k+1] = c.starts[k] + next()
	}
	total := c.starts[len(e.last)]
	c.names, c.values = make([]uint32, total), make([]uint32, total)
	for j := range c.names {
		c.names[j] = next()
	}
	for j := range c.values {
		c.values[j] = next()
	}
	return c
}

// sameLabels reports whether samples hold the label sets of the last batch.
// The encoder keeps the last ones referenced, so no other can take their
// place.
func (e *BlockEncoder) sameLabels(samples []LabeledSample) bool {
	if len(samples) != len(e.last) || len(e.columns) == 0 {
		return false
	}
	for i := range samples {
		if samples[i].Labels != e.last[i] {
			return false
		}
	}
	return true
}

// EncodeSamples is EncodeChunks for the samples of a BlockEncoder.
func EncodeSamples(enc *BlockEncoder, samples []LabeledSample, maxBytes int) ([]Chunk, error) {
	return appendChunks(nil, enc.AppendSamples, func(s []LabeledSample) int { return len(s) }, samples, maxBytes)
}
