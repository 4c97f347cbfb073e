package collector

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/proto"
)

// fallbackContentType is how a body is read when its Content-Type is
// missing or unknown: kubelets and kube-proxy serve the text format.
const fallbackContentType = "text/plain"

// exportedPrefix renames a scraped label that collides with a target label,
// as Prometheus does when honor_labels is false.
const exportedPrefix = "exported_"

// maxErrorText bounds the input quoted in a parse error: the parser quotes
// the line it failed on, and a line can be megabytes long.
const maxErrorText = 256

var parserOptions = textparse.ParserOptions{
	FallbackContentType: fallbackContentType,
	// The batch encoding carries float samples only; a protobuf answer
	// still yields its classic buckets.
	IgnoreNativeHistograms: true,
}

// parser turns the scrapes of one target into series. It remembers the
// labels of every series of the last scrape, keyed by the series text, so
// that a scrape of series it has seen before, which is nearly every series
// of a kubelet, builds no labels and allocates nothing per sample. Not safe
// for concurrent use: each scrape loop owns one.
type parser struct {
	target []prompb.Label // added to every series, sorted by name
	cache  map[string]*cachedSeries
	scrape uint64 // number of the current parse, marks the entries it used
	inUse  int    // cache entries the current parse used
	lset   labels.Labels

	// histogramsSkipped counts the native histogram samples of the last
	// parse, which the batch cannot carry.
	histogramsSkipped int
}

type cachedSeries struct {
	labels   []prompb.Label // shared by every batch the series is in; never modified
	lastUsed uint64
}

// newParser returns a parser that adds target to every series. target must
// be sorted by name and hold no empty value.
func newParser(target []prompb.Label) *parser {
	return &parser{target: target, cache: map[string]*cachedSeries{}}
}

// parse appends one series per sample of body to dst and returns how many it
// appended. A sample without a timestamp gets scrapeMillis; an explicit one,
// as cAdvisor sets, is kept. Labels are sorted by name, empty values are
// dropped as Prometheus does, and a scraped label named like a target label
// is renamed exported_<name>.
//
// Any error fails the whole body: dst is then left as it was, because a
// partial scrape would look like series that disappeared.
//
// The series share their label slices with the parser's cache and reuse the
// sample slices already in dst's spare capacity; they are valid until dst is
// next filled.
func (p *parser) parse(dst *proto.Batch, body []byte, contentType string, scrapeMillis int64) (n int, err error) {
	p.scrape++
	p.inUse = 0
	p.histogramsSkipped = 0
	start := len(dst.Series)
	defer func() {
		if err != nil {
			dst.Series = dst.Series[:start]
		}
	}()

	tp, err := textparse.New(body, contentType, nil, parserOptions)
	if tp == nil {
		return 0, fmt.Errorf("content type %q: %w", contentType, err)
	}
	// A non-nil error with a parser says the fallback is used: expected
	// from targets that send no Content-Type.
	for {
		entry, err := tp.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("after %d samples: %s", n, truncate(err.Error(), maxErrorText))
		}
		switch entry {
		case textparse.EntrySeries:
		case textparse.EntryHistogram:
			p.histogramsSkipped++
			continue
		default: // help, type, unit, comment
			continue
		}
		key, ts, v := tp.Series()
		cs := p.cache[string(key)] // no allocation: the compiler keeps the bytes
		if cs == nil {
			lbls, err := p.seriesLabels(tp)
			if err != nil {
				return 0, fmt.Errorf("after %d samples: %w", n, err)
			}
			cs = &cachedSeries{labels: lbls}
			p.cache[string(key)] = cs
		}
		if cs.lastUsed != p.scrape {
			cs.lastUsed = p.scrape
			p.inUse++
		}
		t := scrapeMillis
		if ts != nil {
			t = *ts
		}
		appendSample(dst, cs.labels, v, t)
		n++
	}
	p.evict()
	return n, nil
}

// evict forgets the series the last successful parse did not see, so that
// the cache holds one scrape's series and not every series ever served.
// It runs only after a successful parse: a failed one says nothing about
// which series are gone.
func (p *parser) evict() {
	if len(p.cache) == p.inUse {
		return
	}
	for k, cs := range p.cache {
		if cs.lastUsed != p.scrape {
			delete(p.cache, k)
		}
	}
}

// seriesLabels builds the labels of the parser's current sample with the
// target labels added, and rejects what a remote-write backend would:
// no metric name, a label twice, a name or value that is not UTF-8.
func (p *parser) seriesLabels(tp textparse.Parser) ([]prompb.Label, error) {
	tp.Labels(&p.lset)
	out := make([]prompb.Label, 0, p.lset.Len()+len(p.target))
	var bad error
	prev := ""
	p.lset.Range(func(l labels.Label) {
		switch {
		case bad != nil:
		case l.Name == labels.MetricName && l.Value == "":
			bad = errors.New("series without a metric name")
		case l.Name == "":
			bad = errors.New("empty label name")
		case l.Name == prev:
			bad = fmt.Errorf("label %q appears twice", truncate(l.Name, maxErrorText))
		case !utf8.ValidString(l.Name) || !utf8.ValidString(l.Value):
			bad = fmt.Errorf("label %q is not valid UTF-8", truncate(l.Name, maxErrorText))
		case l.Value != "":
			out = append(out, prompb.Label{Name: l.Name, Value: l.Value})
		}
		prev = l.Name
	})
	if bad != nil {
		return nil, fmt.Errorf("%w in %s", bad, truncate(p.lset.String(), maxErrorText))
	}
	for _, tl := range p.target {
		i := labelIndex(out, tl.Name)
		if i < 0 {
			continue
		}
		renamed := exportedPrefix + tl.Name
		for labelIndex(out, renamed) >= 0 {
			renamed = exportedPrefix + renamed
		}
		out[i].Name = renamed
	}
	out = append(out, p.target...)
	slices.SortFunc(out, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func labelIndex(ls []prompb.Label, name string) int {
	for i := range ls {
		if ls[i].Name == name {
			return i
		}
	}
	return -1
}

// appendSample appends a one-sample series to b, reusing the sample slice of
// the slot when b already had one there from an earlier scrape.
func appendSample(b *proto.Batch, lbls []prompb.Label, v float64, t int64) {
	s := prompb.Sample{Value: v, Timestamp: t}
	n := len(b.Series)
	if n == cap(b.Series) {
		b.Series = append(b.Series, prompb.TimeSeries{Labels: lbls, Samples: []prompb.Sample{s}})
		return
	}
	b.Series = b.Series[:n+1]
	ts := &b.Series[n]
	*ts = prompb.TimeSeries{Labels: lbls, Samples: append(ts.Samples[:0], s)}
}

// truncate shortens s to at most n bytes plus an ellipsis, on a rune
// boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
