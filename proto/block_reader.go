package proto

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"slices"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/prometheus/prompb"
)

// metricNameLabel is the label that holds the metric name.
const metricNameLabel = "__name__"

// BlockReader reads a BlockZstd payload series by series, for a stage
// that needs few of its series: the labels and samples of a series are
// built only when asked for, and a stage that saw the same series from the
// same target before can tell from LabelsSum without reading any label.
// Of a block2+zstd payload, Reset decompresses the samples frame only, and
// the labels frame is decompressed by the first call that needs a label.
// Decode is every series read through it. A BlockReader is reused from
// payload to payload and is not safe for concurrent use.
type BlockReader struct {
	raw     []byte // the decompressed samples frame, or block1 block
	nSeries int

	// labelsPart is the skippable frame and the labels frame of a
	// block2+zstd payload, read by readLabels; nil for block1.
	labelsPart   []byte
	samplesFrame []byte // the rest of the payload
	labelRaw     []byte // its labels frame decompressed
	labelsRead   bool
	labelsErr    error

	symLens  []uint32
	symBytes []byte // every symbol, one after the other

	labelCounts []uint32 // per series
	nLabels     int
	columns     []byte // the label names column, then the label values column
	labelsEnd   int    // where the label columns end in raw, for block1

	// Built and checked by the first Name or AppendLabels of a payload.
	indexed   bool
	indexErr  error
	syms      []string // substrings of one string holding every symbol
	nameRefs  []uint32 // per label
	valueRefs []uint32 // per label
	labelOffs []uint32 // where each series' labels start in the refs, and the end

	match matchScratch

	sampleOffs []uint32 // where each series' samples start in ts and vs, and the end
	ts         []int64
	vs         []float64
}

// Reset decompresses src and reads its structure, the samples included;
// labels are read on demand, from src, which must not change until the
// next Reset. Errors wrap ErrMalformed or ErrTooLarge, and leave the
// reader with no series.
func (r *BlockReader) Reset(src []byte) error {
	r.forget()
	var err error
	if len(src) >= 4 && binary.LittleEndian.Uint32(src) == skippableMagic {
		err = r.resetSplit(src)
	} else {
		err = r.resetBlock1(src)
	}
	if err != nil {
		// The labels fail as the payload did.
		r.nSeries, r.labelsEnd = 0, 0
		r.labelsRead, r.labelsErr = true, err
	}
	return err
}

// forget drops the symbol strings and the labels of the last payload, so
// that a pooled reader does not hold them.
func (r *BlockReader) forget() {
	clear(r.syms)
	r.syms = r.syms[:0]
	r.labelsPart, r.samplesFrame = nil, nil
	r.labelsRead, r.labelsErr = false, nil
	r.indexed, r.indexErr = false, nil
}

// BlockSeries returns the series count a block2+zstd payload gives in its
// first frame, without decompressing anything, for a stage that passes the
// payload on as it is and only counts it; ok is false for a payload of
// another kind. Reset checks the count against both frames.
func BlockSeries(src []byte) (n int, ok bool) {
	if len(src) < splitHeaderLen || binary.LittleEndian.Uint32(src) != skippableMagic ||
		binary.LittleEndian.Uint32(src[4:]) != splitHeaderLen-8 {
		return 0, false
	}
	return int(binary.LittleEndian.Uint32(src[12:])), true
}

// resetSplit reads a block2+zstd payload: its samples now, its labels when
// they are needed.
func (r *BlockReader) resetSplit(src []byte) error {
	series, ok := BlockSeries(src)
	if !ok {
		return fmt.Errorf("%w: block: truncated first frame", ErrMalformed)
	}
	n := binary.LittleEndian.Uint32(src[8:])
	if uint64(n) > uint64(len(src)-splitHeaderLen) {
		return fmt.Errorf("%w: block: labels frame of %d bytes, %d left", ErrMalformed, n, len(src)-splitHeaderLen)
	}
	end := splitHeaderLen + int(n)
	labelsSize, err := contentSize(src[splitHeaderLen:end], len(src), 0)
	if err != nil {
		return fmt.Errorf("labels frame: %w", err)
	}
	if r.raw, err = decompress(r.raw, src[end:], len(src), labelsSize); err != nil {
		return fmt.Errorf("samples frame: %w", err)
	}
	c := varintReader{buf: r.raw}
	r.nSeries = c.count("series count", 1) // a sample count at least
	if c.err == nil && r.nSeries != series {
		return fmt.Errorf("%w: block: samples of %d series, the first frame says %d", ErrMalformed, r.nSeries, series)
	}
	if err := r.readSamples(&c); err != nil {
		return err
	}
	r.labelsPart, r.samplesFrame = src[:end:end], src[end:]
	return nil
}

// resetBlock1 reads a block1+zstd payload, whose labels come first.
func (r *BlockReader) resetBlock1(src []byte) error {
	raw, err := decompress(r.raw, src, len(src), 0)
	if err != nil {
		return err
	}
	r.raw = raw
	if len(raw) == 0 || raw[0] != block1Version {
		return fmt.Errorf("%w: block: not a version %d block", ErrMalformed, block1Version)
	}
	r.labelsRead = true
	c := varintReader{buf: raw[1:]}
	if r.labelsErr = r.readLabelColumns(&c); r.labelsErr != nil {
		return r.labelsErr
	}
	r.nSeries = len(r.labelCounts)
	r.labelsEnd = len(raw) - len(c.buf)
	return r.readSamples(&c)
}

// contentSize checks the header of the zstd frame at the start of src,
// which must give its size, and returns that size. payload is the size of
// the whole payload the frame is part of, other what the payload's other
// frame decodes to, which counts towards the limit.
func contentSize(src []byte, payload int, other uint64) (uint64, error) {
	var h zstd.Header
	if err := h.Decode(src); err != nil {
		return 0, fmt.Errorf("%w: zstd header: %v", ErrMalformed, err)
	}
	// The encoder always writes the size, so the buffer is sized, and a
	// bomb refused, before anything is decompressed.
	if !h.HasFCS || h.FrameContentSize == 0 {
		return 0, fmt.Errorf("%w: zstd frame without a content size", ErrMalformed)
	}
	if h.FrameContentSize > MaxDecodedBytes-other {
		return 0, fmt.Errorf("%w: decodes to %d bytes, limit %d", ErrTooLarge, h.FrameContentSize+other, MaxDecodedBytes)
	}
	// Against the whole payload: a samples frame alone compresses far
	// more than a block when the values repeat (a scrape of zeros).
	if h.FrameContentSize+other > maxBlockRatio*uint64(payload) {
		return 0, fmt.Errorf("%w: %d bytes claim to decode to %d, more than a block compresses", ErrMalformed, payload, h.FrameContentSize+other)
	}
	return h.FrameContentSize, nil
}

// decompress decompresses the zstd frame src into buf's memory; payload
// and other are as for contentSize.
func decompress(buf, src []byte, payload int, other uint64) ([]byte, error) {
	n, err := contentSize(src, payload, other)
	if err != nil {
		return buf[:0], err
	}
	size := int(n)
	if cap(buf) < size {
		buf = make([]byte, 0, size)
	}
	// The decoder stops at the capacity (WithDecodeAllCapLimit), so a
	// second frame appended to the first cannot grow the output either.
	out, err := zstdDecoder.DecodeAll(src, buf[:0:size])
	if err != nil {
		return buf[:0], fmt.Errorf("%w: zstd: %v", ErrMalformed, err)
	}
	return out, nil
}

// readLabels decompresses and reads the labels frame of a block2+zstd
// payload, once; a block1 payload's were read by Reset.
func (r *BlockReader) readLabels() error {
	if r.labelsRead {
		return r.labelsErr
	}
	r.labelsRead = true
	raw, err := decompress(r.labelRaw, r.labelsPart[splitHeaderLen:], len(r.labelsPart)+len(r.samplesFrame), uint64(len(r.raw)))
	r.labelRaw = raw
	if err != nil {
		r.labelsErr = fmt.Errorf("labels frame: %w", err)
		return r.labelsErr
	}
	if len(raw) == 0 || raw[0] != blockVersion {
		r.labelsErr = fmt.Errorf("%w: block: labels frame not of version %d", ErrMalformed, blockVersion)
		return r.labelsErr
	}
	c := varintReader{buf: raw[1:]}
	if r.labelsErr = r.readLabelColumns(&c); r.labelsErr != nil {
		return r.labelsErr
	}
	switch {
	case len(c.buf) > 0:
		r.labelsErr = fmt.Errorf("%w: block: %d bytes after the label columns", ErrMalformed, len(c.buf))
	case len(r.labelCounts) != r.nSeries:
		r.labelsErr = fmt.Errorf("%w: block: labels of %d series, samples of %d", ErrMalformed, len(r.labelCounts), r.nSeries)
	}
	return r.labelsErr
}

// readLabelColumns reads the label columns after the version byte: the
// symbols are read and the refs only skipped, for index to read.
func (r *BlockReader) readLabelColumns(c *varintReader) error {
	nSyms := c.count("symbol count", 1)
	lens := r.symLens[:0]
	total := uint64(0)
	for range nSyms {
		l := c.uvarint("symbol length")
		total += l
		lens = append(lens, uint32(min(l, math.MaxUint32)))
	}
	r.symLens = lens
	if c.err != nil {
		return c.err
	}
	if total > uint64(len(c.buf)) {
		return fmt.Errorf("%w: block: symbols need %d bytes, %d left", ErrMalformed, total, len(c.buf))
	}
	r.symBytes, c.buf = c.buf[:total], c.buf[total:]

	nSeries := c.count("series count", 1) // a label count at least
	if c.err != nil {
		return c.err
	}
	counts := r.labelCounts[:0]
	nLabels := 0
	for range nSeries {
		n := c.uvarint("label count")
		if n > uint64(len(c.buf)) {
			return fmt.Errorf("%w: block: label count %d exceeds the block", ErrMalformed, n)
		}
		nLabels += int(n)
		counts = append(counts, uint32(n))
	}
	r.labelCounts, r.nLabels = counts, nLabels
	if c.err != nil {
		return c.err
	}
	if nLabels > len(c.buf)/2 {
		return fmt.Errorf("%w: block: %d labels exceed what the remaining %d bytes can hold", ErrMalformed, nLabels, len(c.buf))
	}
	columns := c.buf
	c.skip(nLabels, "label name ref")
	c.skip(nLabels, "label value ref")
	if c.err != nil {
		return c.err
	}
	r.columns = columns[:len(columns)-len(c.buf)]
	return nil
}

// readSamples reads the sample columns of r.nSeries series, which must
// end the block.
func (r *BlockReader) readSamples(c *varintReader) error {
	offs := append(r.sampleOffs[:0], 0)
	nSamples := 0
	for range r.nSeries {
		n := c.uvarint("sample count")
		if n > uint64(len(c.buf)) {
			return fmt.Errorf("%w: block: sample count %d exceeds the block", ErrMalformed, n)
		}
		nSamples += int(n)
		offs = append(offs, uint32(nSamples))
	}
	r.sampleOffs = offs
	if c.err != nil {
		return c.err
	}
	// Each sample takes at least one timestamp byte and eight value bytes.
	if nSamples > len(c.buf)/9 {
		return fmt.Errorf("%w: block: %d samples exceed what the remaining %d bytes can hold", ErrMalformed, nSamples, len(c.buf))
	}
	ts := r.ts[:0]
	var t int64
	for range nSamples {
		t += c.varint("timestamp") // the first is absolute: t starts at 0
		ts = append(ts, t)
	}
	r.ts = ts
	if c.err != nil {
		return c.err
	}
	if len(c.buf) != 8*nSamples {
		return fmt.Errorf("%w: block: %d value bytes for %d samples", ErrMalformed, len(c.buf), nSamples)
	}
	planes := c.buf
	vs := r.vs[:0]
	var prev uint64
	for i := range nSamples {
		x := uint64(planes[i])<<56 | uint64(planes[nSamples+i])<<48 |
			uint64(planes[2*nSamples+i])<<40 | uint64(planes[3*nSamples+i])<<32 |
			uint64(planes[4*nSamples+i])<<24 | uint64(planes[5*nSamples+i])<<16 |
			uint64(planes[6*nSamples+i])<<8 | uint64(planes[7*nSamples+i])
		prev ^= x
		vs = append(vs, math.Float64frombits(prev))
	}
	r.vs = vs
	return nil
}

// Len is the number of series.
func (r *BlockReader) Len() int { return r.nSeries }

// Samples is the number of samples of every series.
func (r *BlockReader) Samples() int { return len(r.ts) }

// LabelsSum is a hash of every label of every series, in order, and of
// nothing else: two payloads with the same sum list the same series in the
// same order (unless 64-bit hashes collide), as successive scrapes of a
// target mostly do whatever their samples. Of a block2+zstd payload it
// hashes the first two frames, the compressed labels and the series count
// that Reset found in the samples too, without decompressing the labels: a
// payload with the sum of one whose labels were read holds samples of
// exactly as many series.
func (r *BlockReader) LabelsSum() uint64 {
	if r.labelsPart == nil {
		return xxhash.Sum64(r.raw[:r.labelsEnd])
	}
	return xxhash.Sum64(r.labelsPart)
}

// LabelsPart is the skippable frame and the labels frame of a block2+zstd
// payload: the payload up to its samples frame. It is nil for block1.
func (r *BlockReader) LabelsPart() []byte { return r.labelsPart }

// Name is the metric name of series i: the value of its __name__ label,
// "" if it has none. The error is that of a malformed label column.
func (r *BlockReader) Name(i int) (string, error) {
	if err := r.index(); err != nil {
		return "", err
	}
	for j := r.labelOffs[i]; j < r.labelOffs[i+1]; j++ {
		if r.syms[r.nameRefs[j]] == metricNameLabel {
			return r.syms[r.valueRefs[j]], nil
		}
	}
	return "", nil
}

// AppendLabels appends the labels of series i to dst. Their strings are
// shared by every series of the payload; a series whose labels no backend
// would accept (see Decode) fails with ErrMalformed and leaves dst as it was.
func (r *BlockReader) AppendLabels(dst []prompb.Label, i int) ([]prompb.Label, error) {
	if err := r.index(); err != nil {
		return dst, err
	}
	start := len(dst)
	for j := r.labelOffs[i]; j < r.labelOffs[i+1]; j++ {
		dst = append(dst, prompb.Label{Name: r.syms[r.nameRefs[j]], Value: r.syms[r.valueRefs[j]]})
	}
	if err := validateLabels(i, dst[start:]); err != nil {
		return dst[:start], err
	}
	return dst, nil
}

// AppendSamples appends the samples of series i to dst.
func (r *BlockReader) AppendSamples(dst []prompb.Sample, i int) []prompb.Sample {
	for k := r.sampleOffs[i]; k < r.sampleOffs[i+1]; k++ {
		dst = append(dst, prompb.Sample{Value: r.vs[k], Timestamp: r.ts[k]})
	}
	return dst
}

// index decodes and checks the label refs and builds the symbol strings,
// once per payload.
func (r *BlockReader) index() error {
	if r.indexed {
		return r.indexErr
	}
	r.indexed = true
	if r.indexErr = r.readLabels(); r.indexErr != nil {
		return r.indexErr
	}
	c := varintReader{buf: r.columns}
	nSyms := len(r.symLens)
	if r.nameRefs, r.indexErr = c.refs(r.nameRefs, r.nLabels, nSyms, "label name ref"); r.indexErr != nil {
		return r.indexErr
	}
	if r.valueRefs, r.indexErr = c.refs(r.valueRefs, r.nLabels, nSyms, "label value ref"); r.indexErr != nil {
		return r.indexErr
	}
	offs := append(r.labelOffs[:0], 0)
	n := uint32(0)
	for _, lc := range r.labelCounts {
		n += lc
		offs = append(offs, n)
	}
	r.labelOffs = offs
	// One allocation holds every symbol; the labels are substrings of it.
	all := string(r.symBytes)
	off := 0
	for _, l := range r.symLens {
		r.syms = append(r.syms, all[off:off+int(l)])
		off += int(l)
	}
	return nil
}

// varintReader reads a column and fails with ErrMalformed naming it.
type varintReader struct {
	buf []byte
	err error
}

// uvarint reads one; most refs and counts take a single byte, which is
// read inline.
func (c *varintReader) uvarint(what string) uint64 {
	if len(c.buf) > 0 && c.buf[0] < 0x80 {
		v := c.buf[0]
		c.buf = c.buf[1:]
		return uint64(v)
	}
	return c.longUvarint(what)
}

func (c *varintReader) longUvarint(what string) uint64 {
	if c.err != nil {
		return 0
	}
	v, n := binary.Uvarint(c.buf)
	if n <= 0 {
		c.fail(what)
		return 0
	}
	c.buf = c.buf[n:]
	return v
}

// varint reads one; the timestamp delta of most samples is 0, one byte.
func (c *varintReader) varint(what string) int64 {
	if len(c.buf) > 0 && c.buf[0] < 0x80 {
		v := c.buf[0]
		c.buf = c.buf[1:]
		return int64(v>>1) ^ -int64(v&1)
	}
	if c.err != nil {
		return 0
	}
	v, n := binary.Varint(c.buf)
	if n <= 0 {
		c.fail(what)
		return 0
	}
	c.buf = c.buf[n:]
	return v
}

// fail records the error and empties the buffer, so that every later read
// returns 0 without looking at it.
func (c *varintReader) fail(what string) {
	c.err = fmt.Errorf("%w: block: bad or truncated %s", ErrMalformed, what)
	c.buf = nil
}

// count reads a count of items that take at least minBytes each in the rest
// of the block, so that a hostile count fails before it is allocated.
func (c *varintReader) count(what string, minBytes int) int {
	n := c.uvarint(what)
	if c.err == nil && n > uint64(len(c.buf)/minBytes) {
		c.err = fmt.Errorf("%w: block: %s %d exceeds what the remaining %d bytes can hold", ErrMalformed, what, n, len(c.buf))
		return 0
	}
	return int(n)
}

// skip advances past n uvarints without decoding them. The last byte of
// each has its top bit clear, so eight bytes are counted at once.
func (c *varintReader) skip(n int, what string) {
	buf := c.buf
	for n > 0 && len(buf) >= 8 {
		ends := ^binary.LittleEndian.Uint64(buf) & 0x8080808080808080
		if k := bits.OnesCount64(ends); k < n {
			n -= k
			buf = buf[8:]
			continue
		}
		for ; n > 1; n-- {
			ends &= ends - 1 // drop the lowest end
		}
		buf = buf[bits.TrailingZeros64(ends)/8+1:]
		n = 0
	}
	for ; n > 0 && len(buf) > 0; buf = buf[1:] {
		if buf[0] < 0x80 {
			n--
		}
	}
	c.buf = buf
	if n > 0 {
		c.fail(what)
	}
}

// refs reads n symbol refs into dst, each checked against the symbols.
// Refs of one and two bytes, all of them below 16,384 symbols, are read
// inline: this loop is most of reading a payload's labels.
func (c *varintReader) refs(dst []uint32, n, nSyms int, what string) ([]uint32, error) {
	dst = slices.Grow(dst[:0], n)
	buf := c.buf
	for range n {
		var ref uint64
		switch {
		case len(buf) >= 2 && buf[0] < 0x80:
			ref, buf = uint64(buf[0]), buf[1:]
		case len(buf) >= 2 && buf[1] < 0x80:
			ref, buf = uint64(buf[0]&0x7f)|uint64(buf[1])<<7, buf[2:]
		default:
			c.buf = buf
			if ref = c.uvarint(what); c.err != nil {
				return dst, c.err
			}
			buf = c.buf
		}
		if ref >= uint64(nSyms) {
			return dst, fmt.Errorf("%w: block: %s %d of %d symbols", ErrMalformed, what, ref, nSyms)
		}
		dst = append(dst, uint32(ref))
	}
	c.buf = buf
	return dst, nil
}
