package proto

import (
	"encoding/binary"

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
// same label sets as the last one, in the same order, it reuses the label
// columns it built for that one and encodes only the samples, without
// asking the label sets for their labels. Not safe for concurrent use.
type BlockEncoder struct {
	state blockState
	// last are the label sets of the last batch; their label columns are
	// state.raw[:labelsLen].
	last      []LabelSet
	labelsLen int
	// labels and prev hold the labels of a series and of the one before
	// it while the label columns are built.
	labels, prev []prompb.Label
	// symbols and labelRefs are the unique strings and the labels of the
	// last build.
	symbols, labelRefs int
}

// Name is the name of the encoding of the payloads: BlockZstd's.
func (e *BlockEncoder) Name() string { return BlockZstd{}.Name() }

// AppendSamples appends to dst the BlockZstd payload of samples, each a
// series of one sample.
func (e *BlockEncoder) AppendSamples(dst []byte, samples []LabeledSample) ([]byte, error) {
	if !e.sameLabels(samples) {
		e.buildLabels(samples)
	}
	raw := e.state.raw[:e.labelsLen]
	for range samples {
		raw = append(raw, 1) // the uvarint sample count of each series
	}
	w := e.state.sampleWriter(raw)
	for _, s := range samples {
		w.add(s.Timestamp, s.Value)
	}
	return e.state.compress(dst, w)
}

// maxSampleBytes is the most a one-sample series adds to a block: its
// sample count, its timestamp delta and its value.
const maxSampleBytes = 1 + binary.MaxVarintLen64 + 8

// buildLabels builds the label columns of samples and remembers their
// label sets.
func (e *BlockEncoder) buildLabels(samples []LabeledSample) {
	s := &e.state
	// The scratch space of the build is not kept (see below): sized as
	// the last build's, it is allocated once.
	s.refs = make(map[string]uint32, e.symbols)
	s.names, s.values = make([]uint32, 0, e.labelRefs), make([]uint32, 0, e.labelRefs)
	s.startLabels()
	e.last = e.last[:0]
	ls, prev := e.labels[:0], e.prev[:0]
	for i := range samples {
		ls = samples[i].Labels.AppendLabels(ls[:0])
		s.addLabels(ls, prev)
		ls, prev = prev, ls
		e.last = append(e.last, samples[i].Labels)
	}
	// The strings belong to the label sets.
	clear(ls[:cap(ls)])
	clear(prev[:cap(prev)])
	e.labels, e.prev = ls[:0], prev[:0]
	e.symbols, e.labelRefs = len(s.symbols), len(s.names)
	columns := s.writeLabels(s.raw[:0])
	e.labelsLen = len(columns)
	// A collector keeps an encoder per target from scrape to scrape: it
	// keeps the label columns, with room for the samples, and lets the
	// rest go.
	raw := make([]byte, len(columns), len(columns)+len(samples)*maxSampleBytes)
	copy(raw, columns)
	*s = blockState{raw: raw, floats: s.floats}
}

// sameLabels reports whether samples hold the label sets of the last batch.
// The encoder keeps the last ones referenced, so no other can take their
// place.
func (e *BlockEncoder) sameLabels(samples []LabeledSample) bool {
	if len(samples) != len(e.last) || e.labelsLen == 0 {
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
