package sink

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/proto"
)

// A target sends the same series scrape after scrape: the sink keeps, per
// target, the labels of its last block1+zstd payload in the form requests
// need them, and a payload whose proto.BlockReader.LabelsSum is the same
// is sent without reading its labels at all.
const (
	// maxCachedSeries bounds the series the label caches of one sink hold,
	// 50 to 100 bytes each (Kubernetes captures): about 100 MiB at most.
	// A target that does not fit has its labels read from every payload.
	maxCachedSeries = 1 << 20
	// sweepEvery is how often a shard drops the labels of the targets that
	// sent nothing since the last sweep: stopped, or moved to another shard.
	sweepEvery = 2 * time.Minute
)

// targetKey identifies the messages of one target: each chunk of a scrape
// is published on the target's subject with its index in Weir-Chunk.
type targetKey struct {
	subject string
	chunk   int
}

// seriesLabels are the labels of every series of a payload, as refs into
// a symbol table without duplicates, symbol 0 being "" as in remote write
// 2.0: a request maps them to its own table without hashing a string.
type seriesLabels struct {
	sum     uint64   // LabelsSum of the payload
	symbols []string // substrings of the payload's one symbol string
	refs    []uint32 // name and value of each label, into symbols
	offs    []uint32 // where the refs of each series start, and the end
	// sizes1 is the size of the labels of each series marshalled for
	// remote write 1.0: the Labels field of a TimeSeries.
	sizes1  []uint32
	used    bool // since the last sweep
	charged int  // what the entry took from its cache's budget
}

func (l *seriesLabels) len() int { return len(l.offs) - 1 }

// fill reads the labels of every series of r, whose LabelsSum is sum.
// They are checked as proto.BlockZstd.Decode checks them, with the same
// errors.
func (l *seriesLabels) fill(r *proto.BlockReader, sum uint64, scratch *labelScratch) error {
	l.sum = sum
	l.symbols = append(l.symbols[:0], "")
	l.refs, l.offs = l.refs[:0], append(l.offs[:0], 0)
	l.sizes1 = l.sizes1[:0]
	clear(scratch.refs)
	scratch.refs[""] = 0
	symbol := func(s string) uint32 {
		ref, ok := scratch.refs[s]
		if !ok {
			ref = uint32(len(l.symbols))
			l.symbols = append(l.symbols, s)
			scratch.refs[s] = ref
		}
		return ref
	}
	for i := range r.Len() {
		var err error
		if scratch.labels, err = r.AppendLabels(scratch.labels[:0], i); err != nil {
			return err
		}
		size := 0
		for _, lb := range scratch.labels {
			l.refs = append(l.refs, symbol(lb.Name), symbol(lb.Value))
			n := stringFieldSize(lb.Name) + stringFieldSize(lb.Value)
			size += 1 + uvarintSize(uint64(n)) + n
		}
		l.offs = append(l.offs, uint32(len(l.refs)))
		l.sizes1 = append(l.sizes1, uint32(size))
	}
	clear(scratch.labels) // the payload's strings
	return nil
}

// appendV1 appends the labels of series i marshalled for remote write 1.0.
func (l *seriesLabels) appendV1(dst []byte, i int32) []byte {
	for j := l.offs[i]; j < l.offs[i+1]; j += 2 {
		name, value := l.symbols[l.refs[j]], l.symbols[l.refs[j+1]]
		dst = append(dst, 0x0a) // TimeSeries.labels
		dst = binary.AppendUvarint(dst, uint64(stringFieldSize(name)+stringFieldSize(value)))
		dst = appendStringField(dst, 0x0a, name)  // Label.name
		dst = appendStringField(dst, 0x12, value) // Label.value
	}
	return dst
}

// stringFieldSize and appendStringField write a string field as gogo
// protobuf does: not at all when empty.
func stringFieldSize(s string) int {
	if s == "" {
		return 0
	}
	return 1 + uvarintSize(uint64(len(s))) + len(s)
}

func appendStringField(dst []byte, tag byte, s string) []byte {
	if s == "" {
		return dst
	}
	dst = append(dst, tag)
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func uvarintSize(x uint64) int { return (bits.Len64(x|1) + 6) / 7 }

// labelScratch is what filling seriesLabels reuses from one payload to the next.
type labelScratch struct {
	refs   map[string]uint32
	labels []prompb.Label
}

// labelCache is a shard's seriesLabels by target. Its targets are those
// hashed to the shard, so it needs no lock; the budget of cached series is
// shared by the shards of a pool.
type labelCache struct {
	targets   map[targetKey]*seriesLabels
	budget    *atomic.Int64 // series the caches of the pool may still add
	uncached  seriesLabels  // a target the budget leaves out
	scratch   labelScratch
	lastSweep time.Time
}

func newLabelCache(budget *atomic.Int64) labelCache {
	return labelCache{
		targets: map[targetKey]*seriesLabels{},
		budget:  budget,
		scratch: labelScratch{refs: map[string]uint32{}},
	}
}

// labels returns the labels of the series of r, the payload of target
// key, valid until the next call.
func (c *labelCache) labels(key targetKey, r *proto.BlockReader, now time.Time) (*seriesLabels, error) {
	c.sweep(now)
	sum := r.LabelsSum()
	l := c.targets[key]
	if l != nil {
		l.used = true
		if l.sum == sum {
			return l, nil
		}
		// Other series, or fewer: charge the budget the difference.
		if c.reserve(r.Len() + 1 - l.charged) {
			l.charged = r.Len() + 1
		} else {
			c.forget(key, l)
			l = nil
		}
	} else if c.reserve(r.Len() + 1) { // +1: the entry itself
		l = &seriesLabels{used: true, charged: r.Len() + 1}
		c.targets[key] = l
	}
	if l == nil {
		l = &c.uncached
	}
	if err := l.fill(r, sum, &c.scratch); err != nil {
		if l != &c.uncached {
			c.forget(key, l)
		}
		return nil, err
	}
	return l, nil
}

// reserve takes n series from the budget, or gives back -n, and reports
// whether there was room.
func (c *labelCache) reserve(n int) bool {
	if c.budget.Add(-int64(n)) < 0 {
		c.budget.Add(int64(n))
		return false
	}
	return true
}

func (c *labelCache) forget(key targetKey, l *seriesLabels) {
	c.budget.Add(int64(l.charged))
	delete(c.targets, key)
}

// sweep drops, every sweepEvery, the targets that sent nothing since the
// last sweep.
func (c *labelCache) sweep(now time.Time) {
	if now.Sub(c.lastSweep) < sweepEvery {
		return
	}
	c.lastSweep = now
	for key, l := range c.targets {
		if !l.used {
			c.forget(key, l)
		}
		l.used = false
	}
}
