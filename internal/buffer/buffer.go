// Package buffer holds the scrapes a collector could not publish yet: in
// memory up to a byte limit and, optionally, in a spool directory on disk
// up to a second limit. Scrapes wait in one queue per subject, so a
// target's scrapes leave in scrape order and a newer scrape never overtakes
// an older one. When a limit is exceeded the oldest scrapes of all queues
// leave first: from memory to the spool, and from the spool (or from
// memory without one) to the floor, counted.
//
// The spool survives a restart: Open queues what an earlier process left,
// ahead of anything new, and Close writes what is still in memory to it.
// A spool file that does not decode is reported and removed, never fatal.
package buffer

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config bounds a Buffer.
type Config struct {
	// MaxBytes bounds the scrapes held in memory.
	MaxBytes int64
	// SpoolDir, when set, is where scrapes go when memory is full, and on
	// Close. It is created if missing and should belong to one collector.
	SpoolDir string
	// SpoolMaxBytes bounds the spool's files.
	SpoolMaxBytes int64
}

// Hooks report what the buffer does; every field may be nil.
type Hooks struct {
	// Dropped is called, under the buffer's lock, for every scrape dropped
	// to respect the limits.
	Dropped func(subject string, samples int)
}

// spoolExt names the spool's record files; a file is named by the
// sequence number of its scrape, so that names sort in scrape order.
const spoolExt = ".scrape"

// dropLogEvery throttles the log line about dropped scrapes.
const dropLogEvery = 10 * time.Second

// ErrClosed is returned by Next after Close.
var ErrClosed = errors.New("buffer closed")

// Buffer is safe for concurrent use: any number of goroutines Push, and
// one goroutine per subject takes scrapes with Next and settles each with
// Done or Requeue, and may Forget the subject once it takes no more.
type Buffer struct {
	cfg   Config
	log   *slog.Logger
	hooks Hooks

	mu        sync.Mutex
	closed    bool
	seq       uint64
	queues    map[string]*queue
	mem       list.List // *entry held in memory, oldest first
	disk      list.List // *entry in the spool, oldest first
	memBytes  int64
	diskBytes int64
	drops     dropLog
	// spoolErrLogged throttles the log of failed spool writes.
	spoolErrLogged time.Time
}

// entry is a scrape waiting in a queue, in memory or in the spool.
type entry struct {
	seq     uint64
	q       *queue
	size    int64
	samples int
	scrape  *Scrape       // nil while only in the spool
	path    string        // its spool file, if it has one
	onDisk  bool          // in the spool list rather than the memory list
	where   *list.Element // in the memory or spool list; nil once out of both
	inQueue *list.Element // nil while taken
	taken   bool          // being published
	gone    bool          // dropped while taken
}

type queue struct {
	subject string
	entries list.List // *entry, oldest first
	ready   chan struct{}
	taken   int // entries taken and not yet settled
}

// Open returns a buffer. With a spool directory it creates the directory
// and queues every scrape an earlier process spooled there.
func Open(cfg Config, log *slog.Logger, hooks Hooks) (*Buffer, error) {
	if cfg.MaxBytes <= 0 {
		return nil, fmt.Errorf("buffer: max bytes must be positive, got %d", cfg.MaxBytes)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := &Buffer{cfg: cfg, log: log, hooks: hooks, queues: map[string]*queue{}}
	b.drops.log = log
	if cfg.SpoolDir == "" {
		return b, nil
	}
	if cfg.SpoolMaxBytes <= 0 {
		return nil, fmt.Errorf("buffer: spool max bytes must be positive, got %d", cfg.SpoolMaxBytes)
	}
	if err := os.MkdirAll(cfg.SpoolDir, 0o750); err != nil {
		return nil, fmt.Errorf("buffer: spool: %w", err)
	}
	if err := b.restore(); err != nil {
		return nil, err
	}
	return b, nil
}

// restore queues the spool's records in the order they were written.
// Each is read once to check it and to learn its subject; only its size
// and path stay in memory.
func (b *Buffer) restore() error {
	des, err := os.ReadDir(b.cfg.SpoolDir)
	if err != nil {
		return fmt.Errorf("buffer: spool: %w", err)
	}
	type file struct {
		seq  uint64
		name string
	}
	var files []file
	for _, de := range des {
		name := de.Name()
		if de.Type().IsRegular() && strings.HasSuffix(name, spoolExt+".tmp") {
			_ = os.Remove(filepath.Join(b.cfg.SpoolDir, name)) // a write a crash cut short
			continue
		}
		if !de.Type().IsRegular() || !strings.HasSuffix(name, spoolExt) {
			continue
		}
		seq, err := strconv.ParseUint(strings.TrimSuffix(name, spoolExt), 10, 64)
		if err != nil {
			b.log.Warn("spool: ignoring a file not named by a sequence number", "file", filepath.Join(b.cfg.SpoolDir, name))
			continue
		}
		files = append(files, file{seq, name})
	}
	slices.SortFunc(files, func(x, y file) int { return compareSeq(x.seq, y.seq) })
	for _, f := range files {
		path := filepath.Join(b.cfg.SpoolDir, f.name)
		s, size, err := readRecord(path)
		if err != nil {
			b.log.Error("spool: skipping a record that does not decode", "file", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		b.seq = max(b.seq, f.seq)
		e := &entry{seq: f.seq, q: b.queue(s.Subject), size: size, samples: s.Samples(), path: path, onDisk: true}
		e.inQueue = e.q.entries.PushBack(e)
		e.where = b.disk.PushBack(e)
		b.diskBytes += size
	}
	if n := b.disk.Len(); n > 0 {
		b.log.Info("spool: restored scrapes from an earlier run", "scrapes", n, "bytes", b.diskBytes, "dir", b.cfg.SpoolDir)
	}
	b.enforce(time.Now())
	return nil
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func readRecord(path string) (*Scrape, int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	s, err := decodeRecord(data)
	if err != nil {
		return nil, 0, err
	}
	return s, int64(len(data)), nil
}

// queue returns the queue of subject, creating it. b.mu is held.
func (b *Buffer) queue(subject string) *queue {
	q, ok := b.queues[subject]
	if !ok {
		q = &queue{subject: subject, ready: make(chan struct{}, 1)}
		b.queues[subject] = q
	}
	return q
}

// Subjects lists the subjects that have a queue: those pushed to, and
// those restored from the spool.
func (b *Buffer) Subjects() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.queues))
	for s := range b.queues {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// Push queues s behind the earlier scrapes of its subject, then moves or
// drops the oldest scrapes until the limits hold again.
func (b *Buffer) Push(s *Scrape) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.seq++
	q := b.queue(s.Subject)
	e := &entry{seq: b.seq, q: q, size: s.Size(), samples: s.Samples(), scrape: s}
	e.inQueue = q.entries.PushBack(e)
	e.where = b.mem.PushBack(e)
	b.memBytes += e.size
	b.enforce(time.Now())
	wake(q)
}

func wake(q *queue) {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// enforce moves the oldest scrapes from memory to the spool, and drops the
// oldest, until both limits hold. b.mu is held.
func (b *Buffer) enforce(now time.Time) {
	for b.memBytes > b.cfg.MaxBytes && b.mem.Len() > 0 {
		e := b.mem.Front().Value.(*entry)
		if b.cfg.SpoolDir == "" || !b.spill(e) {
			b.drop(e, now)
		}
	}
	for b.diskBytes > b.cfg.SpoolMaxBytes && b.disk.Len() > 0 {
		b.drop(b.disk.Front().Value.(*entry), now)
	}
}

// spill writes e, held in memory, to the spool and moves it there, or
// reports false. b.mu is held.
func (b *Buffer) spill(e *entry) bool {
	path := b.spoolPath(e.seq)
	size, err := writeRecord(path, e.scrape)
	if err != nil {
		// A full or read-only disk fails every write: log it now and then.
		if now := time.Now(); now.Sub(b.spoolErrLogged) >= dropLogEvery {
			b.spoolErrLogged = now
			b.log.Error("spool: cannot write a scrape; dropping it", "file", path, "err", err)
		}
		return false
	}
	b.mem.Remove(e.where)
	b.memBytes -= e.size
	e.path, e.size, e.scrape, e.onDisk = path, size, nil, true
	e.where = insertBySeq(&b.disk, e)
	b.diskBytes += e.size
	return true
}

func (b *Buffer) spoolPath(seq uint64) string {
	return filepath.Join(b.cfg.SpoolDir, fmt.Sprintf("%020d%s", seq, spoolExt))
}

// writeRecord writes s to path through a temporary file and a rename, so
// that a crash leaves either the whole record or none.
func writeRecord(path string, s *Scrape) (int64, error) {
	data := appendRecord(make([]byte, 0, s.Size()), s)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		_ = os.Remove(tmp)
		return 0, err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return 0, err
	}
	return int64(len(data)), nil
}

// drop removes e for good and counts it. A scrape being published is
// only marked: it is counted as dropped if the attempt fails, and not if
// it succeeds, since then it did arrive. b.mu is held.
func (b *Buffer) drop(e *entry, now time.Time) {
	b.unlist(e)
	if e.path != "" {
		_ = os.Remove(e.path)
	}
	if e.taken {
		e.gone = true
		return
	}
	e.q.entries.Remove(e.inQueue)
	b.countDrop(e, now)
}

func (b *Buffer) countDrop(e *entry, now time.Time) {
	if b.hooks.Dropped != nil {
		b.hooks.Dropped(e.q.subject, e.samples)
	}
	b.drops.add(now, e.samples, b.cfg)
}

// unlist takes e out of the memory or spool list, and out of the limits.
// b.mu is held.
func (b *Buffer) unlist(e *entry) {
	if e.where == nil {
		return
	}
	if e.onDisk {
		b.disk.Remove(e.where)
		b.diskBytes -= e.size
	} else {
		b.mem.Remove(e.where)
		b.memBytes -= e.size
	}
	e.where = nil
}

// insertBySeq keeps l ordered by sequence.
func insertBySeq(l *list.List, e *entry) *list.Element {
	for el := l.Back(); el != nil; el = el.Prev() {
		if el.Value.(*entry).seq < e.seq {
			return l.InsertAfter(e, el)
		}
	}
	return l.PushFront(e)
}

// Pending is a scrape taken from the buffer: Done when published, Requeue
// when not.
type Pending struct {
	Scrape *Scrape
	e      *entry
}

// Next takes the oldest scrape of subject, waiting for one until ctx ends.
// Once ctx has ended it still returns what is queued, without waiting, so
// that a stopping sender can drain its queue.
// A taken scrape still counts against the limits, and if it becomes the
// oldest to drop while it is being published, a failed attempt drops it.
func (b *Buffer) Next(ctx context.Context, subject string) (*Pending, error) {
	for {
		p, ready, err := b.take(subject)
		if p != nil || err != nil {
			return p, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ready:
		}
	}
}

// take takes the oldest scrape of subject, or returns nil and the channel
// that says when its queue may have one. The queue is looked up each time:
// Forget may have replaced it.
func (b *Buffer) take(subject string) (*Pending, <-chan struct{}, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	q := b.queue(subject)
	for {
		if b.closed {
			return nil, nil, ErrClosed
		}
		front := q.entries.Front()
		if front == nil {
			return nil, q.ready, nil
		}
		e := front.Value.(*entry)
		q.entries.Remove(front)
		e.inQueue = nil
		s := e.scrape
		if e.onDisk {
			var err error
			if s, _, err = readRecord(e.path); err != nil {
				b.log.Error("spool: skipping a record that does not decode", "file", e.path, "err", err)
				b.unlist(e)
				_ = os.Remove(e.path)
				continue
			}
		}
		e.taken = true
		q.taken++
		return &Pending{Scrape: s, e: e}, nil, nil
	}
}

// Done forgets a published scrape and removes its spool file.
func (b *Buffer) Done(p *Pending) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := p.e
	e.taken = false
	e.q.taken--
	b.unlist(e)
	if e.path != "" {
		_ = os.Remove(e.path)
	}
}

// Requeue puts a scrape that was not published back at the head of its
// queue, or drops it if it became the oldest to drop meanwhile.
func (b *Buffer) Requeue(p *Pending) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := p.e
	e.taken = false
	e.q.taken--
	if e.gone {
		b.countDrop(e, time.Now())
		return
	}
	if b.closed {
		// Close has flushed the spool; write this one too so that a
		// restart still has it.
		if !e.onDisk && b.cfg.SpoolDir != "" && !b.spill(e) {
			b.log.Error("spool: cannot write a scrape at exit; it is lost", "subject", e.q.subject)
		}
		return
	}
	e.inQueue = e.q.entries.PushFront(e)
	wake(e.q)
}

// Forget deletes the queue of subject if it holds no scrape and none of
// its scrapes is being published, and reports whether the subject is gone
// from the buffer. A collector calls it as the sender of a target that
// went away ends, so that the queues of nodes long gone do not add up.
// A later Push or Next of the subject makes a new queue.
func (b *Buffer) Forget(subject string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	q, ok := b.queues[subject]
	if !ok {
		return true
	}
	if q.entries.Len() > 0 || q.taken > 0 {
		return false
	}
	delete(b.queues, subject)
	wake(q) // a Next waiting on it looks the subject up again
	return true
}

// Stats is what a buffer holds now.
type Stats struct {
	MemoryBytes, MemoryScrapes int64
	SpoolBytes, SpoolScrapes   int64
}

// Stats reports what the buffer holds, scrapes being published included.
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{
		MemoryBytes: b.memBytes, MemoryScrapes: int64(b.mem.Len()),
		SpoolBytes: b.diskBytes, SpoolScrapes: int64(b.disk.Len()),
	}
}

// Close ends every Next and, with a spool, writes the scrapes still in
// memory to it, within its limit, so that the next process publishes them.
// Call it once the goroutines taking scrapes have settled theirs.
func (b *Buffer) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	for _, q := range b.queues {
		wake(q)
	}
	if b.cfg.SpoolDir == "" {
		if n := b.mem.Len(); n > 0 {
			b.log.Warn("buffer: scrapes not published are lost at exit (no spool_dir)", "scrapes", n, "bytes", b.memBytes)
		}
		return nil
	}
	var errs []error
	for b.mem.Len() > 0 {
		e := b.mem.Front().Value.(*entry)
		if !b.spill(e) {
			errs = append(errs, fmt.Errorf("buffer: spool %s: cannot write scrape %d of %s", b.cfg.SpoolDir, e.seq, e.q.subject))
			b.unlist(e)
		}
	}
	b.enforce(time.Now())
	return errors.Join(errs...)
}

// dropLog logs dropped scrapes at most once per dropLogEvery.
type dropLog struct {
	log              *slog.Logger
	last             time.Time
	scrapes, samples int
}

func (d *dropLog) add(now time.Time, samples int, cfg Config) {
	d.scrapes++
	d.samples += samples
	if now.Sub(d.last) < dropLogEvery {
		return
	}
	d.log.Warn("buffer full: dropped the oldest scrapes",
		"scrapes", d.scrapes, "samples", d.samples, "max_bytes", cfg.MaxBytes,
		"spool_dir", cfg.SpoolDir, "spool_max_bytes", cfg.SpoolMaxBytes)
	d.last, d.scrapes, d.samples = now, 0, 0
}
