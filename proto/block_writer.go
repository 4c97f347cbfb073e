package proto

import (
	"encoding/binary"
	"slices"

	"github.com/prometheus/prometheus/prompb"
)

// AppendBlockLabels appends to dst the label columns of the block1+zstd
// block of series: every column before the sample counts. A stage that
// sends the same series again and again, with new samples, keeps them and
// builds each payload with AppendBlock, skipping the labels.
func AppendBlockLabels(dst []byte, series []prompb.TimeSeries) []byte {
	s := blockPool.Get().(*blockState)
	defer blockPool.Put(s)
	// Built in the pooled buffer, so that dst grows once.
	s.raw = s.appendLabels(s.raw[:0], &Batch{Series: series})
	return append(dst, s.raw...)
}

// AppendBlock appends to dst the block1+zstd payload of series whose label
// columns are labels, from AppendBlockLabels, and whose samples are those of
// the series of r at the indices in from, in order; a nil from takes every
// series of r. It returns the payload and how many samples it holds. The
// caller sees to it that labels hold len(from) series (r's length for a nil
// from): the payload is then the one BlockZstd.Append makes of the same
// series.
func AppendBlock(dst, labels []byte, r *BlockReader, from []int32) ([]byte, int, error) {
	s := blockPool.Get().(*blockState)
	defer blockPool.Put(s)
	raw := append(s.raw[:0], labels...)
	if from == nil {
		for i := range r.Len() {
			raw = binary.AppendUvarint(raw, uint64(r.sampleOffs[i+1]-r.sampleOffs[i]))
		}
		w := s.sampleWriter(raw)
		for k := range r.ts {
			w.add(r.ts[k], r.vs[k])
		}
		payload, err := s.compress(dst, w)
		return payload, len(r.ts), err
	}
	for _, i := range from {
		raw = binary.AppendUvarint(raw, uint64(r.sampleOffs[i+1]-r.sampleOffs[i]))
	}
	w := s.sampleWriter(raw)
	for _, i := range from {
		for k := r.sampleOffs[i]; k < r.sampleOffs[i+1]; k++ {
			w.add(r.ts[k], r.vs[k])
		}
	}
	payload, err := s.compress(dst, w)
	return payload, len(w.floats), err
}

// AppendBatch appends every series of r to b, as Decode does: their label
// strings are shared by the payload's series and stay valid after the
// reader moves on. A malformed label column leaves b as it was.
func (r *BlockReader) AppendBatch(b *Batch) error {
	n := len(b.Series)
	labels := make([]prompb.Label, 0, r.nLabels)
	samples := make([]prompb.Sample, 0, len(r.ts))
	b.Series = slices.Grow(b.Series, r.Len())
	for i := range r.Len() {
		l, s := len(labels), len(samples)
		var err error
		if labels, err = r.AppendLabels(labels, i); err != nil {
			clear(b.Series[n:])
			b.Series = b.Series[:n]
			return err
		}
		samples = r.AppendSamples(samples, i)
		b.Series = append(b.Series, prompb.TimeSeries{Labels: labels[l:len(labels):len(labels)], Samples: samples[s:len(samples):len(samples)]})
	}
	return nil
}
