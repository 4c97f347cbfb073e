package proto

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/prometheus/prometheus/prompb"
)

// SeenLabels are the label columns of a payload a stage read, kept until
// the same target's next payload. When pods come and go, a target's next
// payload holds mostly the same series with a few others: Match tells
// which of its series were in the kept payload, so that the stage reuses
// what it made of them and reads the labels of the new ones only. The
// symbols are the payload's strings, shared with the batches and series
// read from it.
type SeenLabels struct {
	symbols       []string
	starts        []uint32 // where series k's refs start in names and values, and the end
	names, values []uint32
}

// Len is the number of series; 0 before the first Keep.
func (s *SeenLabels) Len() int { return max(len(s.starts)-1, 0) }

// Symbols are the strings the refs of Series index.
func (s *SeenLabels) Symbols() []string { return s.symbols }

// Series returns the symbol refs of the label names and values of series k.
func (s *SeenLabels) Series(k int) (names, values []uint32) {
	a, b := s.starts[k], s.starts[k+1]
	return s.names[a:b:b], s.values[a:b:b]
}

// Bytes is about the memory s holds.
func (s *SeenLabels) Bytes() int {
	n := 4 * (cap(s.starts) + cap(s.names) + cap(s.values))
	for _, sym := range s.symbols {
		n += 16 + len(sym)
	}
	return n
}

// Keep makes s the label columns of the payload r holds. Errors are those
// of a malformed label column, and leave s empty.
func (r *BlockReader) Keep(s *SeenLabels) error {
	s.symbols, s.starts = s.symbols[:0], s.starts[:0]
	s.names, s.values = s.names[:0], s.values[:0]
	if err := r.index(); err != nil {
		return err
	}
	s.symbols = append(s.symbols, r.syms...)
	s.starts = append(s.starts, r.labelOffs...)
	s.names = append(s.names, r.nameRefs...)
	s.values = append(s.values, r.valueRefs...)
	return nil
}

// noRef marks a symbol of the payload that the seen one does not hold.
const noRef = math.MaxUint32

// Match appends to dst, for each series of the payload r holds, the index
// of the series of seen with the same labels, or -1 when seen has none.
// It compares symbol refs, not strings: each symbol of the payload is
// looked up once. Series are expected in the same order, some removed and
// some added; others are found by a hash of their refs. Errors are those
// of a malformed label column.
func (r *BlockReader) Match(seen *SeenLabels, dst []int32) ([]int32, error) {
	if err := r.index(); err != nil {
		return dst, err
	}
	if seen.Len() == 0 {
		for range r.nSeries {
			dst = append(dst, -1)
		}
		return dst, nil
	}
	m := &r.match
	if m.bySymbol == nil {
		m.bySymbol, m.bySeries = map[string]uint32{}, map[uint64]int32{}
	}
	clear(m.bySymbol)
	clear(m.bySeries)
	for ref, sym := range seen.symbols {
		m.bySymbol[sym] = uint32(ref)
	}
	trans := m.translated[:0]
	for _, sym := range r.syms {
		ref, ok := m.bySymbol[sym]
		if !ok {
			ref = noRef
		}
		trans = append(trans, ref)
	}
	m.translated = trans
	next := 0 // the seen series expected next
	for i := range r.nSeries {
		a, b := r.labelOffs[i], r.labelOffs[i+1]
		names, values := r.nameRefs[a:b], r.valueRefs[a:b]
		k := seen.lookahead(next, trans, names, values)
		if k < 0 {
			if h, ok := translatedHash(trans, names, values); ok {
				if len(m.bySeries) == 0 {
					m.indexSeries(seen)
				}
				if j, found := m.bySeries[h]; found && seen.same(int(j), trans, names, values) {
					k = j
				}
			} // else a symbol seen does not hold: a new series
		}
		if k >= 0 {
			next = int(k) + 1
		}
		dst = append(dst, k)
	}
	return dst, nil
}

// lookahead is how many seen series from the one expected Match compares
// a series with before it looks for it by hash: those of a pod that went
// away, a few in each metric family.
const lookahead = 8

// lookahead returns the first of the lookahead seen series from next with
// the labels of the refs after trans, or -1.
func (s *SeenLabels) lookahead(next int, trans, names, values []uint32) int32 {
	for k := next; k < min(next+lookahead, s.Len()); k++ {
		if s.same(k, trans, names, values) {
			return int32(k)
		}
	}
	return -1
}

// same reports whether seen's series k has the labels whose refs, in the
// payload's symbols, are names and values.
func (s *SeenLabels) same(k int, trans, names, values []uint32) bool {
	a, b := s.starts[k], s.starts[k+1]
	if int(b-a) != len(names) {
		return false
	}
	for j := range names {
		if s.names[int(a)+j] != trans[names[j]] || s.values[int(a)+j] != trans[values[j]] {
			return false
		}
	}
	return true
}

// indexSeries hashes the refs of every series; of series with the same
// hash the first is found, and the others, which same tells apart, are
// taken for new.
func (m *matchScratch) indexSeries(s *SeenLabels) {
	for k := s.Len() - 1; k >= 0; k-- {
		names, values := s.Series(k)
		m.bySeries[refsHash(names, values)] = int32(k)
	}
}

// matchScratch is what Match reuses from one payload to the next: the
// seen ref of each symbol of the payload, and the seen symbols and series
// by string and by hash of their refs.
type matchScratch struct {
	translated []uint32
	bySymbol   map[string]uint32
	bySeries   map[uint64]int32
}

// translatedHash is refsHash of refs into the payload's symbols after
// trans; ok is false when one of them has no translation.
func translatedHash(trans, names, values []uint32) (h uint64, ok bool) {
	h = hashSeed
	for j := range names {
		n, v := trans[names[j]], trans[values[j]]
		if n == noRef || v == noRef {
			return 0, false
		}
		h = mixRefs(h, n, v)
	}
	return h, true
}

func refsHash(names, values []uint32) uint64 {
	h := uint64(hashSeed)
	for j := range names {
		h = mixRefs(h, names[j], values[j])
	}
	return h
}

const hashSeed = 0x9e3779b97f4a7c15

// mixRefs folds a label's two refs into h, with a multiply and a rotate
// as wyhash and xxhash mix: refs are small integers, which a sum or a
// xor alone would collide.
func mixRefs(h uint64, name, value uint32) uint64 {
	x := (uint64(name)<<32 | uint64(value)) * 0xbf58476d1ce4e5b9
	h ^= x ^ x>>31
	h *= 0x94d049bb133111eb
	return h<<27 | h>>37
}

// ResetLabels makes r read the labels part of a block2+zstd payload alone
// (LabelsPart, or AppendBlockLabels' result), as a payload of series
// without samples: a stage keeps the labels part of a target's last
// payload, compressed, and reads it again when the target's series change.
func (r *BlockReader) ResetLabels(part []byte) error {
	r.forget()
	n, ok := BlockSeries(part)
	if !ok || uint64(binary.LittleEndian.Uint32(part[8:])) != uint64(len(part)-splitHeaderLen) {
		r.nSeries, r.labelsRead, r.labelsErr = 0, true, fmt.Errorf("%w: block: not a labels part", ErrMalformed)
		return r.labelsErr
	}
	r.raw, r.ts, r.vs = r.raw[:0], r.ts[:0], r.vs[:0]
	r.sampleOffs = append(r.sampleOffs[:0], make([]uint32, n+1)...)
	r.nSeries, r.labelsPart = n, part
	return nil
}

// LabelsBuilder builds the labels part of a payload series by series, some
// given by their labels and some taken from a SeenLabels by index, whose
// refs it renumbers without reading their strings: the columns are those
// AppendBlockLabels writes of the same series.
type LabelsBuilder struct {
	s          blockState
	seen       *SeenLabels
	renumbered []uint32 // new ref+1 by seen ref; 0 before it is needed
	prev       []prompb.Label
}

// Reset starts a labels part whose series AddSeen takes from seen.
func (b *LabelsBuilder) Reset(seen *SeenLabels) {
	b.s.startLabels()
	b.seen = seen
	b.renumbered = append(b.renumbered[:0], make([]uint32, len(seen.symbols))...)
	b.prev = nil
}

// Add adds the next series, of labels ls, sorted by name. The builder
// holds ls until AppendPart.
func (b *LabelsBuilder) Add(ls []prompb.Label) {
	b.s.addLabels(ls, b.prev)
	b.prev = ls
}

// AddSeen adds the next series: series k of the SeenLabels of Reset.
func (b *LabelsBuilder) AddSeen(k int) {
	names, values := b.seen.Series(k)
	for j := range names {
		b.s.names = append(b.s.names, b.renumber(names[j]))
		b.s.values = append(b.s.values, b.renumber(values[j]))
	}
	b.s.counts = append(b.s.counts, uint32(len(names)))
	b.prev = nil // its labels are not at hand
}

func (b *LabelsBuilder) renumber(ref uint32) uint32 {
	if r := b.renumbered[ref]; r != 0 {
		return r - 1
	}
	r := b.s.symbol(b.seen.symbols[ref])
	b.renumbered[ref] = r + 1
	return r
}

// AppendPart appends the labels part of the series added since Reset to
// dst, and lets go of their strings.
func (b *LabelsBuilder) AppendPart(dst []byte) ([]byte, error) {
	b.s.raw = b.s.writeLabels(b.s.raw[:0])
	n := len(b.s.counts)
	b.seen, b.prev = nil, nil
	return appendLabelsFrame(dst, b.s.raw, n)
}
