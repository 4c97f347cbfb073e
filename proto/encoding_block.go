package proto

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/prometheus/prompb"
)

// BlockZstd is Weir's own payload: a columnar block compressed with zstd.
// A scrape repeats a few thousand label strings over tens of thousands of
// series, and most of its samples share one timestamp, so the block stores
// each unique string once and every column apart, where zstd finds the
// repetition:
//
//	version      byte (1)
//	symbols      uvarint count, count uvarint lengths, then the bytes
//	series       uvarint count
//	label counts uvarint per series
//	label names  uvarint symbol ref per label
//	label values uvarint symbol ref per label
//	sample count uvarint per series
//	timestamps   varint of the first, then zigzag varint delta to the previous
//	values       per sample the 8 bytes of its float64 XOR the previous one,
//	             written byte plane by byte plane (all first bytes, then
//	             all second bytes...), so zstd sees long runs of equal bytes
//
// Each payload is self-contained: no dictionary or state spans messages, so
// any replica can decode any message after a restart.
type BlockZstd struct{}

var _ Encoding = BlockZstd{}

// metricNameLabel is the label that holds the metric name.
const metricNameLabel = "__name__"

// blockVersion is the first byte of every uncompressed block.
const blockVersion = 1

// maxBlockRatio bounds how much larger than its payload a block may be.
// Every series of a scrape differs from the others in at least one label
// value and holds an 8-byte value, so real blocks compress about 5 to 20
// times; a payload claiming more is refused before it is decompressed.
const maxBlockRatio = 1 << 10

// Name implements Encoding.
func (BlockZstd) Name() string { return "block1+zstd" }

var (
	// zstdEncoder and zstdDecoder are safe for concurrent EncodeAll and
	// DecodeAll and keep their state in internal pools.
	zstdEncoder = mustZstdEncoder()
	zstdDecoder = mustZstdDecoder()
	blockPool   = sync.Pool{New: func() any { return new(blockState) }}
)

func mustZstdEncoder() *zstd.Encoder {
	// A payload is at most a message (1 MiB by default): a larger window
	// would only cost memory. At most two encoders' tables exist however
	// many targets encode at once: a collector's memory goal (32 MiB)
	// matters more than encoding three scrapes in parallel. SpeedFastest
	// was chosen by BenchmarkEncoding: 5.5 bytes/sample against 5.1 for
	// SpeedDefault, at about 20% less CPU.
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(2),
		zstd.WithWindowSize(1<<20),
		zstd.WithLowerEncoderMem(true),
		zstd.WithEncoderCRC(false),
		zstd.WithSingleSegment(true)) // the content size is always written, so Decode can check it first
	if err != nil {
		panic(err) // constant options
	}
	return e
}

func mustZstdDecoder() *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxDecodedBytes),
		zstd.WithDecoderMaxWindow(MaxDecodedBytes),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		panic(err) // constant options
	}
	return d
}

// blockState is reused between calls through blockPool.
type blockState struct {
	raw []byte
	// names and values are the name and value symbol refs of every label,
	// series after series.
	names  []uint32
	values []uint32
	// Append only.
	refs    map[string]uint32
	symbols []string
	floats  []uint64
	// Decode only.
	syms         []string
	symLens      []uint32
	labelCounts  []uint32
	sampleCounts []uint32
	kept         []bool  // per series
	nameKept     []uint8 // per symbol: keep's answer for that metric name, 0 if not asked yet
}

func (s *blockState) symbol(v string) uint32 {
	if r, ok := s.refs[v]; ok {
		return r
	}
	r := uint32(len(s.symbols))
	s.refs[v] = r
	s.symbols = append(s.symbols, v)
	return r
}

// Append implements Encoding.
func (BlockZstd) Append(dst []byte, b *Batch) ([]byte, error) {
	s := blockPool.Get().(*blockState)
	defer blockPool.Put(s)
	if s.refs == nil {
		s.refs = make(map[string]uint32)
	}
	clear(s.refs)
	s.symbols, s.names, s.values, s.floats = s.symbols[:0], s.names[:0], s.values[:0], s.floats[:0]

	// Neighbouring series mostly share label names and many values (same
	// metric, same pod): reusing the previous series' ref at the same
	// position skips most map lookups.
	var prev []prompb.Label
	prevRefs := 0
	for i := range b.Series {
		ls := b.Series[i].Labels
		for j, l := range ls {
			var name, value uint32
			if j < len(prev) && prev[j].Name == l.Name {
				name = s.names[prevRefs+j]
			} else {
				name = s.symbol(l.Name)
			}
			if j < len(prev) && prev[j].Value == l.Value {
				value = s.values[prevRefs+j]
			} else {
				value = s.symbol(l.Value)
			}
			s.names = append(s.names, name)
			s.values = append(s.values, value)
		}
		prev, prevRefs = ls, len(s.names)-len(ls)
	}

	raw := append(s.raw[:0], blockVersion)
	raw = binary.AppendUvarint(raw, uint64(len(s.symbols)))
	for _, sym := range s.symbols {
		raw = binary.AppendUvarint(raw, uint64(len(sym)))
	}
	for _, sym := range s.symbols {
		raw = append(raw, sym...)
	}
	raw = binary.AppendUvarint(raw, uint64(len(b.Series)))
	for i := range b.Series {
		raw = binary.AppendUvarint(raw, uint64(len(b.Series[i].Labels)))
	}
	for _, r := range s.names {
		raw = binary.AppendUvarint(raw, uint64(r))
	}
	for _, r := range s.values {
		raw = binary.AppendUvarint(raw, uint64(r))
	}
	for i := range b.Series {
		raw = binary.AppendUvarint(raw, uint64(len(b.Series[i].Samples)))
	}
	var prevTS int64
	var prevV uint64
	first := true
	for i := range b.Series {
		for _, smp := range b.Series[i].Samples {
			if first {
				raw = binary.AppendVarint(raw, smp.Timestamp)
				first = false
			} else {
				raw = binary.AppendVarint(raw, smp.Timestamp-prevTS)
			}
			prevTS = smp.Timestamp
			v := math.Float64bits(smp.Value)
			s.floats = append(s.floats, v^prevV)
			prevV = v
		}
	}
	for shift := 56; shift >= 0; shift -= 8 {
		for _, x := range s.floats {
			raw = append(raw, byte(x>>shift))
		}
	}
	s.raw = raw
	if len(raw) > MaxDecodedBytes {
		return dst, fmt.Errorf("%w: block of %d bytes, limit %d", ErrTooLarge, len(raw), MaxDecodedBytes)
	}
	return zstdEncoder.EncodeAll(raw, dst), nil
}

// Decode implements Encoding. The label strings of the decoded series are
// shared: one string per unique symbol of the message.
func (BlockZstd) Decode(src []byte, b *Batch) error {
	return decodeBlockZstd(src, b, nil)
}

// DecodeSelected is Decode keeping only the series whose metric name (the
// value of their __name__ label, "" without one) keep accepts; keep is
// called at most once per name. The whole block is still decompressed and
// its structure checked, but the labels and samples of the other series are
// neither built nor validated: a stage that reads a few metrics of a scrape
// skips the rest for the cost of reading their refs.
func (BlockZstd) DecodeSelected(src []byte, b *Batch, keep func(name string) bool) error {
	return decodeBlockZstd(src, b, keep)
}

func decodeBlockZstd(src []byte, b *Batch, keep func(string) bool) error {
	b.Reset()
	var h zstd.Header
	if err := h.Decode(src); err != nil {
		return fmt.Errorf("%w: zstd header: %v", ErrMalformed, err)
	}
	// The encoder always writes the size, so the buffer is sized, and a
	// bomb refused, before anything is decompressed.
	if !h.HasFCS || h.FrameContentSize == 0 {
		return fmt.Errorf("%w: zstd frame without a content size", ErrMalformed)
	}
	if h.FrameContentSize > MaxDecodedBytes {
		return fmt.Errorf("%w: decodes to %d bytes, limit %d", ErrTooLarge, h.FrameContentSize, MaxDecodedBytes)
	}
	if h.FrameContentSize > maxBlockRatio*uint64(len(src)) {
		return fmt.Errorf("%w: %d bytes claim to decode to %d, more than a block compresses", ErrMalformed, len(src), h.FrameContentSize)
	}
	size := int(h.FrameContentSize)
	s := blockPool.Get().(*blockState)
	defer blockPool.Put(s)
	if cap(s.raw) < size {
		s.raw = make([]byte, 0, size)
	}
	// The decoder stops at the capacity (WithDecodeAllCapLimit), so a
	// second frame appended to the first cannot grow the output either.
	raw, err := zstdDecoder.DecodeAll(src, s.raw[:0:size])
	if err != nil {
		return fmt.Errorf("%w: zstd: %v", ErrMalformed, err)
	}
	if err := decodeBlock(raw, b, s, keep); err != nil {
		b.Reset()
		return err
	}
	if err := validate(b); err != nil {
		b.Reset()
		return err
	}
	return nil
}

// blockReader reads a block and fails with ErrMalformed naming the column.
type blockReader struct {
	buf []byte
	err error
}

// uvarint reads one; most refs and counts take a single byte, which is
// read inline.
func (r *blockReader) uvarint(what string) uint64 {
	if len(r.buf) > 0 && r.buf[0] < 0x80 {
		v := r.buf[0]
		r.buf = r.buf[1:]
		return uint64(v)
	}
	return r.longUvarint(what)
}

func (r *blockReader) longUvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

// varint reads one; a timestamp delta of most series is 0, one byte.
func (r *blockReader) varint(what string) int64 {
	if len(r.buf) > 0 && r.buf[0] < 0x80 {
		v := r.buf[0]
		r.buf = r.buf[1:]
		return int64(v>>1) ^ -int64(v&1)
	}
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.buf)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

// fail records the error and empties the buffer, so that every later read
// returns 0 without looking at it.
func (r *blockReader) fail(what string) {
	r.err = fmt.Errorf("%w: block: bad or truncated %s", ErrMalformed, what)
	r.buf = nil
}

// count reads a count of items that take at least minBytes each in the rest
// of the block, so that a hostile count fails before it is allocated.
func (r *blockReader) count(what string, minBytes int) int {
	n := r.uvarint(what)
	if r.err == nil && n > uint64(len(r.buf)/minBytes) {
		r.err = fmt.Errorf("%w: block: %s %d exceeds what the remaining %d bytes can hold", ErrMalformed, what, n, len(r.buf))
		return 0
	}
	return int(n)
}

// refs reads n symbol refs into dst, each checked against the symbols.
func (r *blockReader) refs(dst []uint32, n, nSyms int, what string) ([]uint32, error) {
	dst = dst[:0]
	for range n {
		ref := r.uvarint(what)
		if ref >= uint64(nSyms) {
			if r.err != nil {
				return dst, r.err
			}
			return dst, fmt.Errorf("%w: block: %s %d of %d symbols", ErrMalformed, what, ref, nSyms)
		}
		dst = append(dst, uint32(ref))
	}
	return dst, r.err
}

// decodeBlock decodes raw into b, only the series whose metric name keep
// accepts unless keep is nil.
func decodeBlock(raw []byte, b *Batch, s *blockState, keep func(string) bool) error {
	if len(raw) == 0 || raw[0] != blockVersion {
		return fmt.Errorf("%w: block: not a version %d block", ErrMalformed, blockVersion)
	}
	r := blockReader{buf: raw[1:]}

	nSyms := r.count("symbol count", 1)
	lens := s.symLens[:0]
	total := uint64(0)
	for range nSyms {
		l := r.uvarint("symbol length")
		total += l
		lens = append(lens, uint32(min(l, math.MaxUint32)))
	}
	s.symLens = lens
	if r.err != nil {
		return r.err
	}
	if total > uint64(len(r.buf)) {
		return fmt.Errorf("%w: block: symbols need %d bytes, %d left", ErrMalformed, total, len(r.buf))
	}
	// One allocation holds every symbol; the labels are substrings of it.
	all := string(r.buf[:total])
	r.buf = r.buf[total:]
	syms := s.syms[:0]
	off := 0
	for _, l := range lens {
		syms = append(syms, all[off:off+int(l)])
		off += int(l)
	}
	s.syms = syms
	defer clear(s.syms) // let the strings go with the batch

	nSeries := r.count("series count", 2) // a label count and a sample count at least
	if r.err != nil {
		return r.err
	}
	counts := s.labelCounts[:0]
	nLabels := 0
	for range nSeries {
		n := r.uvarint("label count")
		if n > uint64(len(r.buf)) {
			return fmt.Errorf("%w: block: label count %d exceeds the block", ErrMalformed, n)
		}
		nLabels += int(n)
		counts = append(counts, uint32(n))
	}
	s.labelCounts = counts
	if r.err != nil {
		return r.err
	}
	if nLabels > len(r.buf)/2 {
		return fmt.Errorf("%w: block: %d labels exceed what the remaining %d bytes can hold", ErrMalformed, nLabels, len(r.buf))
	}
	var err error
	if s.names, err = r.refs(s.names, nLabels, len(syms), "label name ref"); err != nil {
		return err
	}
	if s.values, err = r.refs(s.values, nLabels, len(syms), "label value ref"); err != nil {
		return err
	}

	sampleCounts := s.sampleCounts[:0]
	nSamples := 0
	for range nSeries {
		n := r.uvarint("sample count")
		if n > uint64(len(r.buf)) {
			return fmt.Errorf("%w: block: sample count %d exceeds the block", ErrMalformed, n)
		}
		nSamples += int(n)
		sampleCounts = append(sampleCounts, uint32(n))
	}
	s.sampleCounts = sampleCounts
	if r.err != nil {
		return r.err
	}
	// Each sample takes at least one timestamp byte and eight value bytes.
	if nSamples > len(r.buf)/9 {
		return fmt.Errorf("%w: block: %d samples exceed what the remaining %d bytes can hold", ErrMalformed, nSamples, len(r.buf))
	}

	keptSeries, keptLabels, keptSamples := s.selectSeries(keep)
	labels := make([]prompb.Label, 0, keptLabels)
	if cap(b.Series) < keptSeries {
		b.Series = make([]prompb.TimeSeries, 0, keptSeries)
	}
	off = 0
	for i, lc := range counts {
		if s.kept[i] {
			start := len(labels)
			for j := off; j < off+int(lc); j++ {
				labels = append(labels, prompb.Label{Name: syms[s.names[j]], Value: syms[s.values[j]]})
			}
			b.Series = append(b.Series, prompb.TimeSeries{Labels: labels[start:len(labels):len(labels)]})
		}
		off += int(lc)
	}

	samples := make([]prompb.Sample, 0, keptSamples)
	var ts int64
	for i, n := range sampleCounts {
		for range n {
			ts += r.varint("timestamp") // the first is absolute: ts starts at 0
			if s.kept[i] {
				samples = append(samples, prompb.Sample{Timestamp: ts})
			}
		}
	}
	if r.err != nil {
		return r.err
	}
	if len(r.buf) != 8*nSamples {
		return fmt.Errorf("%w: block: %d value bytes for %d samples", ErrMalformed, len(r.buf), nSamples)
	}
	planes := r.buf
	var prev uint64
	in, out := 0, 0
	for i, n := range sampleCounts {
		for range n {
			x := uint64(planes[in])<<56 | uint64(planes[nSamples+in])<<48 |
				uint64(planes[2*nSamples+in])<<40 | uint64(planes[3*nSamples+in])<<32 |
				uint64(planes[4*nSamples+in])<<24 | uint64(planes[5*nSamples+in])<<16 |
				uint64(planes[6*nSamples+in])<<8 | uint64(planes[7*nSamples+in])
			prev ^= x
			in++
			if s.kept[i] {
				samples[out].Value = math.Float64frombits(prev)
				out++
			}
		}
	}
	out = 0
	series := 0
	for i, n := range sampleCounts {
		if s.kept[i] {
			b.Series[series].Samples = samples[out : out+int(n) : out+int(n)]
			series++
			out += int(n)
		}
	}
	return nil
}

// selectSeries fills s.kept from the decoded refs: every series if keep is
// nil, else those whose metric name keep accepts. It returns how many
// series, labels and samples are kept.
func (s *blockState) selectSeries(keep func(string) bool) (series, labels, samples int) {
	n := len(s.labelCounts)
	s.kept = slices.Grow(s.kept[:0], n)[:n]
	if keep != nil {
		s.nameKept = slices.Grow(s.nameKept[:0], len(s.syms))[:len(s.syms)]
		clear(s.nameKept)
	}
	var noName uint8 // keep's answer for the series without a name
	off := 0
	for i, lc := range s.labelCounts {
		kept := true
		if keep != nil {
			answer, name := &noName, ""
			for j := off; j < off+int(lc); j++ {
				if s.syms[s.names[j]] == metricNameLabel {
					answer, name = &s.nameKept[s.values[j]], s.syms[s.values[j]]
					break
				}
			}
			if *answer == 0 {
				*answer = 2
				if keep(name) {
					*answer = 1
				}
			}
			kept = *answer == 1
		}
		s.kept[i] = kept
		if kept {
			series++
			labels += int(lc)
			samples += int(s.sampleCounts[i])
		}
		off += int(lc)
	}
	return series, labels, samples
}
