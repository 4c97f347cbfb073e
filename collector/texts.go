package collector

import "unsafe"

// The blocks the texts of new series are copied into double in size from
// minTextBlock, so that a target of ten series wastes little, up to
// maxTextBlock: the first scrape of a kubelet takes a few dozen.
const (
	minTextBlock = 1 << 10
	maxTextBlock = 32 << 10
)

// seriesTexts holds the text of the series a parser caches in shared
// blocks, not one heap object each. Allocated one by one, the strings
// the cache keeps would sit between the labels and buffers a first scrape
// throws away, and the spans of their size classes would stay part-empty
// after it: in a collector of one node, 40% more heap than the series.
// A block lives as long as one of its strings does, so the parser copies
// what it keeps into new blocks when dead series hold most of them.
type seriesTexts struct {
	block []byte
	// live is the length of the texts in the cache; held is that of
	// every text copied into the blocks since they were last compacted.
	live, held int
}

// copy returns b as a string in a block.
func (t *seriesTexts) copy(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > cap(t.block)-len(t.block) {
		size := min(max(2*cap(t.block), minTextBlock), maxTextBlock)
		t.block = make([]byte, 0, max(size, len(b)))
	}
	start := len(t.block)
	t.block = append(t.block, b...)
	t.live += len(b)
	t.held += len(b)
	// The block is never written again where a string points, so the
	// string is immutable as Go requires.
	return unsafe.String(&t.block[start], len(b))
}

// forget accounts for a text the cache no longer holds.
func (t *seriesTexts) forget(s string) { t.live -= len(s) }

// wasteful reports whether the texts of forgotten series take more of the
// blocks than the live ones do.
func (t *seriesTexts) wasteful() bool {
	return t.held > 2*t.live+maxTextBlock
}

// compactTexts copies the texts of the cached series into new blocks, and
// rebuilds the cache keyed by them, so that the old blocks can go.
func (p *parser) compactTexts() {
	p.texts = seriesTexts{}
	cache := make(map[string]*cachedSeries, len(p.cache))
	for k, cs := range p.cache {
		if k != cs.text { // an alias keeps its own text
			cache[p.texts.copy(unsafe.Slice(unsafe.StringData(k), len(k)))] = cs
			continue
		}
		cs.text = p.texts.copy(unsafe.Slice(unsafe.StringData(cs.text), len(cs.text)))
		cache[cs.text] = cs
	}
	p.cache = cache
}
