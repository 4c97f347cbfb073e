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
// target, the labels of its last BlockZstd payload in the form requests
// need them, and a payload whose proto.BlockReader.LabelsSum is the same
// is sent without reading its labels at all.
const (
	// maxCachedBytes is the default Config.LabelCacheSize, which the tests
	// use too.
	maxCachedBytes = 128 << 20
	// sweepEvery is how often a shard drops the labels of the targets that
	// sent nothing since the last sweep: stopped, or read by another replica
	// since partitions moved.
	sweepEvery = 2 * time.Minute
)

// targetKey identifies the messages of one target: each chunk of a scrape
// is published on the target's subject with its index in Weir-Chunk.
type targetKey struct {
	subject string
	chunk   int
}

// seriesLabels are the labels of every series of a payload, as refs into
// its symbols, which a request maps to its own table without hashing a
// string.
type seriesLabels struct {
	sum  uint64 // LabelsSum of the payload
	seen proto.SeenLabels
	// sizes1 is the size of the labels of each series marshalled for
	// remote write 1.0: the Labels field of a TimeSeries. A sink that
	// speaks 1.0 keeps them marshalled too, series i's from v1Offs[i] to
	// v1Offs[i+1] in v1, which it then copies instead of writing them.
	sizes1  []uint32
	v1      []byte
	v1Offs  []uint32
	used    bool // since the last sweep
	charged int  // bytes taken from the budget
}

func (l *seriesLabels) len() int { return l.seen.Len() }

// fill reads the labels of every series of r, whose LabelsSum is sum,
// and marshals them for remote write 1.0 if marshal1. The series l held
// before, the same target's last payload, are not read again: when pods
// come and go, only theirs are. New series are checked as
// proto.BlockZstd.Decode checks them, with the same errors.
func (l *seriesLabels) fill(r *proto.BlockReader, sum uint64, marshal1 bool, scratch *labelScratch) error {
	matched, err := r.Match(&l.seen, scratch.matched[:0])
	scratch.matched = matched
	if err != nil {
		return err
	}
	reuse := !marshal1 || l.marshalled1()
	sizes, v1, v1Offs := scratch.sizes1[:0], scratch.v1[:0], scratch.v1Offs[:0]
	if marshal1 {
		v1Offs = append(v1Offs, 0)
	}
	for i, k := range matched {
		if k >= 0 && reuse {
			sizes = append(sizes, l.sizes1[k])
			if marshal1 {
				v1 = append(v1, l.v1[l.v1Offs[k]:l.v1Offs[k+1]]...)
			}
		} else {
			if scratch.labels, err = r.AppendLabels(scratch.labels[:0], i); err != nil {
				return err
			}
			sizes = append(sizes, labelsSize1(scratch.labels))
			if marshal1 {
				v1 = appendV1(v1, scratch.labels)
			}
		}
		if marshal1 {
			v1Offs = append(v1Offs, uint32(len(v1)))
		}
	}
	clear(scratch.labels) // the payload's strings
	if err := r.Keep(&l.seen); err != nil {
		return err
	}
	l.sum = sum
	// Copied, not swapped: a target keeps buffers of its own size, which
	// a swap would hand from the largest target to every other.
	l.sizes1 = append(l.sizes1[:0], sizes...)
	l.v1 = append(l.v1[:0], v1...)
	l.v1Offs = append(l.v1Offs[:0], v1Offs...)
	scratch.sizes1, scratch.v1, scratch.v1Offs = sizes, v1, v1Offs
	return nil
}

// marshalled1 reports whether the labels are kept marshalled for 1.0.
func (l *seriesLabels) marshalled1() bool { return len(l.v1Offs) > 0 }

// bytes is about the memory l holds.
func (l *seriesLabels) bytes() int {
	return 200 + l.seen.Bytes() + 4*(cap(l.sizes1)+cap(l.v1Offs)) + cap(l.v1)
}

// appendV1 appends the labels of series i marshalled for remote write 1.0.
func (l *seriesLabels) appendV1(dst []byte, i int32) []byte {
	names, values := l.seen.Series(int(i))
	syms := l.seen.Symbols()
	for j := range names {
		dst = appendLabelV1(dst, syms[names[j]], syms[values[j]])
	}
	return dst
}

// appendV1 appends labels marshalled for remote write 1.0.
func appendV1(dst []byte, labels []prompb.Label) []byte {
	for _, lb := range labels {
		dst = appendLabelV1(dst, lb.Name, lb.Value)
	}
	return dst
}

func appendLabelV1(dst []byte, name, value string) []byte {
	dst = append(dst, 0x0a) // TimeSeries.labels
	dst = binary.AppendUvarint(dst, uint64(stringFieldSize(name)+stringFieldSize(value)))
	dst = appendStringField(dst, 0x0a, name)   // Label.name
	return appendStringField(dst, 0x12, value) // Label.value
}

// labelsSize1 is the size of labels marshalled for remote write 1.0.
func labelsSize1(labels []prompb.Label) uint32 {
	size := 0
	for _, lb := range labels {
		n := stringFieldSize(lb.Name) + stringFieldSize(lb.Value)
		size += 1 + uvarintSize(uint64(n)) + n
	}
	return uint32(size)
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

// labelScratch is what filling seriesLabels reuses from one payload to
// the next: the columns are built here, then copied.
type labelScratch struct {
	matched []int32
	labels  []prompb.Label
	sizes1  []uint32
	v1      []byte
	v1Offs  []uint32
}

// labelCache is a shard's seriesLabels by target. Its targets are those
// hashed to the shard, so it needs no lock; the budget of bytes is shared
// by the shards of a pool.
type labelCache struct {
	targets   map[targetKey]*seriesLabels
	budget    *atomic.Int64 // bytes the caches of the pool may still take
	uncached  seriesLabels  // a target the budget leaves out
	scratch   labelScratch
	lastSweep time.Time
}

func newLabelCache(budget *atomic.Int64) labelCache {
	return labelCache{
		targets: map[targetKey]*seriesLabels{},
		budget:  budget,
	}
}

// labels returns the labels of the series of r, the payload of target
// key, for requests in protocol p, valid until the next call.
func (c *labelCache) labels(key targetKey, r *proto.BlockReader, p protocol, now time.Time) (*seriesLabels, error) {
	c.sweep(now)
	sum := r.LabelsSum()
	marshal1 := p == protoV1
	l := c.targets[key]
	if l != nil {
		l.used = true
		if l.sum == sum && l.marshalled1() == marshal1 {
			return l, nil
		}
	} else {
		// Filled where it costs no allocation, kept if the budget allows.
		l = &c.uncached
	}
	if err := l.fill(r, sum, marshal1, &c.scratch); err != nil {
		if l != &c.uncached {
			c.forget(key, l)
		}
		return nil, err
	}
	size := l.bytes()
	switch {
	case c.reserve(size - l.charged):
		if l == &c.uncached {
			l = &seriesLabels{}
			*l, c.uncached = c.uncached, seriesLabels{}
			c.targets[key] = l
		}
		l.charged, l.used = size, true
	case l != &c.uncached:
		c.forget(key, l)
		c.uncached = *l
		c.uncached.charged = 0
		l = &c.uncached
	}
	return l, nil
}

// reserve takes n bytes from the budget, or gives back -n, and reports
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

// forgetMoved drops the targets that no longer go to this cache's shard,
// shard of shards.
func (c *labelCache) forgetMoved(shard, shards int) {
	for key, l := range c.targets {
		if shardFor(key.subject, shards) != shard {
			c.forget(key, l)
		}
	}
}

// dropAll empties the cache.
func (c *labelCache) dropAll() {
	for key, l := range c.targets {
		c.forget(key, l)
	}
	c.uncached = seriesLabels{}
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
