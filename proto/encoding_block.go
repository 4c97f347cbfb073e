package proto

import (
	"encoding/binary"
	"fmt"
	"math"
	"sync"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/prometheus/prompb"
)

// BlockZstd is Weir's own payload: a columnar block compressed with zstd.
// A scrape repeats a few thousand label strings over tens of thousands of
// series, and most of its samples share one timestamp, so the block stores
// each unique string once and every column apart, where zstd finds the
// repetition. A block2+zstd payload is three zstd frames:
//
//	skippable frame  magic 0x184D2A50, length 8, then the length in bytes
//	                 of the labels frame and the series count, all
//	                 little-endian uint32
//	labels frame     the label columns:
//	  version        byte (2)
//	  symbols        uvarint count, count uvarint lengths, then the bytes
//	  series         uvarint count
//	  label counts   uvarint per series
//	  label names    uvarint symbol ref per label
//	  label values   uvarint symbol ref per label
//	samples frame    the sample columns:
//	  series         uvarint count, as in the labels frame
//	  sample count   uvarint per series
//	  timestamps     varint of the first, then zigzag varint delta to the previous
//	  values         per sample the 8 bytes of its float64 XOR the previous one,
//	                 written byte plane by byte plane (all first bytes, then
//	                 all second bytes...), so zstd sees long runs of equal bytes
//
// The labels are a frame of their own because a target sends the same
// series scrape after scrape: a sender compresses them once and reuses the
// frame, a stage tells them from the last ones by the frame's bytes without
// decompressing it, and a stage that keeps every series as it is passes the
// samples frame on unchanged. Three quarters of the compression is the
// labels (BENCHMARKS.md, "Wire encoding").
//
// block1+zstd, which older collectors wrote and the streams may still hold,
// is one frame of the version 1 label columns followed directly by the
// sample columns without their series count. Decode reads both.
//
// Each payload is self-contained: no dictionary or state spans messages, so
// any replica can decode any message after a restart.
type BlockZstd struct{}

var _ Encoding = BlockZstd{}

const (
	// blockVersion is the first byte of the labels frame of block2+zstd.
	blockVersion = 2
	// block1Version is the first byte of a block1+zstd block.
	block1Version = 1

	// skippableMagic starts the frame that gives the labels frame's length
	// and the series count: zstd itself skips it, so `zstd -d`
	// decompresses a payload whole.
	skippableMagic = 0x184D2A50
	// splitHeaderLen is the skippable frame: magic, its length, the labels
	// frame's length, the series count.
	splitHeaderLen = 16
)

// maxBlockRatio bounds how much larger than its payload a block may be.
// Every series of a scrape differs from the others in at least one label
// value and holds an 8-byte value, so real blocks compress about 5 to 20
// times; a payload claiming more is refused before it is decompressed.
const maxBlockRatio = 1 << 10

// Name implements Encoding: what Append writes.
func (BlockZstd) Name() string { return "block2+zstd" }

// block1Name is the encoding of the payloads older collectors wrote,
// which Decode reads as well.
const block1Name = "block1+zstd"

// encoders is how many zstd encoders the process keeps: see SetEncoders.
var encoders = 2

// SetEncoders sets how many blocks the process can compress at once, each
// encoder with its own tables and history (about 650 KiB). It takes effect
// if called before the first encode. A collector, whose loops encode a
// scrape every few seconds, keeps one; the default is two.
func SetEncoders(n int) { encoders = max(n, 1) }

var (
	// zstdEncoder and zstdDecoder are safe for concurrent EncodeAll and
	// DecodeAll and keep their state in internal pools. The encoder is
	// made on first use, with the count SetEncoders set.
	zstdEncoder = sync.OnceValue(mustZstdEncoder)
	zstdDecoder = mustZstdDecoder()
	blockPool   = sync.Pool{New: func() any { return new(blockState) }}
	readerPool  = sync.Pool{New: func() any { return new(BlockReader) }}
)

func mustZstdEncoder() *zstd.Encoder {
	// A 256 KiB window compresses the blocks of BenchmarkEncoding as well
	// as 1 MiB (the repetition is within each column) with a 384 KiB
	// history instead of 1.1 MiB. However many goroutines encode at once,
	// only `encoders` sets of tables exist. SpeedFastest was chosen by
	// BenchmarkEncoding: 5.5 bytes/sample against 5.1 for SpeedDefault,
	// at about 20% less CPU.
	e, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(encoders),
		zstd.WithWindowSize(1<<18),
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

// blockState is reused between calls of Append through blockPool.
type blockState struct {
	raw     []byte
	refs    map[string]uint32
	symbols []string
	counts  []uint32 // labels per series
	// countsAt is where writeLabels wrote the counts column in raw.
	countsAt int
	names    []uint32
	values   []uint32
	floats   []uint64
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
	labels := s.appendLabels(s.raw[:0], b)
	dst, err := appendLabelsFrame(dst, labels, len(b.Series))
	s.raw = labels
	if err != nil {
		return dst, err
	}
	return s.appendSamples(dst, b, len(labels))
}

// appendLabels appends the label columns of b to raw: the uncompressed
// labels frame.
func (s *blockState) appendLabels(raw []byte, b *Batch) []byte {
	s.startLabels()
	var prev []prompb.Label
	for i := range b.Series {
		ls := b.Series[i].Labels
		s.addLabels(ls, prev)
		prev = ls
	}
	return s.writeLabels(raw)
}

// appendLabelsFrame appends to dst the start of a payload whose label
// columns, of n series, are labels: the skippable frame and the labels
// frame. A sender of the same series keeps it and appends only samples
// frames to it.
func appendLabelsFrame(dst, labels []byte, n int) ([]byte, error) {
	if len(labels) > MaxDecodedBytes {
		return dst, fmt.Errorf("%w: labels of %d bytes, limit %d", ErrTooLarge, len(labels), MaxDecodedBytes)
	}
	at := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, skippableMagic)
	dst = binary.LittleEndian.AppendUint32(dst, splitHeaderLen-8)
	dst = binary.LittleEndian.AppendUint32(dst, 0) // the length, known below
	dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
	dst = zstdEncoder().EncodeAll(labels, dst)
	binary.LittleEndian.PutUint32(dst[at+8:], uint32(len(dst)-at-splitHeaderLen))
	return dst, nil
}

// startLabels empties the label columns for a new block.
func (s *blockState) startLabels() {
	if s.refs == nil {
		s.refs = make(map[string]uint32)
	}
	clear(s.refs)
	s.symbols, s.counts, s.names, s.values = s.symbols[:0], s.counts[:0], s.names[:0], s.values[:0]
}

// addLabels adds the labels of the next series to the label columns; prev
// are those of the series before it.
func (s *blockState) addLabels(ls, prev []prompb.Label) {
	// Neighbouring series mostly share label names and many values (same
	// metric, same pod): reusing the previous series' ref at the same
	// position skips most map lookups.
	prevRefs := len(s.names) - len(prev)
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
	s.counts = append(s.counts, uint32(len(ls)))
}

// writeLabels appends the label columns added since startLabels to raw.
func (s *blockState) writeLabels(raw []byte) []byte {
	raw = append(raw, blockVersion)
	raw = binary.AppendUvarint(raw, uint64(len(s.symbols)))
	for _, sym := range s.symbols {
		raw = binary.AppendUvarint(raw, uint64(len(sym)))
	}
	for _, sym := range s.symbols {
		raw = append(raw, sym...)
	}
	raw = binary.AppendUvarint(raw, uint64(len(s.counts)))
	s.countsAt = len(raw)
	for _, n := range s.counts {
		raw = binary.AppendUvarint(raw, uint64(n))
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

// appendSamples appends the samples frame of b to dst. labelsLen is the
// size of the uncompressed labels frame, which counts towards the limit.
func (s *blockState) appendSamples(dst []byte, b *Batch, labelsLen int) ([]byte, error) {
	w := s.sampleWriter(len(b.Series))
	for i := range b.Series {
		w.raw = binary.AppendUvarint(w.raw, uint64(len(b.Series[i].Samples)))
	}
	for i := range b.Series {
		for _, smp := range b.Series[i].Samples {
			w.add(smp.Timestamp, smp.Value)
		}
	}
	return s.compress(dst, w, labelsLen)
}

// sampleWriter writes the columns of a samples frame: the caller appends
// the sample counts to raw, then adds the samples, and compress writes the
// values byte plane by byte plane.
type sampleWriter struct {
	raw    []byte
	floats []uint64
	prevTS int64
	prevV  uint64
	first  bool
}

// sampleWriter starts a samples frame of n series in the state's buffers.
func (s *blockState) sampleWriter(n int) sampleWriter {
	return sampleWriter{raw: binary.AppendUvarint(s.raw[:0], uint64(n)), floats: s.floats[:0], first: true}
}

func (w *sampleWriter) add(ts int64, v float64) {
	if w.first {
		w.raw = binary.AppendVarint(w.raw, ts)
		w.first = false
	} else {
		w.raw = binary.AppendVarint(w.raw, ts-w.prevTS)
	}
	w.prevTS = ts
	bits := math.Float64bits(v)
	w.floats = append(w.floats, bits^w.prevV)
	w.prevV = bits
}

// compress appends the value planes to the samples w wrote, keeps its
// buffers for the next block and appends the compressed frame to dst.
func (s *blockState) compress(dst []byte, w sampleWriter, labelsLen int) ([]byte, error) {
	raw := w.raw
	for shift := 56; shift >= 0; shift -= 8 {
		for _, x := range w.floats {
			raw = append(raw, byte(x>>shift))
		}
	}
	s.raw, s.floats = raw, w.floats
	if n := labelsLen + len(raw); n > MaxDecodedBytes {
		return dst, fmt.Errorf("%w: block of %d bytes, limit %d", ErrTooLarge, n, MaxDecodedBytes)
	}
	return zstdEncoder().EncodeAll(raw, dst), nil
}

// Decode implements Encoding. The label strings of the decoded series are
// shared: one string per unique symbol of the message.
func (BlockZstd) Decode(src []byte, b *Batch) error {
	b.Reset()
	r := readerPool.Get().(*BlockReader)
	defer readerPool.Put(r)
	defer r.forget() // let the strings go with the batch
	if err := r.Reset(src); err != nil {
		return err
	}
	return r.AppendBatch(b)
}
