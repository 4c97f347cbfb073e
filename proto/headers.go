package proto

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Header names. Every stage copies the data headers from its input to its
// output, so a message keeps its id from the collector to the sink.
const (
	HeaderMsgID      = jetstream.MsgIDHeader // deduplication id, see MsgID
	HeaderEncoding   = "Weir-Encoding"       // Encoding.Name of the payload
	HeaderScrapeTime = "Weir-Scrape-Time"    // scrape start, Unix milliseconds
	HeaderChunk      = "Weir-Chunk"          // "<index>/<count>" of one scrape
	HeaderSamples    = "Weir-Samples"        // samples in the payload, for accounting without decoding
	HeaderError      = "Weir-Error"          // why a message was dead-lettered
	HeaderSubject    = "Weir-Subject"        // the subject a dead letter was read from
)

// MsgID is the deduplication id of one chunk of one scrape. It is the same
// in every stream the message passes through.
func MsgID(s Subject, scrapeMillis int64, chunk int) string {
	return fmt.Sprintf("%s.%s.%s.%d.%d", EscapeToken(s.Cluster), EscapeToken(s.Node), s.Source, scrapeMillis, chunk)
}

// Meta is what the headers say about a data message.
type Meta struct {
	MsgID        string
	Encoding     string
	ScrapeMillis int64
	Chunk        int
	Chunks       int
	Samples      int
}

// SetHeaders writes m into h.
func (m Meta) SetHeaders(h nats.Header) {
	h.Set(HeaderMsgID, m.MsgID)
	h.Set(HeaderEncoding, m.Encoding)
	h.Set(HeaderScrapeTime, strconv.FormatInt(m.ScrapeMillis, 10))
	h.Set(HeaderChunk, strconv.Itoa(m.Chunk)+"/"+strconv.Itoa(m.Chunks))
	h.Set(HeaderSamples, strconv.Itoa(m.Samples))
}

// ParseMeta reads the data headers. Encoding is required; the others are
// informational and only checked for form.
func ParseMeta(h nats.Header) (Meta, error) {
	m := Meta{MsgID: h.Get(HeaderMsgID), Encoding: h.Get(HeaderEncoding)}
	if m.Encoding == "" {
		return m, fmt.Errorf("%w: missing %s header", ErrMalformed, HeaderEncoding)
	}
	var err error
	if v := h.Get(HeaderScrapeTime); v != "" {
		if m.ScrapeMillis, err = strconv.ParseInt(v, 10, 64); err != nil {
			return m, fmt.Errorf("%w: %s %q", ErrMalformed, HeaderScrapeTime, v)
		}
	}
	if v := h.Get(HeaderChunk); v != "" {
		i, n, ok := strings.Cut(v, "/")
		m.Chunk, err = strconv.Atoi(i)
		if ok && err == nil {
			m.Chunks, err = strconv.Atoi(n)
		}
		if !ok || err != nil || m.Chunk < 0 || m.Chunk >= m.Chunks {
			return m, fmt.Errorf("%w: %s %q", ErrMalformed, HeaderChunk, v)
		}
	}
	if v := h.Get(HeaderSamples); v != "" {
		if m.Samples, err = strconv.Atoi(v); err != nil || m.Samples < 0 {
			return m, fmt.Errorf("%w: %s %q", ErrMalformed, HeaderSamples, v)
		}
	}
	return m, nil
}
