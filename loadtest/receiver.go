package loadtest

import (
	"io"
	"net/http"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/prompb"
)

// Receiver is a remote-write 1.0 endpoint that counts every sample. It
// remembers the newest timestamp of each series, so its memory grows with
// the number of series, not with time: a sample at or before the newest
// one seen is counted as a duplicate, which is what a backend that accepts
// no out-of-order samples would also reject.
type Receiver struct {
	mu     sync.Mutex
	newest map[uint64]int64 // series hash → newest timestamp
	stats  ReceiverStats
}

// ReceiverStats is what a Receiver has counted so far.
type ReceiverStats struct {
	Requests   int64 // accepted requests
	Rejected   int64 // requests that did not decode
	Samples    int64 // every sample received
	Unique     int64 // samples newer than any before them in their series
	Duplicates int64 // samples at or before the newest of their series
	Series     int   // distinct series
}

// NewReceiver returns an empty Receiver.
func NewReceiver() *Receiver { return &Receiver{newest: map[uint64]int64{}} }

// Stats returns the counts so far.
func (r *Receiver) Stats() ReceiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Series = len(r.newest)
	return s
}

// ServeHTTP implements http.Handler.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	compressed, err := io.ReadAll(io.LimitReader(req.Body, 64<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	raw, err := snappy.Decode(nil, compressed)
	var wr prompb.WriteRequest
	if err == nil {
		err = wr.Unmarshal(raw)
	}
	if err != nil {
		r.mu.Lock()
		r.stats.Rejected++
		r.mu.Unlock()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.Requests++
	var d xxhash.Digest
	for _, ts := range wr.Timeseries {
		d.Reset()
		for _, l := range ts.Labels {
			_, _ = d.WriteString(l.Name)
			_, _ = d.Write([]byte{0xff})
			_, _ = d.WriteString(l.Value)
			_, _ = d.Write([]byte{0xfe})
		}
		key := d.Sum64()
		for _, s := range ts.Samples {
			r.stats.Samples++
			last, seen := r.newest[key]
			if seen && s.Timestamp <= last {
				r.stats.Duplicates++
				continue
			}
			r.newest[key] = s.Timestamp
			r.stats.Unique++
		}
	}
	w.WriteHeader(http.StatusNoContent)
}
