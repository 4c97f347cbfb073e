package collector

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"

	"github.com/weirmetrics/weir/proto"
)

// A kubelet serves the same lines in the same order scrape after scrape;
// only values and timestamps change. The text path therefore compares each
// line with the line at the same position of the last successful scrape:
// when the series text is the same, only the value and timestamp are read,
// and Prometheus's lexer, which costs about ten times more, runs only on
// the lines that are new or changed. Their runs go to textparse as they
// are, so the result and the errors are those of textparse alone.

// knownLine is a line of the last successful text scrape: a sample line's
// series, whose text is the bytes before its value as textparse delimits
// them, or a comment line, whole.
type knownLine = *cachedSeries

// parseText is parse for the Prometheus text format, read from r line by
// line: only the runs of new lines are buffered, for textparse.
func (p *parser) parseText(dst *[]proto.LabeledSample, r io.Reader, scrapeMillis int64) (n int, err error) {
	bufs := textBufferPool.Get().(*textBuffers)
	defer bufs.put()
	lines := lineReader{r: r, buf: bufs.read}
	defer func() { bufs.read = lines.buf }()

	prev, next := p.lines, p.nextLines[:0]
	p.lines = nil // until this parse succeeds
	cursor := 0
	// typeLine is the last TYPE line read: textparse reads the le and
	// quantile labels of a histogram or summary according to it, so a run
	// is parsed after the TYPE line in effect where it starts, and its own
	// lines start at runLines in bufs.run; -1 when there is no run.
	typeLine, runLines := bufs.typeLine[:0], -1
	defer func() { bufs.typeLine = typeLine }()
	flush := func() error {
		n, next, err = p.parseRun(dst, bufs.run, runLines, n, next, scrapeMillis)
		runLines = -1
		return err
	}
	for {
		line, complete, err := lines.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		var kl knownLine
		var v float64
		var t int64
		ok := false
		if complete { // a last line without a newline is textparse's to judge
			kl, v, t, ok = p.matchLine(prev, &cursor, line)
		}
		if !ok {
			if runLines < 0 {
				bufs.run = bufs.run[:0]
				if len(typeLine) > 0 {
					bufs.run = append(append(bufs.run, typeLine...), '\n')
				}
				runLines = len(bufs.run)
			}
			bufs.run = append(bufs.run, line...)
			if complete {
				bufs.run = append(bufs.run, '\n')
			}
			if isTypeLine(line) {
				typeLine = append(typeLine[:0], line...)
			}
			// The TYPE line before the run does not count: a long one
			// would make every new line a run of its own.
			if len(bufs.run)-runLines >= maxRunBytes {
				if err := flush(); err != nil {
					return 0, err
				}
			}
			continue
		}
		if kl.comment && isTypeLine(line) {
			typeLine = append(typeLine[:0], line...)
		}
		if runLines >= 0 {
			if err := flush(); err != nil {
				return 0, err
			}
		}
		if !kl.comment {
			n++
			if err := p.append(dst, kl, v, t, scrapeMillis); err != nil {
				return 0, err
			}
			kl.line = int32(len(next))
		}
		next = append(next, kl)
	}
	if runLines >= 0 {
		if err := flush(); err != nil {
			return 0, err
		}
	}
	clear(prev[:cap(prev)]) // the series of lines that are gone must not be kept alive
	p.lines, p.nextLines = next, prev[:0]
	return n, nil
}

// matchLine reports whether line is a line of the last scrape: a comment
// with the same text, or a sample line of a known series with a value and
// an optional timestamp in their plain form. It looks at the line where
// the last scrape had it first, then looks the series up by its text,
// which finds a line again after lines were added or removed before it.
func (p *parser) matchLine(prev []knownLine, cursor *int, line []byte) (kl knownLine, v float64, t int64, ok bool) {
	if *cursor < len(prev) {
		kl = prev[*cursor]
		if kl.comment {
			if string(line) == kl.text {
				*cursor++
				return kl, 0, 0, true
			}
		} else if len(line) > len(kl.text) && line[len(kl.text)] == ' ' && string(line[:len(kl.text)]) == kl.text {
			if v, t, ok = parseValue(line[len(kl.text)+1:]); ok {
				*cursor++
				return kl, v, t, true
			}
		}
	}
	text := seriesText(line)
	if text == nil {
		return nil, 0, 0, false
	}
	cs := p.cache[string(text)]
	if cs == nil || int(cs.line) >= len(prev) || prev[cs.line] != cs {
		return nil, 0, 0, false
	}
	if v, t, ok = parseValue(line[len(text)+1:]); !ok {
		return nil, 0, 0, false
	}
	*cursor = int(cs.line) + 1
	return prev[cs.line], v, t, true
}

// parseRun parses with textparse a run of lines the last scrape did not
// have, which start at from in run, after the TYPE line in effect where
// they start, and remembers them for the next scrape.
func (p *parser) parseRun(dst *[]proto.LabeledSample, run []byte, from, n int, next []knownLine, scrapeMillis int64) (int, []knownLine, error) {
	n, err := p.parseEntries(dst, textparse.NewPromParser(run, p.symbols, false), n, scrapeMillis)
	if err != nil {
		return n, next, err
	}
	for rest := run[from:]; len(rest) > 0; {
		line := rest
		if eol := bytes.IndexByte(rest, '\n'); eol >= 0 {
			line, rest = rest[:eol], rest[eol+1:]
		} else {
			rest = nil
		}
		if trimmed := bytes.TrimLeft(line, " \t"); len(trimmed) == 0 || trimmed[0] == '#' {
			// textparse took it and it holds no sample: the same text
			// next time is skipped.
			next = append(next, &cachedSeries{text: string(line), comment: true})
			continue
		}
		if text := seriesText(line); text != nil {
			if cs := p.cache[string(text)]; cs != nil && cs.lastUsed == p.scrape {
				cs.line = int32(len(next))
				next = append(next, cs)
			}
		}
	}
	return n, next, nil
}

// isTypeLine reports whether textparse reads line as a TYPE line.
func isTypeLine(line []byte) bool {
	line = bytes.TrimLeft(line, " \t")
	if len(line) < 2 || line[0] != '#' || (line[1] != ' ' && line[1] != '\t') {
		return false
	}
	line = bytes.TrimLeft(line[1:], " \t")
	return len(line) > 4 && string(line[:4]) == "TYPE" && (line[4] == ' ' || line[4] == '\t')
}

// seriesText returns the bytes of a sample line before the space that
// precedes its value, when the line has the plain form `name value` or
// `name{labels} value`; nil otherwise.
func seriesText(line []byte) []byte {
	i := 0
	for i < len(line) && line[i] != '{' && line[i] != ' ' {
		if line[i] == '\t' || line[i] == '"' || line[i] == '#' {
			return nil
		}
		i++
	}
	if i == 0 || i == len(line) {
		return nil
	}
	if line[i] == '{' {
		// Label values are most of a line: the quotes and braces are
		// looked for with bytes.IndexByte, not byte by byte.
		for i++; ; {
			rest := line[i:]
			q := bytes.IndexByte(rest, '"')
			if q < 0 {
				q = len(rest)
			}
			if end := bytes.IndexByte(rest[:q], '}'); end >= 0 {
				i += end
				if i+1 < len(line) && line[i+1] == ' ' {
					return line[:i+1]
				}
				return nil
			}
			if q == len(rest) {
				return nil
			}
			// A quoted value: up to the quote no backslash escapes.
			for i += q + 1; ; {
				rest := line[i:]
				q := bytes.IndexByte(rest, '"')
				if q < 0 {
					return nil
				}
				if b := bytes.IndexByte(rest[:q], '\\'); b >= 0 {
					if i += b + 2; i > len(line) { // past the escaped byte
						return nil
					}
					continue
				}
				i += q + 1
				break
			}
		}
	}
	return line[:i]
}

// textLabels appends to dst the labels of a series whose text has the plain
// form `name` or `name{label="value",...}` without escapes, with the target
// labels, sorted by name and without empty values, as seriesLabels builds
// them, and reports whether it could. It reports false for any other text
// and for a scraped label named like a target label, which seriesLabels
// renames; the parser checks the result against seriesLabels' before it
// relies on it.
func textLabels(dst []prompb.Label, text string, target []prompb.Label) ([]prompb.Label, bool) {
	start := len(dst)
	name, rest, braces := strings.Cut(text, "{")
	if name == "" {
		return dst, false
	}
	dst = append(dst, prompb.Label{Name: labels.MetricName, Value: name})
	for braces {
		if rest == "}" {
			break // `{}`, or after a trailing comma
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 || eq+1 == len(rest) || rest[eq+1] != '"' {
			return dst[:start], false
		}
		name, rest = rest[:eq], rest[eq+2:]
		end := strings.IndexByte(rest, '"')
		if end < 0 || strings.IndexByte(rest[:end], '\\') >= 0 {
			return dst[:start], false
		}
		if end > 0 {
			dst = append(dst, prompb.Label{Name: name, Value: rest[:end]})
		}
		switch rest = rest[end+1:]; {
		case rest == "}":
			braces = false
		case rest != "" && rest[0] == ',':
			rest = rest[1:]
		default:
			return dst[:start], false
		}
	}
	for _, tl := range target {
		if labelIndex(dst[start:], tl.Name) >= 0 {
			return dst[:start], false
		}
	}
	dst = append(dst, target...)
	// Exposed labels are mostly sorted already: an insertion sort is
	// about one comparison per label.
	ls := dst[start:]
	for i := 1; i < len(ls); i++ {
		for j := i; j > 0 && nameLess(ls[j].Name, ls[j-1].Name); j-- {
			ls[j], ls[j-1] = ls[j-1], ls[j]
		}
	}
	return dst, true
}

// nameLess orders label names, which are never empty, by their first byte
// before it calls the string comparison.
func nameLess(a, b string) bool {
	if a[0] != b[0] {
		return a[0] < b[0]
	}
	return a < b
}

// appendSeriesText appends the text of the series ls, as the text format
// writes it, to dst.
func appendSeriesText(dst []byte, ls labels.Labels) []byte {
	dst = append(dst, ls.Get(labels.MetricName)...)
	sep := byte('{')
	ls.Range(func(l labels.Label) {
		if l.Name == labels.MetricName {
			return
		}
		dst = append(append(append(dst, sep), l.Name...), `="`...)
		for i := 0; i < len(l.Value); i++ {
			switch c := l.Value[i]; c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, `\n`...)
			default:
				dst = append(dst, c)
			}
		}
		dst = append(dst, '"')
		sep = ','
	})
	if sep == ',' {
		dst = append(dst, '}')
	}
	return dst
}

// parseValue reads `value` or `value timestamp`, each as textparse reads
// it, and reports false for anything else (more spaces, tabs, a bad
// number), which textparse then parses or rejects.
func parseValue(rest []byte) (v float64, t int64, ok bool) {
	num, ts, stamped := bytes.Cut(rest, []byte{' '})
	if len(num) == 0 || bytes.ContainsAny(num, "pP_{\t\r") {
		return 0, 0, false // textparse refuses pre-Go 1.13 forms, and `{` ends its value token
	}
	v, err := strconv.ParseFloat(string(num), 64)
	if err != nil {
		return 0, 0, false
	}
	if math.IsNaN(v) {
		v = math.Float64frombits(value.NormalNaN) // as textparse
	}
	if !stamped {
		return v, 0, true
	}
	if len(ts) == 0 {
		return 0, 0, false
	}
	for _, c := range ts {
		if c < '0' || c > '9' {
			return 0, 0, false
		}
	}
	t, err = strconv.ParseInt(string(ts), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	return v, t, true
}

// errorAfter wraps a textparse error with how far the body was read.
func errorAfter(n int, err error) error {
	return fmt.Errorf("after %d samples: %s", n, truncate(err.Error(), maxErrorText))
}
