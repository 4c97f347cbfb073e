package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/weirmetrics/weir/proto"
)

// Scrape is one scrape of one target, encoded and cut into messages,
// waiting to be published. Its message ids derive from Subject,
// ScrapeMillis and the chunk index, so publishing it again is harmless.
type Scrape struct {
	// Subject is the subject as published, without a partition.
	Subject string
	// Encoding names the encoding of the payloads.
	Encoding     string
	ScrapeMillis int64
	Chunks       []proto.Chunk
}

// chunkOverhead is what the buffer counts for a chunk beyond its payload:
// the slice headers and, on disk, the lengths.
const chunkOverhead = 48

// Size is what the scrape counts against a buffer's limits.
func (s *Scrape) Size() int64 {
	n := int64(len(s.Subject) + len(s.Encoding) + 64)
	for _, c := range s.Chunks {
		n += int64(len(c.Payload)) + chunkOverhead
	}
	return n
}

// Samples counts the samples of every chunk.
func (s *Scrape) Samples() int {
	n := 0
	for _, c := range s.Chunks {
		n += c.Samples
	}
	return n
}

// ErrCorrupt is returned for a spool record that does not decode.
var ErrCorrupt = errors.New("corrupt spool record")

// recordMagic starts every spool file and names its version.
const recordMagic = "WEIRSPL1"

// maxRecordBytes bounds one spool record: a scrape is at most a few
// messages of at most the NATS max_payload.
const maxRecordBytes = proto.MaxDecodedBytes

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// appendRecord appends the spool record of s:
//
//	magic      "WEIRSPL1"
//	subject    uvarint length, bytes
//	encoding   uvarint length, bytes
//	scrape     varint Unix milliseconds
//	chunks     uvarint count, then per chunk uvarint samples, uvarint
//	           length, payload
//	crc        4 bytes little endian, CRC-32C of everything before
func appendRecord(dst []byte, s *Scrape) []byte {
	start := len(dst)
	dst = append(dst, recordMagic...)
	dst = binary.AppendUvarint(dst, uint64(len(s.Subject)))
	dst = append(dst, s.Subject...)
	dst = binary.AppendUvarint(dst, uint64(len(s.Encoding)))
	dst = append(dst, s.Encoding...)
	dst = binary.AppendVarint(dst, s.ScrapeMillis)
	dst = binary.AppendUvarint(dst, uint64(len(s.Chunks)))
	for _, c := range s.Chunks {
		dst = binary.AppendUvarint(dst, uint64(c.Samples))
		dst = binary.AppendUvarint(dst, uint64(len(c.Payload)))
		dst = append(dst, c.Payload...)
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable))
}

// decodeRecord reads a spool record. The payloads are copies, one
// allocation each, since a payload is held until JetStream acked it.
// Errors wrap ErrCorrupt and say what is wrong.
func decodeRecord(data []byte) (*Scrape, error) {
	if len(data) > maxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrCorrupt, len(data), maxRecordBytes)
	}
	if len(data) < len(recordMagic)+4 || string(data[:len(recordMagic)]) != recordMagic {
		return nil, fmt.Errorf("%w: no %s header", ErrCorrupt, recordMagic)
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch (truncated or damaged)", ErrCorrupt)
	}
	r := reader{buf: body[len(recordMagic):]}
	s := &Scrape{
		Subject:      string(r.bytes("subject")),
		Encoding:     string(r.bytes("encoding")),
		ScrapeMillis: r.varint("scrape time"),
	}
	n := r.uvarint("chunk count")
	// Every chunk takes at least two bytes: its sample count and length.
	if r.err == nil && n > uint64(len(r.buf)/2) {
		return nil, fmt.Errorf("%w: %d chunks in %d bytes", ErrCorrupt, n, len(r.buf))
	}
	s.Chunks = make([]proto.Chunk, 0, n)
	for range n {
		samples := r.uvarint("chunk samples")
		payload := r.bytes("chunk payload")
		if r.err != nil {
			break
		}
		if samples > uint64(len(payload)) {
			return nil, fmt.Errorf("%w: chunk of %d bytes claims %d samples", ErrCorrupt, len(payload), samples)
		}
		s.Chunks = append(s.Chunks, proto.Chunk{Payload: append([]byte(nil), payload...), Samples: int(samples)})
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.buf) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last chunk", ErrCorrupt, len(r.buf))
	}
	if _, err := proto.ParseSubject(s.Subject); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if len(s.Chunks) == 0 {
		return nil, fmt.Errorf("%w: no chunks", ErrCorrupt)
	}
	return s, nil
}

type reader struct {
	buf []byte
	err error
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.buf)
	if n <= 0 {
		r.err = fmt.Errorf("%w: bad or truncated %s", ErrCorrupt, what)
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *reader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.buf)
	if n <= 0 {
		r.err = fmt.Errorf("%w: bad or truncated %s", ErrCorrupt, what)
		return 0
	}
	r.buf = r.buf[n:]
	return v
}

func (r *reader) bytes(what string) []byte {
	n := r.uvarint(what + " length")
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.buf)) {
		r.err = fmt.Errorf("%w: %s of %d bytes, %d left", ErrCorrupt, what, n, len(r.buf))
		return nil
	}
	b := r.buf[:n]
	r.buf = r.buf[n:]
	return b
}
