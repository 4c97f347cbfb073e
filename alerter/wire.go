package alerter

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/weirmetrics/weir/proto"
)

// The fast path reads a prw1+snappy payload without decoding it into
// prompb structs: most series of a scrape are selected by no rule, and for
// those only the metric name is read, with no allocation. Field numbers are
// those of prompb.WriteRequest, TimeSeries, Label and Sample.
const (
	fieldTimeseries = 1
	fieldLabels     = 1
	fieldSamples    = 2
	fieldName       = 1
	fieldValue      = 2
	fieldSampleVal  = 1
	fieldSampleTS   = 2
)

var errWire = errors.New("malformed write request")

// snappyDecode decodes a prw1+snappy payload into buf, bounded like
// proto.SnappyPRW1.
func snappyDecode(buf, src []byte) ([]byte, error) {
	n, err := snappy.DecodedLen(src)
	if err != nil {
		return buf, fmt.Errorf("%w: snappy: %v", proto.ErrMalformed, err)
	}
	if n > proto.MaxDecodedBytes {
		return buf, fmt.Errorf("%w: decodes to %d bytes, limit %d", proto.ErrTooLarge, n, proto.MaxDecodedBytes)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	out, err := snappy.Decode(buf[:n], src)
	if err != nil {
		return buf, fmt.Errorf("%w: snappy: %v", proto.ErrMalformed, err)
	}
	return out, nil
}

// decodeBuffers are reused by one consumer from message to message.
type decodeBuffers struct {
	raw   []byte
	block proto.BlockReader
	batch proto.Batch
}

// ingestPayload adds the selected samples of a payload in the named
// encoding. Of the series of the metric names no rule selects, most of a
// scrape, neither encoding builds labels or samples: prw1+snappy is read
// from its protobuf bytes, BlockZstd series by series.
func (s *Store) ingestPayload(t Target, encoding string, payload []byte, bufs *decodeBuffers) (int, error) {
	if encoding == (proto.SnappyPRW1{}).Name() {
		raw, err := snappyDecode(bufs.raw, payload)
		if err != nil {
			return 0, err
		}
		bufs.raw = raw[:0]
		return s.IngestWire(t, raw)
	}
	enc, err := proto.EncodingByName(encoding)
	if err != nil {
		return 0, err
	}
	if _, ok := enc.(proto.BlockZstd); ok {
		if err := bufs.block.Reset(payload); err != nil {
			return 0, err
		}
		return s.ingestBlock(t, &bufs.block)
	}
	// An encoding without a fast path is decoded whole.
	if err := enc.Decode(payload, &bufs.batch); err != nil {
		return 0, err
	}
	return s.Ingest(t.Cluster, t.Node, bufs.batch.Series), nil
}

// ingestBlock adds the selected samples of the BlockZstd payload r holds.
// A target mostly sends the same series as last time: then the labels are
// not read at all, and the samples go to the series found last time.
func (s *Store) ingestBlock(t Target, r *proto.BlockReader) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tc := s.target(t)
	sum := r.LabelsSum()
	if !tc.blockKnown || tc.labelsSum != sum || slices.ContainsFunc(tc.block, func(e blockEntry) bool { return e.ms.gone }) {
		if err := s.findBlockSeries(t, tc, r); err != nil {
			return 0, err
		}
		tc.labelsSum, tc.blockKnown = sum, true
	}
	kept := 0
	for _, e := range tc.block {
		s.samples = r.AppendSamples(s.samples[:0], e.index)
		kept += e.ms.ingest(s.samples)
	}
	return kept, nil
}

// findBlockSeries lists in tc.block the series of r whose metric names a
// rule selects, adding those the store does not have.
func (s *Store) findBlockSeries(t Target, tc *targetCache, r *proto.BlockReader) error {
	tc.blockKnown = false
	tc.block = tc.block[:0]
	var ls []prompb.Label // not kept: it holds the payload's strings
	for i := range r.Len() {
		name, err := r.Name(i)
		if err != nil {
			return err
		}
		if !s.selectsName(name) {
			continue
		}
		if ls, err = r.AppendLabels(ls[:0], i); err != nil {
			return err
		}
		tc.block = append(tc.block, blockEntry{index: i, ms: s.lookup(t.Cluster, t.Node, name, ls)})
	}
	return nil
}

// IngestWire adds the selected samples of a marshaled WriteRequest read
// from cluster and node. It returns how many samples were kept, and an
// error wrapping proto.ErrMalformed for bytes that are not a WriteRequest;
// the series before the bad one are kept.
func (s *Store) IngestWire(t Target, raw []byte) (kept int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tc := s.target(t)
	tc.next = 0
	for i := 0; len(raw) > 0; i++ {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return kept, fmt.Errorf("%w: %w: series %d: %v", proto.ErrMalformed, errWire, i, protowire.ParseError(n))
		}
		raw = raw[n:]
		if num != fieldTimeseries || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, raw); n < 0 {
				return kept, fmt.Errorf("%w: %w: field %d: %v", proto.ErrMalformed, errWire, num, protowire.ParseError(n))
			}
			raw = raw[n:]
			continue
		}
		ts, n := protowire.ConsumeBytes(raw)
		if n < 0 {
			return kept, fmt.Errorf("%w: %w: series %d: %v", proto.ErrMalformed, errWire, i, protowire.ParseError(n))
		}
		raw = raw[n:]
		k, err := s.ingestSeries(t, tc, ts)
		kept += k
		if err != nil {
			return kept, fmt.Errorf("%w: %w: series %d: %v", proto.ErrMalformed, errWire, i, err)
		}
	}
	return kept, nil
}

// eachField calls fn with every length-delimited field of b numbered num,
// and checks the others are well formed.
func eachField(b []byte, num protowire.Number, fn func([]byte) error) error {
	for len(b) > 0 {
		got, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if got == num && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return protowire.ParseError(n)
			}
			if err := fn(v); err != nil {
				return err
			}
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(got, typ, b); n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
	}
	return nil
}

// label reads a Label message.
func label(b []byte) (name, value []byte, err error) {
	// Fast path: name then value, each shorter than 128 bytes, which is
	// how every encoder writes nearly every label.
	if len(b) >= 2 && b[0] == 0x0a && b[1] < 0x80 && int(b[1])+2 <= len(b) {
		name, rest := b[2:2+int(b[1])], b[2+int(b[1]):]
		if len(rest) >= 2 && rest[0] == 0x12 && rest[1] < 0x80 && int(rest[1])+2 == len(rest) {
			return name, rest[2:], nil
		}
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == fieldName || num == fieldValue) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, nil, protowire.ParseError(n)
			}
			if num == fieldName {
				name = v
			} else {
				value = v
			}
			b = b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, nil, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return name, value, nil
}

// Target is where a message comes from: a scrape of one endpoint, or one
// chunk of it. Successive scrapes of a target list their series in the
// same order, which the store uses to skip hashing them.
type Target struct {
	Cluster, Node string
	Source        proto.Source
	Chunk         int
}

// targetCache remembers, in scrape order, the selected series of one
// target and where they are stored, so that a scrape that lists the same
// series as the last one finds them without hashing their labels. For
// prw1+snappy it keeps their encoded labels, found each with a byte
// compare; for BlockZstd the LabelsSum of the whole payload.
type targetCache struct {
	entries []cacheEntry
	next    int

	block      []blockEntry
	labelsSum  uint64
	blockKnown bool // block and labelsSum are those of the last payload

	used bool // since the last gc
}

type cacheEntry struct {
	lbls []byte
	ms   *memSeries
}

// blockEntry is a series of a BlockZstd payload, by its index.
type blockEntry struct {
	index int
	ms    *memSeries
}

// target returns the cache of t, marked used.
func (s *Store) target(t Target) *targetCache {
	tc := s.targets[t]
	if tc == nil {
		tc = &targetCache{}
		s.targets[t] = tc
	}
	tc.used = true
	return tc
}

func (s *Store) ingestSeries(t Target, tc *targetCache, ts []byte) (int, error) {
	cluster, node := t.Cluster, t.Node
	// One pass over the labels, which a marshaled TimeSeries holds first:
	// the metric name (sorted first, so found at once) and where they end.
	var name []byte
	labelsEnd, rest := 0, ts
	for len(rest) > 0 {
		var v []byte
		var n, m int
		if len(rest) >= 2 && rest[0] == 0x0a && rest[1] < 0x80 {
			n, m = 1, 1+int(rest[1]) // one-byte tag and length: the usual label
			if m+1 > len(rest) {
				return 0, protowire.ParseError(-1)
			}
			v = rest[2 : 1+m]
		} else {
			var num protowire.Number
			var typ protowire.Type
			num, typ, n = protowire.ConsumeTag(rest)
			if n < 0 {
				return 0, protowire.ParseError(n)
			}
			if num != fieldLabels || typ != protowire.BytesType {
				break
			}
			v, m = protowire.ConsumeBytes(rest[n:])
			if m < 0 {
				return 0, protowire.ParseError(m)
			}
		}
		if name == nil {
			ln, lv, err := label(v)
			if err != nil {
				return 0, err
			}
			if string(ln) == labels.MetricName {
				name = lv
				if _, ok := s.byName[string(name)]; !ok {
					return 0, nil // most series: no rule reads them
				}
			}
		}
		rest = rest[n+m:]
		labelsEnd = len(ts) - len(rest)
	}
	if name == nil {
		// Labels out of the usual order: look further before giving up.
		if err := eachField(ts, fieldLabels, func(lb []byte) error {
			n, v, err := label(lb)
			if err == nil && string(n) == labels.MetricName {
				name = v
			}
			return err
		}); err != nil {
			return 0, err
		}
	}
	if _, ok := s.byName[string(name)]; !ok || name == nil {
		return 0, nil
	}
	var ms *memSeries
	if i := tc.next; i < len(tc.entries) && !tc.entries[i].ms.gone && bytes.Equal(tc.entries[i].lbls, ts[:labelsEnd]) {
		ms = tc.entries[i].ms
	} else {
		// The encoded labels identify the series: one encoder writes the
		// same labels to the same bytes, and hashing them whole is cheapest.
		d := s.digest
		d.Reset()
		_, _ = d.Write(ts[:labelsEnd])
		_, _ = d.Write(sep)
		_, _ = d.WriteString(cluster)
		_, _ = d.Write(sep)
		_, _ = d.WriteString(node)
		h := d.Sum64()
		var ok bool
		if ms, ok = s.series[h]; !ok {
			var err error
			if ms, err = s.addWire(h, cluster, node, string(name), ts); err != nil {
				return 0, err
			}
		}
		e := cacheEntry{lbls: bytes.Clone(ts[:labelsEnd]), ms: ms}
		if i < len(tc.entries) {
			tc.entries[i] = e
		} else {
			tc.entries = append(tc.entries, e)
		}
	}
	tc.next++
	kept := 0
	err := eachField(ts[labelsEnd:], fieldSamples, func(sb []byte) error {
		var t int64
		var v float64
		for len(sb) > 0 {
			num, typ, n := protowire.ConsumeTag(sb)
			if n < 0 {
				return protowire.ParseError(n)
			}
			sb = sb[n:]
			switch {
			case num == fieldSampleVal && typ == protowire.Fixed64Type:
				x, n := protowire.ConsumeFixed64(sb)
				if n < 0 {
					return protowire.ParseError(n)
				}
				v, sb = math.Float64frombits(x), sb[n:]
			case num == fieldSampleTS && typ == protowire.VarintType:
				x, n := protowire.ConsumeVarint(sb)
				if n < 0 {
					return protowire.ParseError(n)
				}
				t, sb = int64(x), sb[n:]
			default:
				if n = protowire.ConsumeFieldValue(num, typ, sb); n < 0 {
					return protowire.ParseError(n)
				}
				sb = sb[n:]
			}
		}
		ms.last = max(ms.last, t)
		if ms.sels != nil && ms.append(t, v) {
			kept++
		}
		return nil
	})
	return kept, err
}

// addWire adds a series first seen in a marshaled TimeSeries.
func (s *Store) addWire(h uint64, cluster, node, name string, ts []byte) (*memSeries, error) {
	b := &s.lbuf
	b.Reset()
	hasCluster, hasNode := false, false
	err := eachField(ts, fieldLabels, func(lb []byte) error {
		n, v, err := label(lb)
		if err != nil {
			return err
		}
		if len(n) == 0 {
			return errors.New("label with an empty name")
		}
		hasCluster = hasCluster || string(n) == "cluster"
		hasNode = hasNode || string(n) == "node"
		b.Add(string(n), string(v))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if cluster != "" && !hasCluster {
		b.Add("cluster", cluster)
	}
	if node != "" && !hasNode {
		b.Add("node", node)
	}
	b.Sort()
	return s.add(h, name, b.Labels()), nil
}
