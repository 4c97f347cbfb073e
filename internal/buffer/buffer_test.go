package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weirmetrics/weir/proto"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func subjectOf(node string) string {
	return proto.Subject{Stage: proto.StageRaw, Cluster: "c", Node: node, Source: proto.SourceCadvisor}.String()
}

// scrape makes a scrape of subject at millis with one payload of size
// bytes that names them, so that a test can tell scrapes apart.
func scrape(subject string, millis int64, size int) *Scrape {
	p := []byte(fmt.Sprintf("%s@%d;", subject, millis))
	for len(p) < size {
		p = append(p, '.')
	}
	return &Scrape{Subject: subject, Encoding: "block1+zstd", ScrapeMillis: millis, Chunks: []proto.Chunk{{Payload: p, Samples: 10}}}
}

// drain takes every scrape of subject now waiting and settles it as done.
func drain(t *testing.T, b *Buffer, subject string) []int64 {
	t.Helper()
	var got []int64
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		p, err := b.Next(ctx, subject)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%s@%d;", subject, p.Scrape.ScrapeMillis); !strings.HasPrefix(string(p.Scrape.Chunks[0].Payload), want) {
			t.Fatalf("scrape %d of %s carries payload %.40q", p.Scrape.ScrapeMillis, subject, p.Scrape.Chunks[0].Payload)
		}
		got = append(got, p.Scrape.ScrapeMillis)
		b.Done(p)
	}
}

func millis(from, to int64) []int64 {
	var out []int64
	for m := from; m <= to; m++ {
		out = append(out, m)
	}
	return out
}

func equal(a, b []int64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

func TestOrderPerSubject(t *testing.T) {
	b, err := Open(Config{MaxBytes: 1 << 20}, nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, c := subjectOf("a"), subjectOf("b")
	for m := int64(1); m <= 5; m++ {
		b.Push(scrape(a, m, 100))
		b.Push(scrape(c, 100+m, 100))
	}
	// A scrape that failed goes back ahead of the newer ones.
	p, err := b.Next(t.Context(), a)
	if err != nil || p.Scrape.ScrapeMillis != 1 {
		t.Fatalf("Next = %v, %v; want scrape 1", p, err)
	}
	b.Requeue(p)
	if got := drain(t, b, a); !equal(got, millis(1, 5)) {
		t.Fatalf("subject a: %v", got)
	}
	if got := drain(t, b, c); !equal(got, millis(101, 105)) {
		t.Fatalf("subject b: %v", got)
	}
	if s := b.Stats(); s != (Stats{}) {
		t.Fatalf("Stats after draining = %+v", s)
	}
}

// TestForgetOnlyAnEmptyQueue: Forget deletes a subject's queue only when
// nothing of it waits or is being published, and a subject forgotten, or
// forgotten while a Next waits on it, is pushed to and taken from again.
func TestForgetOnlyAnEmptyQueue(t *testing.T) {
	b, err := Open(Config{MaxBytes: 1 << 20}, nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, other := subjectOf("a"), subjectOf("other")
	b.Push(scrape(other, 1, 100))
	b.Push(scrape(a, 1, 100))
	if b.Forget(a) {
		t.Fatal("Forget deleted a queue holding a scrape")
	}
	p, err := b.Next(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	if b.Forget(a) {
		t.Fatal("Forget deleted a queue whose scrape is being published")
	}
	b.Requeue(p) // not published: it waits again
	if b.Forget(a) {
		t.Fatal("Forget deleted a queue holding a requeued scrape")
	}
	if got := drain(t, b, a); !equal(got, millis(1, 1)) {
		t.Fatalf("subject a: %v", got)
	}
	if !b.Forget(a) || !b.Forget(a) {
		t.Fatal("Forget kept an empty queue, or failed on a forgotten one")
	}
	if got := b.Subjects(); !slices.Equal(got, []string{other}) {
		t.Fatalf("Subjects after Forget = %v, want %v alone", got, other)
	}

	// A Next waiting on a queue that is forgotten still sees what comes.
	got := make(chan int64, 1)
	go func() {
		p, err := b.Next(t.Context(), a)
		if err != nil {
			got <- -1
			return
		}
		b.Done(p)
		got <- p.Scrape.ScrapeMillis
	}()
	time.Sleep(10 * time.Millisecond) // most likely waiting by now; the test holds either way
	b.Forget(a)
	b.Push(scrape(a, 2, 100))
	select {
	case m := <-got:
		if m != 2 {
			t.Fatalf("Next after Forget took %d, want 2", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a Next waiting on a forgotten queue missed the next scrape")
	}
}

// TestDropsOldestFirst fills memory without a spool: the oldest scrapes of
// every subject go first, each counted once.
func TestDropsOldestFirst(t *testing.T) {
	var dropped []string
	size := scrape(subjectOf("a"), 1, 1000).Size()
	b, err := Open(Config{MaxBytes: 4 * size}, nil, Hooks{Dropped: func(subject string, samples int) {
		dropped = append(dropped, fmt.Sprintf("%s:%d", subject, samples))
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, c := subjectOf("a"), subjectOf("b")
	for m := int64(1); m <= 5; m++ {
		b.Push(scrape(a, m, 1000))
		b.Push(scrape(c, m, 1000))
	}
	if want := []string{a + ":10", c + ":10", a + ":10", c + ":10", a + ":10", c + ":10"}; fmt.Sprint(dropped) != fmt.Sprint(want) {
		t.Fatalf("dropped %v, want %v", dropped, want)
	}
	if s := b.Stats(); s.MemoryBytes > 4*size || s.MemoryScrapes != 4 {
		t.Fatalf("Stats = %+v, want 4 scrapes within %d bytes", s, 4*size)
	}
	if got := drain(t, b, a); !equal(got, millis(4, 5)) {
		t.Fatalf("subject a kept %v, want the newest two", got)
	}
	if got := drain(t, b, c); !equal(got, millis(4, 5)) {
		t.Fatalf("subject b kept %v, want the newest two", got)
	}
}

// TestSpoolSurvivesRestart fills memory so that the oldest scrapes go to
// the spool, closes (which spools the rest), and opens the directory again:
// everything comes back in order, and the spool's own limit drops the
// oldest.
func TestSpoolSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	size := scrape(subjectOf("a"), 1, 1000).Size()
	var dropped int
	cfg := Config{MaxBytes: 3 * size, SpoolDir: dir, SpoolMaxBytes: 1 << 20}
	b, err := Open(cfg, nil, Hooks{Dropped: func(string, int) { dropped++ }})
	if err != nil {
		t.Fatal(err)
	}
	a := subjectOf("a")
	for m := int64(1); m <= 10; m++ {
		b.Push(scrape(a, m, 1000))
	}
	if s := b.Stats(); s.MemoryScrapes != 3 || s.SpoolScrapes != 7 || dropped != 0 {
		t.Fatalf("Stats = %+v, dropped %d; want 3 in memory, 7 spooled", s, dropped)
	}
	// One is being published when the collector stops: it goes back.
	p, err := b.Next(t.Context(), a)
	if err != nil || p.Scrape.ScrapeMillis != 1 {
		t.Fatalf("Next = %v, %v", p, err)
	}
	b.Requeue(p)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b2, err := Open(cfg, nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if got := b2.Subjects(); len(got) != 1 || got[0] != a {
		t.Fatalf("Subjects after restart = %v", got)
	}
	b2.Push(scrape(a, 11, 1000)) // a scrape of the new run waits behind them
	if got := drain(t, b2, a); !equal(got, millis(1, 11)) {
		t.Fatalf("after restart: %v", got)
	}
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*")); len(left) != 0 {
		t.Fatalf("published scrapes left files: %v", left)
	}

	// The spool's limit: room for four records.
	rec := int64(len(appendRecord(nil, scrape(a, 1, 1000))))
	cfg.MaxBytes, cfg.SpoolMaxBytes = 1, 4*rec
	b3, err := Open(cfg, nil, Hooks{Dropped: func(string, int) { dropped++ }})
	if err != nil {
		t.Fatal(err)
	}
	defer b3.Close()
	for m := int64(1); m <= 6; m++ {
		b3.Push(scrape(a, m, 1000))
	}
	if s := b3.Stats(); dropped != 2 || s.SpoolBytes > cfg.SpoolMaxBytes || s.SpoolScrapes != 4 {
		t.Fatalf("dropped %d, Stats %+v; want 2 dropped and 4 spooled within %d bytes", dropped, s, cfg.SpoolMaxBytes)
	}
	if got := drain(t, b3, a); !equal(got, millis(3, 6)) {
		t.Fatalf("spool kept %v, want the newest four", got)
	}
}

// TestCorruptSpoolIsSkipped damages spool files in the ways a crash or a
// full disk does: each is reported and skipped, the others are published.
func TestCorruptSpoolIsSkipped(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{MaxBytes: 1, SpoolDir: dir, SpoolMaxBytes: 1 << 20}
	b, err := Open(cfg, nil, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	a := subjectOf("a")
	for m := int64(1); m <= 5; m++ {
		b.Push(scrape(a, m, 500))
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"+spoolExt))
	if len(files) != 5 {
		t.Fatalf("%d spool files, want 5", len(files))
	}
	truncate := func(p string) { data, _ := os.ReadFile(p); _ = os.WriteFile(p, data[:len(data)/2], 0o640) }
	flip := func(p string) { data, _ := os.ReadFile(p); data[len(data)/2] ^= 0x40; _ = os.WriteFile(p, data, 0o640) }
	truncate(files[1])
	flip(files[3])
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not mine"), 0o640); err != nil {
		t.Fatal(err)
	}
	halfWritten := filepath.Join(dir, "00000000000000000099"+spoolExt+".tmp")
	if err := os.WriteFile(halfWritten, []byte(recordMagic), 0o640); err != nil {
		t.Fatal(err)
	}

	var logs strings.Builder
	b2, err := Open(cfg, slog.New(slog.NewTextHandler(&logs, nil)), Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	if got := drain(t, b2, a); !equal(got, []int64{1, 3, 5}) {
		t.Fatalf("published %v, want 1, 3 and 5", got)
	}
	for _, f := range []string{files[1], files[3]} {
		if !strings.Contains(logs.String(), filepath.Base(f)) {
			t.Errorf("%s not reported; logs:\n%s", filepath.Base(f), logs.String())
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.txt")); err != nil {
		t.Errorf("a file that is not a record was touched: %v", err)
	}
	if _, err := os.Stat(halfWritten); !os.IsNotExist(err) {
		t.Errorf("a write cut short by a crash was left behind: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"no memory":       {MaxBytes: 0},
		"no spool room":   {MaxBytes: 1, SpoolDir: t.TempDir()},
		"spool is a file": {MaxBytes: 1, SpoolDir: notDir, SpoolMaxBytes: 1},
	} {
		if _, err := Open(cfg, nil, Hooks{}); err == nil {
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

// TestSpoolWriteFailureDrops removes the spool directory under the buffer,
// as a lost volume would: the scrapes that cannot be spooled are dropped
// and counted, and the buffer goes on.
func TestSpoolWriteFailureDrops(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	size := scrape(subjectOf("a"), 1, 1000).Size()
	dropped := 0
	b, err := Open(Config{MaxBytes: 2 * size, SpoolDir: dir, SpoolMaxBytes: 1 << 20}, nil, Hooks{Dropped: func(string, int) { dropped++ }})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	a := subjectOf("a")
	for m := int64(1); m <= 5; m++ {
		b.Push(scrape(a, m, 1000))
	}
	if dropped != 3 {
		t.Fatalf("dropped %d, want the 3 that could not be spooled", dropped)
	}
	if got := drain(t, b, a); !equal(got, millis(4, 5)) {
		t.Fatalf("kept %v, want the newest two", got)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close with nothing left to spool: %v", err)
	}
}
