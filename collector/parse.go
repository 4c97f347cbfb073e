package collector

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/collector/summary"
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

// parseOptions are the Prometheus scrape settings a parser applies.
type parseOptions struct {
	// honorTimestamps keeps the timestamps a target sets; false stamps
	// every sample with the scrape time.
	honorTimestamps bool
	limits          limits
	// relabel is metric_relabel_configs, applied to each new series after
	// the target labels are added, as Prometheus does.
	relabel []*relabel.Config
}

// limits fail a scrape that exceeds one of them; 0 is no limit.
type limits struct {
	sample, label, labelNameLength, labelValueLength int
}

// parser turns the scrapes of one target into series. It remembers every
// series of the last scrape, keyed by the series text, so that a scrape of
// series it has seen before, which is nearly every series of a kubelet,
// builds no labels and allocates nothing per sample. The same memory says
// which series disappeared: they get a staleness marker. Not safe for
// concurrent use: each scrape loop owns one.
//
// Relabeling, or the renaming of a label, can give two series texts the
// same final labels. The text met later is then an alias in cache of the
// first one's entry, so that a scrape publishes the series once, as
// Prometheus keeps the first sample of a series at a timestamp.
type parser struct {
	target []prompb.Label // added to every series, sorted by name
	opts   parseOptions
	cache  map[string]*cachedSeries
	texts  seriesTexts // the keys of cache and the text of its series
	// aliases counts the keys of cache that are not their entry's text.
	aliases int
	// byLabels finds a cached series by a hash of its final labels. It
	// holds only the series whose text could meet another with the same
	// labels (see indexed): a parser of plain series keeps it empty.
	byLabels map[uint64]*cachedSeries
	// lines are the lines of the last successful text scrape, in order;
	// nextLines is the spare slice the next scrape fills.
	lines, nextLines []knownLine
	symbols          *labels.SymbolTable
	// scrape numbers the parses and marks the entries the current one
	// used; 32 bits wrap after 136 years of scrapes a second.
	scrape    uint32
	lastOK    uint32 // number of the last successful parse; 0 for none since a failure
	inUse     int    // cache entries the current parse used
	kept      int    // samples the current parse kept after relabeling
	lset      labels.Labels
	lb        *labels.Builder
	sb        labels.ScratchBuilder
	keyBuf    []byte
	labelsBuf []prompb.Label // a new series' text labels, to compare
	finalBuf  []prompb.Label // a new series' final labels

	// duplicates counts the samples of the last parse whose series was
	// already in the same scrape, after relabeling: they are dropped as
	// Prometheus does.
	duplicates int
}

// cachedSeries is a series of the last scrape, and the LabelSet of its
// samples. A collector keeps tens of thousands of them, so a series keeps
// one string when it can: its text, from which AppendLabels reads its
// labels when the encoder needs them, which is when the series of a target
// change.
type cachedSeries struct {
	// text is the series text, as in the parser's cache: for the text
	// format, the bytes of its line before the value.
	text string
	// labels are the series' labels when textLabels does not read them
	// from text (escapes, an le or quantile value textparse normalises,
	// relabeling, a renamed label); nil otherwise.
	labels *labels.Labels
	owner  *parser // whose target labels the series has
	line   int32   // index in the parser's lines
	// dropped is set when metric_relabel_configs drop the series.
	dropped bool
	// comment is set for a comment line of the parser's lines, which is
	// no series and not in the cache.
	comment  bool
	lastUsed uint32
	prevUsed uint32 // lastUsed before the current parse touched it
	lastT    int64  // timestamp of the series' last sample
	prevT    int64  // lastT before the current parse touched it
}

var _ proto.LabelSet = (*cachedSeries)(nil)

// AppendLabels implements proto.LabelSet.
func (cs *cachedSeries) AppendLabels(dst []prompb.Label) []prompb.Label {
	if cs.labels == nil {
		dst, _ = textLabels(dst, cs.text, cs.owner.target)
		return dst
	}
	cs.labels.Range(func(l labels.Label) { dst = append(dst, prompb.Label{Name: l.Name, Value: l.Value}) })
	return dst
}

// newParser returns a parser that adds target to every series and keeps
// explicit timestamps. target must be sorted by name and hold no empty
// value.
func newParser(target []prompb.Label) *parser {
	return newParserWith(target, parseOptions{honorTimestamps: true})
}

func newParserWith(target []prompb.Label, opts parseOptions) *parser {
	return &parser{target: target, opts: opts, cache: map[string]*cachedSeries{}, symbols: labels.NewSymbolTable(), lb: labels.NewBuilder(labels.EmptyLabels())}
}

// parse appends one series per sample of body to dst and returns how many
// samples the body had (before metric_relabel_configs). A sample without a
// timestamp gets scrapeMillis; an explicit one, as cAdvisor sets, is kept
// when honoring timestamps. Labels are sorted by name, empty values are
// dropped as Prometheus does, and a scraped label named like a target label
// is renamed exported_<name>. After the samples come staleness markers for
// the series of the last successful scrape that this one does not have.
//
// Any error fails the whole body: dst is then left as it was, because a
// partial scrape would look like series that disappeared.
//
// The samples' label sets are the parser's cached series: the encoder
// tells a scrape of the same series as the last by them.
func (p *parser) parse(dst *[]proto.LabeledSample, body []byte, contentType string, scrapeMillis int64) (n int, err error) {
	if p.isText(contentType) {
		return p.parseStream(dst, bytes.NewReader(body), scrapeMillis)
	}
	start := p.begin(dst)
	defer p.end(dst, start, &err)
	tp, err := textparse.New(body, contentType, p.symbols, parserOptions)
	if tp == nil {
		return 0, fmt.Errorf("content type %q: %w", contentType, err)
	}
	if n, err = p.parseEntries(dst, tp, 0, scrapeMillis); err != nil {
		return 0, err
	}
	p.finish(dst, scrapeMillis)
	return n, nil
}

// parseStream is parse for a body in the text format read from r as it
// arrives, which is never held whole.
func (p *parser) parseStream(dst *[]proto.LabeledSample, r io.Reader, scrapeMillis int64) (n int, err error) {
	start := p.begin(dst)
	defer p.end(dst, start, &err)
	if n, err = p.parseText(dst, r, scrapeMillis); err != nil {
		return 0, err
	}
	p.finish(dst, scrapeMillis)
	return n, nil
}

// end leaves dst as it was before the parse that failed with *err.
func (p *parser) end(dst *[]proto.LabeledSample, start int, err *error) {
	if *err != nil {
		*dst = (*dst)[:start]
		clear(p.nextLines[:cap(p.nextLines)])
	}
}

// isText reports whether textparse reads contentType, or its absence, as
// the Prometheus text format.
func (p *parser) isText(contentType string) bool {
	tp, _ := textparse.New(nil, contentType, p.symbols, parserOptions)
	_, text := tp.(*textparse.PromParser)
	return text
}

// parseEntries appends the samples of tp to dst; n counts the samples of
// the body read so far.
func (p *parser) parseEntries(dst *[]proto.LabeledSample, tp textparse.Parser, n int, scrapeMillis int64) (int, error) {
	for {
		entry, err := tp.Next()
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, errorAfter(n, err)
		}
		switch entry {
		case textparse.EntrySeries:
		default: // help, type, unit, comment; native histograms come as their classic series
			continue
		}
		key, ts, v := tp.Series()
		cs := p.cache[string(key)] // no allocation: the compiler keeps the bytes
		if cs == nil {
			tp.Labels(&p.lset)
			var err error
			if cs, err = p.newSeries(key, p.lset); err != nil {
				return n, fmt.Errorf("after %d samples: %w", n, err)
			}
		}
		n++
		t := int64(0)
		if ts != nil {
			t = *ts
		}
		if err := p.append(dst, cs, v, t, scrapeMillis); err != nil {
			return n, err
		}
	}
}

// parseSamples is parse for sources that are not the text format
// (/stats/summary, kube-proxy's /healthz): samples already have labels.
// A TimestampMs of 0 is no timestamp.
func (p *parser) parseSamples(dst *[]proto.LabeledSample, samples []summary.Sample, scrapeMillis int64) (n int, err error) {
	start := p.begin(dst)
	for _, s := range samples {
		// Keyed by their text, as in the text format, so that a series
		// keeps one string.
		p.keyBuf = appendSeriesText(p.keyBuf[:0], s.Labels)
		cs := p.cache[string(p.keyBuf)]
		if cs == nil {
			if cs, err = p.newSeries(p.keyBuf, s.Labels); err != nil {
				*dst = (*dst)[:start]
				return 0, fmt.Errorf("after %d samples: %w", n, err)
			}
		}
		n++
		if err := p.append(dst, cs, s.Value, s.TimestampMs, scrapeMillis); err != nil {
			*dst = (*dst)[:start]
			return 0, err
		}
	}
	p.finish(dst, scrapeMillis)
	return n, nil
}

func (p *parser) begin(dst *[]proto.LabeledSample) int {
	p.scrape++
	p.inUse = 0
	p.kept = 0
	p.duplicates = 0
	return len(*dst)
}

// append adds one sample of series cs; ts 0 is no timestamp.
func (p *parser) append(dst *[]proto.LabeledSample, cs *cachedSeries, v float64, ts, scrapeMillis int64) error {
	if cs.lastUsed == p.scrape {
		p.duplicates++
		return nil
	}
	cs.prevUsed, cs.lastUsed = cs.lastUsed, p.scrape
	cs.prevT = cs.lastT
	p.inUse++
	if cs.dropped {
		return nil
	}
	if lim := p.opts.limits.sample; lim > 0 && p.kept >= lim {
		return &limitError{reason: reasonSampleLimit, err: fmt.Errorf("sample_limit exceeded: more than %d samples (limit %d)", lim, lim)}
	}
	p.kept++
	t := scrapeMillis
	if ts != 0 && p.opts.honorTimestamps {
		t = ts
	}
	cs.lastT = t
	appendSample(dst, cs, v, t)
	return nil
}

// finish ends a successful parse: a staleness marker for every series of
// the last successful scrape that this one did not have, as Prometheus
// writes them, and the cache forgets those series, so that it holds one
// scrape's series and not every series ever served.
func (p *parser) finish(dst *[]proto.LabeledSample, scrapeMillis int64) {
	if len(p.cache)-p.aliases != p.inUse {
		for k, cs := range p.cache {
			if cs.lastUsed == p.scrape {
				continue
			}
			delete(p.cache, k)
			p.texts.forget(k)
			if k != cs.text {
				p.aliases-- // its series is marked once, under its text
				continue
			}
			if cs.lastUsed == p.lastOK && p.lastOK != 0 && !cs.dropped {
				appendSample(dst, cs, staleNaN, staleTime(cs, scrapeMillis))
			}
			if len(p.byLabels) > 0 && p.indexed(cs) {
				p.unindex(cs)
			}
		}
	}
	if p.texts.wasteful() {
		p.compactTexts()
	}
	p.lastOK = p.scrape
}

// staleAll appends a staleness marker at t for every series of the last
// successful scrape and forgets them: the target failed or is gone, and a
// query must not see its series for five more minutes.
func (p *parser) staleAll(dst *[]proto.LabeledSample, t int64) int {
	n := 0
	for k, cs := range p.cache {
		if k != cs.text {
			continue // an alias: the series is marked under its text
		}
		// A failed parse may have touched the series: what was published
		// is what it had before.
		used, lastT := cs.lastUsed, cs.lastT
		if used == p.scrape && p.scrape != p.lastOK {
			used, lastT = cs.prevUsed, cs.prevT
		}
		if p.lastOK != 0 && used == p.lastOK && !cs.dropped {
			appendSample(dst, cs, staleNaN, max(t, lastT+1))
			n++
		}
	}
	clear(p.cache)
	clear(p.byLabels)
	p.aliases = 0
	p.texts = seriesTexts{}
	p.lines = nil
	p.lastOK = 0
	return n
}

// staleTime keeps a marker after the series' last sample, which an
// explicit timestamp can put later than the scrape: remote write needs
// every series in time order.
func staleTime(cs *cachedSeries, t int64) int64 {
	return max(t, cs.lastT+1)
}

// staleNaN is Prometheus's staleness marker.
var staleNaN = math.Float64frombits(value.StaleNaN)

// limitError is a series or scrape over one of the configured limits.
type limitError struct {
	reason string
	err    error
}

func (e *limitError) Error() string { return e.err.Error() }
func (e *limitError) Unwrap() error { return e.err }

// newSeries caches the series of text, whose labels textparse read as
// lset, and keeps its final labels only when textLabels does not read the
// same from text. A text whose final labels are those of a cached series
// becomes an alias of that series.
func (p *parser) newSeries(key []byte, lset labels.Labels) (*cachedSeries, error) {
	final, err := p.seriesLabels(lset)
	// The strings of lset, which the cache does not keep.
	defer func() { clear(p.finalBuf[:cap(p.finalBuf)]) }()
	if err != nil {
		return nil, err
	}
	text := p.texts.copy(key)
	cs := &cachedSeries{text: text, owner: p, dropped: final == nil}
	if !cs.dropped {
		var ok bool
		p.labelsBuf, ok = textLabels(p.labelsBuf[:0], text, p.target)
		if !ok || !slices.EqualFunc(p.labelsBuf, final, sameLabel) {
			p.sb.Reset()
			for _, l := range final {
				p.sb.Add(l.Name, l.Value)
			}
			cs.labels = new(p.sb.Labels())
		}
		clear(p.labelsBuf) // the strings of a series the cache may drop
		if p.indexed(cs) {
			h := hashLabels(final)
			if first := p.byLabels[h]; first != nil && p.hasLabels(first, final) {
				p.cache[text] = first
				p.aliases++
				return first, nil
			} else if first == nil { // else another series has the hash: no alias, rare
				if p.byLabels == nil {
					p.byLabels = map[uint64]*cachedSeries{}
				}
				p.byLabels[h] = cs
			}
		}
	}
	p.cache[text] = cs
	return cs, nil
}

// indexed reports whether cs, not dropped, is in byLabels: every series
// when metric_relabel_configs may give two the same labels, else those
// whose labels are not read from their text, which a renamed label or an
// escape can give the labels of another.
func (p *parser) indexed(cs *cachedSeries) bool {
	return !cs.dropped && (len(p.opts.relabel) > 0 || cs.labels != nil)
}

// unindex takes cs, which is indexed, out of byLabels.
func (p *parser) unindex(cs *cachedSeries) {
	p.labelsBuf = cs.AppendLabels(p.labelsBuf[:0])
	if h := hashLabels(p.labelsBuf); p.byLabels[h] == cs {
		delete(p.byLabels, h)
	}
	clear(p.labelsBuf)
}

// hasLabels reports whether cs has the labels ls.
func (p *parser) hasLabels(cs *cachedSeries, ls []prompb.Label) bool {
	p.labelsBuf = cs.AppendLabels(p.labelsBuf[:0])
	same := slices.EqualFunc(p.labelsBuf, ls, sameLabel)
	clear(p.labelsBuf)
	return same
}

// hashLabels hashes sorted labels.
func hashLabels(ls []prompb.Label) uint64 {
	var d xxhash.Digest
	d.Reset()
	for _, l := range ls {
		_, _ = d.WriteString(l.Name)
		_, _ = d.Write(labelSep)
		_, _ = d.WriteString(l.Value)
		_, _ = d.Write(labelSep)
	}
	return d.Sum64()
}

// labelSep ends a label name or value in hashLabels: it is not valid
// UTF-8, which every name and value is.
var labelSep = []byte{0xff}

func sameLabel(a, b prompb.Label) bool { return a.Name == b.Name && a.Value == b.Value }

// seriesLabels builds the labels of a new series with the target labels
// added, applies metric_relabel_configs and the label limits, and rejects
// what a remote-write backend would: no metric name, a label twice, a name
// or value that is not UTF-8. Nil labels and no error: relabeling dropped
// the series.
func (p *parser) seriesLabels(lset labels.Labels) ([]prompb.Label, error) {
	out := p.finalBuf[:0]
	var bad error
	prev := ""
	lset.Range(func(l labels.Label) {
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
		return nil, fmt.Errorf("%w in %s", bad, truncate(lset.String(), maxErrorText))
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
	p.finalBuf = out
	slices.SortFunc(out, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	if len(p.opts.relabel) > 0 {
		var keep bool
		if out, keep = p.relabelSeries(out); !keep {
			return nil, nil
		}
	}
	return out, p.checkLimits(out)
}

// relabelSeries applies metric_relabel_configs to ls, sorted, and returns
// the result sorted.
func (p *parser) relabelSeries(ls []prompb.Label) ([]prompb.Label, bool) {
	p.lb.Reset(labels.EmptyLabels())
	for _, l := range ls {
		p.lb.Set(l.Name, l.Value)
	}
	if !relabel.ProcessBuilder(p.lb, p.opts.relabel...) {
		return nil, false
	}
	res := p.lb.Labels()
	if res.IsEmpty() {
		return nil, false
	}
	out := ls[:0]
	res.Range(func(l labels.Label) { out = append(out, prompb.Label{Name: l.Name, Value: l.Value}) })
	return out, true
}

// checkLimits applies label_limit and the label length limits to a
// series' final labels, with Prometheus's messages.
func (p *parser) checkLimits(ls []prompb.Label) error {
	lim := p.opts.limits
	name := ""
	if i := labelIndex(ls, labels.MetricName); i >= 0 {
		name = ls[i].Value
	}
	if name == "" {
		return errors.New("series without a metric name after metric_relabel_configs")
	}
	if lim.label > 0 && len(ls) > lim.label {
		return &limitError{reason: reasonLabelLimit, err: fmt.Errorf("label_limit exceeded (metric: %.50s, number of labels: %d, limit: %d)", name, len(ls), lim.label)}
	}
	for _, l := range ls {
		if lim.labelNameLength > 0 && len(l.Name) > lim.labelNameLength {
			return &limitError{reason: reasonLabelNameLengthLimit, err: fmt.Errorf("label_name_length_limit exceeded (metric: %.50s, label name: %.50s, length: %d, limit: %d)", name, l.Name, len(l.Name), lim.labelNameLength)}
		}
		if lim.labelValueLength > 0 && len(l.Value) > lim.labelValueLength {
			return &limitError{reason: reasonLabelValueLengthLimit, err: fmt.Errorf("label_value_length_limit exceeded (metric: %.50s, label name: %.50s, value: %.50q, length: %d, limit: %d)", name, l.Name, l.Value, len(l.Value), lim.labelValueLength)}
		}
	}
	return nil
}

func labelIndex(ls []prompb.Label, name string) int {
	for i := range ls {
		if ls[i].Name == name {
			return i
		}
	}
	return -1
}

// appendSample appends a sample of the series ls to dst.
func appendSample(dst *[]proto.LabeledSample, ls proto.LabelSet, v float64, t int64) {
	*dst = append(*dst, proto.LabeledSample{Labels: ls, Value: v, Timestamp: t})
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
