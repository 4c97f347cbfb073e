package enricher

import (
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/prompb"
)

// guard limits how many new series each scrape target (cluster, node and
// source) may start per minute. It remembers the hash of every series it
// let through with the minute it last saw it, and forgets a series absent
// for longer than forget, so its memory is bounded by the smaller of
// maxSeries and limit × (forget in minutes + 1) per target.
type guard struct {
	limit     int
	forget    int64 // minutes
	maxSeries int
	now       func() time.Time

	mu        sync.Mutex
	targets   map[string]*targetSeries
	total     int   // series remembered across targets
	lastSweep int64 // minute of the last sweep of idle targets
}

// targetSeries is what the guard knows of one target. One worker handles a
// target at a time (a target is in one partition), but the lock keeps the
// guard correct if that ever changes.
type targetSeries struct {
	mu       sync.Mutex
	minute   int64 // the minute admitted counts for
	admitted int
	lastUse  int64
	seen     map[uint64]int64 // series hash -> minute last seen
	// epoch changes with minute: while it holds, no series was forgotten
	// and every series seen in it has minute as its last.
	epoch uint64
}

func newGuard(c CardinalityConfig, now func() time.Time) *guard {
	if c.NewSeriesPerMinute <= 0 {
		return nil
	}
	return &guard{
		limit:     c.NewSeriesPerMinute,
		forget:    max(1, int64(c.Forget/time.Minute)),
		maxSeries: c.MaxSeries,
		now:       now,
		targets:   map[string]*targetSeries{},
	}
}

// target returns the series of one target, and at most once a minute
// forgets targets idle for longer than forget.
func (g *guard) target(key string, minute int64) *targetSeries {
	g.mu.Lock()
	defer g.mu.Unlock()
	if minute > g.lastSweep {
		g.lastSweep = minute
		for k, t := range g.targets {
			if minute-t.lastUse > g.forget {
				g.total -= len(t.seen)
				delete(g.targets, k)
			}
		}
	}
	t := g.targets[key]
	if t == nil {
		t = &targetSeries{minute: minute, seen: map[uint64]int64{}}
		g.targets[key] = t
	}
	t.lastUse = minute
	return t
}

// admission is one message's pass through the guard.
type admission struct {
	g      *guard
	t      *targetSeries
	minute int64
	added  int
	buf    []byte // what hashLabels hashes, reused from series to series
}

// begin starts the admission of one message of target; end must follow.
func (g *guard) begin(target string) admission {
	minute := g.now().Unix() / 60
	t := g.target(target, minute)
	t.mu.Lock()
	if t.minute != minute {
		t.minute, t.admitted = minute, 0
		t.epoch++
		// Once a minute per target: forget series not seen for a while.
		removed := 0
		for h, last := range t.seen {
			if minute-last > g.forget {
				delete(t.seen, h)
				removed++
			}
		}
		if removed > 0 {
			g.mu.Lock()
			g.total -= removed
			g.mu.Unlock()
		}
	}
	return admission{g: g, t: t, minute: minute, buf: make([]byte, 0, 1024)}
}

// admit reports whether a series may pass: it is known, or the target has
// new series left this minute and the guard has room. h is the series'
// hash, for seenAgain.
func (a *admission) admit(ls []prompb.Label) (h uint64, ok bool) {
	a.buf, h = hashLabels(a.buf, ls)
	return h, a.admitHash(h)
}

// admitHash is admit of the series whose hash is h.
func (a *admission) admitHash(h uint64) bool {
	if _, ok := a.t.seen[h]; ok {
		a.t.seen[h] = a.minute
		return true
	}
	if a.t.admitted >= a.g.limit {
		return false
	}
	a.g.mu.Lock()
	full := a.g.total >= a.g.maxSeries
	if !full {
		a.g.total++
	}
	a.g.mu.Unlock()
	if full {
		return false
	}
	a.t.admitted++
	a.t.seen[h] = a.minute
	a.added++
	return true
}

// guardMark is where a target's guard stood after a message whose series
// it all knew: those series are still known, as seen this minute, while
// the mark holds.
type guardMark struct {
	t     *targetSeries
	epoch uint64
}

// seenAgain admits series the guard let through before, by their hashes,
// as admit would: it reports false, and the caller must admit them one by
// one, when the guard forgot one. Within the minute of mark it has nothing
// to do. The mark it returns is the one for the next message.
func (a *admission) seenAgain(hashes []uint64, mark guardMark) (guardMark, bool) {
	now := a.mark()
	if mark == now {
		return now, true
	}
	for _, h := range hashes {
		if _, ok := a.t.seen[h]; !ok {
			return now, false
		}
		a.t.seen[h] = a.minute
	}
	return now, true
}

func (a *admission) end() { a.t.mu.Unlock() }

// mark is where the target's guard stands.
func (a *admission) mark() guardMark { return guardMark{a.t, a.t.epoch} }

// size is the number of series the guard remembers.
func (g *guard) size() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

// hashLabels hashes sorted labels with separators that cannot occur in
// valid UTF-8, so that {a="bc"} and {ab="c"} differ. It gathers the bytes
// in buf and hashes them at once: four calls of a streaming digest per
// label cost more than the copy.
func hashLabels(buf []byte, ls []prompb.Label) ([]byte, uint64) {
	buf = buf[:0]
	for i := range ls {
		buf = append(buf, ls[i].Name...)
		buf = append(buf, 0xff)
		buf = append(buf, ls[i].Value...)
		buf = append(buf, 0xff)
	}
	return buf, xxhash.Sum64(buf)
}
