package loadtest

import (
	"errors"
	"fmt"
	"math"

	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/encoding/protowire"
)

// series is one time series of a remote-write request as the receiver
// needs it, its byte slices pointing into the request: decoding builds no
// strings, so the receiver keeps up with the pipeline it measures.
type series struct {
	hash                      uint64 // of every label name and value, in order
	name, instance, path, job []byte
	samples                   []sample
}

type sample struct {
	value float64
	ts    int64
}

var errTruncated = errors.New("truncated field")

// walkWriteRequest calls fn for each series of a remote-write 1.0
// WriteRequest (prompb.WriteRequest on the wire), skipping metadata,
// exemplars and histograms. s is reused from one series to the next.
func walkWriteRequest(b []byte, s *series, fn func(*series)) error {
	for n := 0; len(b) > 0; n++ {
		num, typ, body, rest, err := field(b)
		if err != nil {
			return fmt.Errorf("write request field %d: %w", n, err)
		}
		b = rest
		if num != 1 || typ != protowire.BytesType {
			continue // metadata, or a field a newer protocol added
		}
		if err := decodeSeries(body, s); err != nil {
			return fmt.Errorf("series %d: %w", n, err)
		}
		fn(s)
	}
	return nil
}

func decodeSeries(b []byte, s *series) error {
	var d xxhash.Digest
	*s = series{samples: s.samples[:0]}
	for len(b) > 0 {
		num, typ, body, rest, err := field(b)
		if err != nil {
			return err
		}
		b = rest
		switch {
		case num == 1 && typ == protowire.BytesType:
			name, value, err := decodeLabel(body)
			if err != nil {
				return fmt.Errorf("label: %w", err)
			}
			_, _ = d.Write(name)
			_, _ = d.Write([]byte{0xff})
			_, _ = d.Write(value)
			_, _ = d.Write([]byte{0xfe})
			switch string(name) { // no allocation: the compiler compares in place
			case "__name__":
				s.name = value
			case "instance":
				s.instance = value
			case "metrics_path":
				s.path = value
			case "job":
				s.job = value
			}
		case num == 2 && typ == protowire.BytesType:
			smp, err := decodeSample(body)
			if err != nil {
				return fmt.Errorf("sample: %w", err)
			}
			s.samples = append(s.samples, smp)
		}
	}
	s.hash = d.Sum64()
	return nil
}

func decodeLabel(b []byte) (name, value []byte, err error) {
	for len(b) > 0 {
		num, typ, body, rest, err := field(b)
		if err != nil {
			return nil, nil, err
		}
		b = rest
		if typ != protowire.BytesType {
			continue
		}
		switch num {
		case 1:
			name = body
		case 2:
			value = body
		}
	}
	return name, value, nil
}

func decodeSample(b []byte) (sample, error) {
	var s sample
	for len(b) > 0 {
		num, typ, n := tag(b)
		if n < 0 {
			return s, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.Fixed64Type:
			v, m := protowire.ConsumeFixed64(b)
			if m < 0 {
				return s, protowire.ParseError(m)
			}
			s.value, b = math.Float64frombits(v), b[m:]
		case num == 2 && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return s, protowire.ParseError(m)
			}
			s.ts, b = int64(v), b[m:]
		default:
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return s, protowire.ParseError(m)
			}
			b = b[m:]
		}
	}
	return s, nil
}

// field reads one field; body is the payload of a length-delimited one.
func field(b []byte) (num protowire.Number, typ protowire.Type, body, rest []byte, err error) {
	num, typ, n := tag(b)
	if n < 0 {
		return 0, 0, nil, nil, protowire.ParseError(n)
	}
	b = b[n:]
	if typ == protowire.BytesType {
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return 0, 0, nil, nil, fmt.Errorf("%w: %w", errTruncated, protowire.ParseError(m))
		}
		return num, typ, v, b[m:], nil
	}
	m := protowire.ConsumeFieldValue(num, typ, b)
	if m < 0 {
		return 0, 0, nil, nil, protowire.ParseError(m)
	}
	return num, typ, nil, b[m:], nil
}

// tag reads a field's tag. Unlike protowire.ConsumeTag it takes any field
// number, as the gogo-generated prompb does: the receiver must accept what
// a real backend accepts.
func tag(b []byte) (protowire.Number, protowire.Type, int) {
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, n
	}
	return protowire.Number(v >> 3), protowire.Type(v & 7), n
}
