package enricher

import (
	"sync"
	"time"

	"github.com/weirmetrics/weir/proto"
)

// steadyOutput is what the enricher remembers of the output it made of a
// BlockZstd payload: a target sends the same series scrape after scrape,
// and the output of the same input labels is the same as long as nothing
// it depended on changed. Then the output is its compressed labels with
// the new samples, and the labels are neither decompressed, joined nor
// hashed.
type steadyOutput struct {
	labelsSum uint64 // of the input, proto.BlockReader.LabelsSum
	labels    []byte // the output's labels part, proto.AppendBlockLabels
	// input is the labels part of the input (nil for block1+zstd), and
	// generation how many outputs before this one the churn path made
	// from its predecessor (see churned).
	input      []byte
	generation int
	from       []int32 // the input series kept, in order; nil when all were
	series     int     // in the output
	// read are the metadata keys the join looked up and change the last
	// change of the cluster's metadata it saw; nil and 0 for a cluster
	// without metadata.
	read   map[string]struct{}
	change uint64
	// hashes are the cardinality guard's hashes of the output series, all
	// of which it let through, and mark where it stood after.
	hashes []uint64
	mark   guardMark
	// What the join and the relabel rules counted, counted again on reuse,
	// and which input series named a pod not in the cache, a bit each.
	unknownPods    int
	relabelDropped int
	unknownAt      []uint64
	lastUse        time.Time
}

func (o *steadyOutput) size() int {
	n := len(o.labels) + len(o.input) + 4*len(o.from) + 8*(len(o.hashes)+len(o.unknownAt)) + 200
	for k := range o.read {
		n += len(k) + 32
	}
	return n
}

// steadyCache holds the last outputs of each target and chunk, within a
// bound on their total size; outputs unused for steadyStale are dropped.
type steadyCache struct {
	mu        sync.Mutex
	targets   map[steadyKey][]*steadyOutput // most recently used first
	bytes     int
	maxBytes  int
	lastSweep time.Time
}

const (
	// steadyCacheBytes bounds what a replica keeps: the output of the 1.35
	// cAdvisor capture (4,621 series) and its input's labels take 72 KiB
	// (BenchmarkMessage), so 256 MiB hold about 3,600 such targets.
	steadyCacheBytes = 256 << 20
	// steadyPerTarget is how many inputs of a target and chunk are
	// remembered: two, so that a target alternating between two sets of
	// series keeps both.
	steadyPerTarget = 2
	steadyStale     = 10 * time.Minute
)

// steadyKey names the messages of one target whose outputs may be reused
// for each other: the scrapes of a target, chunk by chunk.
type steadyKey struct {
	out   string // subject of the output
	chunk int    // proto.HeaderChunk
}

func newSteadyCache(maxBytes int) *steadyCache {
	return &steadyCache{targets: map[steadyKey][]*steadyOutput{}, maxBytes: maxBytes}
}

// take removes and returns the output of target made of input labels with
// this sum, if there is one: while a worker uses it, no other can.
func (c *steadyCache) take(target steadyKey, labelsSum uint64) *steadyOutput {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, o := range c.targets[target] {
		if o.labelsSum == labelsSum {
			return c.remove(target, i)
		}
	}
	return nil
}

// latest removes and returns the most recent output of target, if any,
// whatever its input labels.
func (c *steadyCache) latest(target steadyKey) *steadyOutput {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.targets[target]) == 0 {
		return nil
	}
	return c.remove(target, 0)
}

// remove removes and returns target's output i; c.mu is held.
func (c *steadyCache) remove(target steadyKey, i int) *steadyOutput {
	outs := c.targets[target]
	o := outs[i]
	if len(outs) == 1 {
		delete(c.targets, target)
	} else {
		c.targets[target] = append(outs[:i], outs[i+1:]...)
	}
	c.bytes -= o.size()
	return o
}

// put remembers o as target's most recent output, forgetting the target's
// oldest beyond steadyPerTarget and, once a minute, every stale one. An
// output that would take the cache over its bound is not kept.
func (c *steadyCache) put(target steadyKey, o *steadyOutput, now time.Time) {
	o.lastUse = now
	c.mu.Lock()
	defer c.mu.Unlock()
	if now.Sub(c.lastSweep) >= time.Minute {
		c.lastSweep = now
		for t, outs := range c.targets {
			if now.Sub(outs[0].lastUse) > steadyStale {
				for _, old := range outs {
					c.bytes -= old.size()
				}
				delete(c.targets, t)
			}
		}
	}
	outs := c.targets[target]
	if len(outs) == steadyPerTarget {
		c.bytes -= outs[len(outs)-1].size()
		outs = outs[:len(outs)-1]
	}
	if n := o.size(); c.bytes+n <= c.maxBytes {
		c.bytes += n
		outs = append([]*steadyOutput{o}, outs...)
	}
	if len(outs) == 0 {
		delete(c.targets, target)
		return
	}
	c.targets[target] = outs
}

// reuse writes the output of the payload w.reader holds from o, if nothing
// o depended on changed: the metadata its join read, the guard's memory of
// its series. It reports false when the message must take the slow path.
// A metadata change counts once its informer's handler ran, just after
// the store changed: until then, which is also how long a join may still
// have read the old object, the output is the one made before it.
func (e *Enricher) reuse(w *worker, o *steadyOutput, cm *clusterMeta, guardTarget string) (proto.Chunk, bool) {
	if cm != nil {
		change, ok := cm.changes.unchangedSince(o.change, o.read)
		if !ok {
			return proto.Chunk{}, false
		}
		o.change = change
	}
	if e.guard != nil {
		adm := e.guard.begin(guardTarget)
		mark, ok := adm.seenAgain(o.hashes, o.mark)
		adm.end()
		if !ok {
			return proto.Chunk{}, false
		}
		o.mark = mark
	}
	c, ok := e.assemble(w, o)
	if !ok {
		return c, false
	}
	e.metrics.reused.Inc()
	e.metrics.podUnknown.Add(float64(o.unknownPods))
	if o.relabelDropped > 0 {
		e.metrics.seriesDropped.WithLabelValues(reasonRelabel).Add(float64(o.relabelDropped))
	}
	return c, true
}

// assemble writes the payload of o's labels with the samples of w.reader;
// it reports false when it outgrew a message and must be split.
func (e *Enricher) assemble(w *worker, o *steadyOutput) (proto.Chunk, bool) {
	payload, samples, err := proto.AppendBlock(w.payload[:0], o.labels, &w.reader, o.from)
	if err != nil || len(payload) > e.maxChunk {
		return proto.Chunk{}, false
	}
	w.payload = payload
	// Its own allocation: the publish may hold it longer than the worker
	// keeps its buffer.
	c := proto.Chunk{Payload: make([]byte, len(payload)), Samples: samples}
	copy(c.Payload, payload)
	return c, true
}

// bitsOf returns a set of n bits with those at the indices in set on.
func bitsOf(n int, set []int32) []uint64 {
	if len(set) == 0 {
		return nil
	}
	bits := make([]uint64, (n+63)/64)
	for _, i := range set {
		bits[i/64] |= 1 << (i % 64)
	}
	return bits
}

// bitOn reports whether bit i of bits is on; bits may be short of i.
func bitOn(bits []uint64, i int32) bool {
	return int(i/64) < len(bits) && bits[i/64]&(1<<(i%64)) != 0
}
