package collector

import (
	"context"
	"sync"

	"github.com/weirmetrics/weir/internal/buffer"
)

// pool runs one loop per target and follows the target set as discovery
// changes it, as Prometheus's scrapePool.sync does: a target that is gone
// has its loop stopped, with staleness markers for its series, and sync
// waits for it, so that an old loop never publishes after its successor
// started. Only Run's goroutine uses a pool.
type pool struct {
	c       *Collector
	buf     *buffer.Buffer
	senders *senderSet
	running map[string]*running // by subject: node and source
}

type running struct {
	l      *loop
	url    string
	cancel context.CancelFunc
	done   chan struct{}
}

func newPool(c *Collector, buf *buffer.Buffer, senders *senderSet) *pool {
	return &pool{c: c, buf: buf, senders: senders, running: map[string]*running{}}
}

// sync makes the running loops those of loops: new ones start, gone ones
// stop with staleness markers, a target whose URL changed restarts.
func (p *pool) sync(ctx context.Context, loops []*loop) {
	want := make(map[string]*loop, len(loops))
	for _, l := range loops {
		want[l.subjectText] = l
	}
	var stopping []*running
	for key, r := range p.running {
		if l, ok := want[key]; !ok || l.target.URL.String() != r.url {
			r.l.gone.Store(true)
			r.cancel()
			stopping = append(stopping, r)
			delete(p.running, key)
		}
	}
	for _, r := range stopping {
		<-r.done
		if _, ok := want[r.l.subjectText]; !ok {
			// Its staleness markers are queued: the sender ends once it
			// has published them.
			p.senders.retire(r.l.subjectText)
		}
	}
	for key, l := range want {
		if _, ok := p.running[key]; ok {
			continue
		}
		l.buf = p.buf
		p.senders.start(l)
		lctx, cancel := context.WithCancel(ctx)
		r := &running{l: l, url: l.target.URL.String(), cancel: cancel, done: make(chan struct{})}
		p.running[key] = r
		go func() {
			defer close(r.done)
			l.run(lctx)
		}()
	}
}

// stopAll stops every loop, without staleness markers (the collector is
// stopping, its targets are not gone), and waits for them.
func (p *pool) stopAll() {
	var wg sync.WaitGroup
	for key, r := range p.running {
		r.cancel()
		wg.Go(func() { <-r.done })
		delete(p.running, key)
	}
	wg.Wait()
}
