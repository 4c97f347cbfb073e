package proto

import (
	"encoding/binary"
	"slices"

	"github.com/prometheus/prometheus/prompb"
)

// AppendBlockLabels appends to dst the start of the BlockZstd payloads of
// series: the skippable frame and the compressed labels frame. A stage
// that sends the same series again and again, with new samples, keeps it
// and builds each payload with AppendBlock, compressing only the samples.
func AppendBlockLabels(dst []byte, series []prompb.TimeSeries) ([]byte, error) {
	s := blockPool.Get().(*blockState)
	defer blockPool.Put(s)
	s.raw = s.appendLabels(s.raw[:0], &Batch{Series: series})
	return appendLabelsFrame(dst, s.raw, len(series))
}

// AppendBlock appends to dst the BlockZstd payload of series whose labels
// part is labels, from AppendBlockLabels, and whose samples are those of
// the series of r at the indices in from, in order; a nil from takes every
// series of r, and then the samples frame of a block2+zstd payload is
// copied as it is. It returns the payload and how many samples it holds.
// The caller sees to it that labels hold len(from) series (r's length for
// a nil from): the payload then holds what BlockZstd.Append makes of the
// same series.
func AppendBlock(dst, labels []byte, r *BlockReader, from []int32) ([]byte, int, error) {
	dst = append(dst, labels...)
	if from == nil && r.labelsPart != nil {
		return append(dst, r.samplesFrame...), len(r.ts), nil
	}
	labelsLen, err := contentSize(labels[min(splitHeaderLen, len(labels)):], len(labels), 0)
	if err != nil {
		return dst, 0, err
	}
	n, at := len(from), func(k int) int32 { return from[k] }
	if from == nil {
		n, at = r.Len(), func(k int) int32 { return int32(k) }
	}
	s := blockPool.Get().(*blockState)
	defer blockPool.Put(s)
	w := s.sampleWriter(n)
	for k := range n {
		i := at(k)
		w.raw = binary.AppendUvarint(w.raw, uint64(r.sampleOffs[i+1]-r.sampleOffs[i]))
	}
	for k := range n {
		i := at(k)
		for j := r.sampleOffs[i]; j < r.sampleOffs[i+1]; j++ {
			w.add(r.ts[j], r.vs[j])
		}
	}
	payload, err := s.compress(dst, w, int(labelsLen))
	return payload, len(w.floats), err
}

// AppendBatch appends every series of r to b, as Decode does: their label
// strings are shared by the payload's series and stay valid after the
// reader moves on. A malformed label column leaves b as it was.
func (r *BlockReader) AppendBatch(b *Batch) error {
	if err := r.index(); err != nil {
		return err
	}
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
