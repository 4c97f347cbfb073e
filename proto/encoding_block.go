package proto

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"
	"unsafe"

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
	raw     []byte
	refs    map[string]uint32
	symbols []string
	names   []uint32
	values  []uint32
	floats  []uint64
	syms    []string
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
	return s.appendSamples(dst, s.appendLabels(s.raw[:0], b), b)
}

// appendLabels appends the columns of a block up to the label values.
func (s *blockState) appendLabels(raw []byte, b *Batch) []byte {
	if s.refs == nil {
		s.refs = make(map[string]uint32)
	}
	clear(s.refs)
	s.symbols, s.names, s.values = s.symbols[:0], s.names[:0], s.values[:0]

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

	raw = append(raw, blockVersion)
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
	clear(s.symbols) // the strings belong to the batch
	return raw
}

// appendSamples appends the sample columns of b to raw, which holds its
// label columns, and the compressed block to dst.
func (s *blockState) appendSamples(dst, raw []byte, b *Batch) ([]byte, error) {
	for i := range b.Series {
		raw = binary.AppendUvarint(raw, uint64(len(b.Series[i].Samples)))
	}
	s.floats = s.floats[:0]
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

// BlockEncoder is BlockZstd for one sender of the same series scrape after
// scrape, as a collector's target is: when a batch holds the same label
// slices as the last one, in the same order, it reuses the label columns
// it built for that one and encodes only the samples. The payloads are
// those of BlockZstd. Not safe for concurrent use.
type BlockEncoder struct {
	BlockZstd
	state blockState
	// last identifies the label slices of the last batch; its label
	// columns are state.raw[:labelsLen].
	last      []labelSlice
	labelsLen int
}

type labelSlice struct {
	first *prompb.Label
	n     int
}

var _ Encoding = (*BlockEncoder)(nil)

// Append implements Encoding.
func (e *BlockEncoder) Append(dst []byte, b *Batch) ([]byte, error) {
	if !e.sameLabels(b) {
		raw := e.state.appendLabels(e.state.raw[:0], b)
		e.labelsLen = len(raw)
		e.last = e.last[:0]
		for i := range b.Series {
			ls := b.Series[i].Labels
			e.last = append(e.last, labelSlice{unsafe.SliceData(ls), len(ls)})
		}
		e.state.raw = raw
	}
	return e.state.appendSamples(dst, e.state.raw[:e.labelsLen], b)
}

// sameLabels reports whether b holds the label slices of the last batch.
// The slices are compared by address: the encoder keeps the last ones
// referenced, so no other slice can take their place.
func (e *BlockEncoder) sameLabels(b *Batch) bool {
	if len(b.Series) != len(e.last) || e.labelsLen == 0 {
		return false
	}
	for i := range b.Series {
		ls := b.Series[i].Labels
		if e.last[i] != (labelSlice{unsafe.SliceData(ls), len(ls)}) {
			return false
		}
	}
	return true
}

// Decode implements Encoding. The label strings of the decoded series are
// shared: one string per unique symbol of the message.
func (BlockZstd) Decode(src []byte, b *Batch) error {
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
	if err := decodeBlock(raw, b, s); err != nil {
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

func (r *blockReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.err = fmt.Errorf("%w: block: bad or truncated %s", ErrMalformed, what)
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *blockReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.buf)
	if n <= 0 {
		r.err = fmt.Errorf("%w: block: bad or truncated %s", ErrMalformed, what)
		return 0
	}
	r.buf = r.buf[n:]
	return v
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

func decodeBlock(raw []byte, b *Batch, s *blockState) error {
	if len(raw) == 0 || raw[0] != blockVersion {
		return fmt.Errorf("%w: block: not a version %d block", ErrMalformed, blockVersion)
	}
	r := blockReader{buf: raw[1:]}

	nSyms := r.count("symbol count", 1)
	lens := s.names[:0]
	total := uint64(0)
	for range nSyms {
		l := r.uvarint("symbol length")
		total += l
		lens = append(lens, uint32(min(l, math.MaxUint32)))
	}
	s.names = lens
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
	counts := s.values[:0]
	nLabels := 0
	for range nSeries {
		n := r.uvarint("label count")
		if n > uint64(len(r.buf)) {
			return fmt.Errorf("%w: block: label count %d exceeds the block", ErrMalformed, n)
		}
		nLabels += int(n)
		counts = append(counts, uint32(n))
	}
	s.values = counts
	if r.err != nil {
		return r.err
	}
	if nLabels > len(r.buf)/2 {
		return fmt.Errorf("%w: block: %d labels exceed what the remaining %d bytes can hold", ErrMalformed, nLabels, len(r.buf))
	}
	labels := make([]prompb.Label, nLabels)
	for i := range labels {
		ref := r.uvarint("label name ref")
		if ref >= uint64(len(syms)) {
			return fmt.Errorf("%w: block: label name ref %d of %d symbols", ErrMalformed, ref, len(syms))
		}
		labels[i].Name = syms[ref]
	}
	for i := range labels {
		ref := r.uvarint("label value ref")
		if ref >= uint64(len(syms)) {
			return fmt.Errorf("%w: block: label value ref %d of %d symbols", ErrMalformed, ref, len(syms))
		}
		labels[i].Value = syms[ref]
	}
	if r.err != nil {
		return r.err
	}

	if cap(b.Series) < nSeries {
		b.Series = make([]prompb.TimeSeries, 0, nSeries)
	}
	b.Series = b.Series[:nSeries]
	nSamples := 0
	off = 0
	for i := range b.Series {
		n := r.uvarint("sample count")
		if n > uint64(len(r.buf)) {
			return fmt.Errorf("%w: block: sample count %d exceeds the block", ErrMalformed, n)
		}
		nSamples += int(n)
		lc := int(counts[i])
		b.Series[i] = prompb.TimeSeries{Labels: labels[off : off+lc : off+lc]}
		counts[i] = uint32(n)
		off += lc
	}
	if r.err != nil {
		return r.err
	}
	// Each sample takes at least one timestamp byte and eight value bytes.
	if nSamples > len(r.buf)/9 {
		return fmt.Errorf("%w: block: %d samples exceed what the remaining %d bytes can hold", ErrMalformed, nSamples, len(r.buf))
	}
	samples := make([]prompb.Sample, nSamples)
	var ts int64
	for i := range samples {
		d := r.varint("timestamp")
		if i == 0 {
			ts = d
		} else {
			ts += d
		}
		samples[i].Timestamp = ts
	}
	if r.err != nil {
		return r.err
	}
	if len(r.buf) != 8*nSamples {
		return fmt.Errorf("%w: block: %d value bytes for %d samples", ErrMalformed, len(r.buf), nSamples)
	}
	planes := r.buf
	var prev uint64
	for i := range samples {
		x := uint64(planes[i])<<56 | uint64(planes[nSamples+i])<<48 |
			uint64(planes[2*nSamples+i])<<40 | uint64(planes[3*nSamples+i])<<32 |
			uint64(planes[4*nSamples+i])<<24 | uint64(planes[5*nSamples+i])<<16 |
			uint64(planes[6*nSamples+i])<<8 | uint64(planes[7*nSamples+i])
		prev ^= x
		samples[i].Value = math.Float64frombits(prev)
	}
	off = 0
	for i := range b.Series {
		n := int(counts[i])
		b.Series[i].Samples = samples[off : off+n : off+n]
		off += n
	}
	return nil
}
