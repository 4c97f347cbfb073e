package collector

import (
	"bytes"
	"io"
	"sync"
)

// Sizes of the buffers a text scrape reads through.
const (
	// readChunk is what a line reader reads at once: a scrape holds this
	// much of its body, plus the run of new lines being parsed, never the
	// whole body.
	readChunk = 32 << 10
	// maxRunBytes is the size at which a run of new lines is parsed
	// before it ends, at a line boundary: the first scrape of a target is
	// all new lines, and must not be buffered whole either.
	maxRunBytes = 64 << 10
)

// textBuffers are the buffers of one text scrape, reused from scrape to
// scrape and across targets: a target is scraped for milliseconds every
// interval, so a few buffers serve every loop.
type textBuffers struct {
	read, run, typeLine []byte
}

var textBufferPool = sync.Pool{New: func() any {
	return &textBuffers{read: make([]byte, readChunk), run: make([]byte, 0, maxRunBytes)}
}}

// put returns the buffers to the pool, unless a long line grew them.
func (b *textBuffers) put() {
	if len(b.read) > readChunk || cap(b.run) > 2*maxRunBytes {
		return
	}
	textBufferPool.Put(b)
}

// lineReader reads the lines of a body a chunk at a time.
type lineReader struct {
	r          io.Reader
	buf        []byte
	start, end int // the unread bytes are buf[start:end]
	scanned    int // bytes after start known to hold no newline
	err        error
}

// next returns the next line without its newline, valid until the next
// call; complete is false for a last line that has no newline. After the
// last line it returns io.EOF, and a read error as the reader returned it.
func (lr *lineReader) next() (line []byte, complete bool, err error) {
	for {
		if i := bytes.IndexByte(lr.buf[lr.start+lr.scanned:lr.end], '\n'); i >= 0 {
			eol := lr.start + lr.scanned + i
			line, lr.start, lr.scanned = lr.buf[lr.start:eol], eol+1, 0
			return line, true, nil
		}
		lr.scanned = lr.end - lr.start
		if lr.err != nil {
			if lr.err == io.EOF && lr.start < lr.end {
				line, lr.start, lr.scanned = lr.buf[lr.start:lr.end], lr.end, 0
				return line, false, nil
			}
			return nil, false, lr.err
		}
		if lr.end == len(lr.buf) {
			if lr.start > 0 { // keep the partial line, at the front
				lr.end = copy(lr.buf, lr.buf[lr.start:lr.end])
				lr.start = 0
			} else { // a line longer than the buffer
				lr.buf = append(lr.buf, make([]byte, len(lr.buf))...)
			}
		}
		var n int
		n, lr.err = lr.r.Read(lr.buf[lr.end:])
		lr.end += n
	}
}
