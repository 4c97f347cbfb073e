package proto

import "errors"

// Sentinels, checked with errors.Is.
var (
	// ErrBadSubject is returned for a subject that is not a Weir subject.
	ErrBadSubject = errors.New("bad subject")
	// ErrUnknownEncoding is returned for a Weir-Encoding header no decoder knows.
	ErrUnknownEncoding = errors.New("unknown encoding")
	// ErrChunkTooLarge is returned when a single series does not fit in a message.
	ErrChunkTooLarge = errors.New("series larger than the message limit")
	// ErrTooLarge is returned when a payload would decode to more than MaxDecodedBytes.
	ErrTooLarge = errors.New("payload too large")
	// ErrMalformed is returned for a payload that does not decode.
	ErrMalformed = errors.New("malformed payload")
)
