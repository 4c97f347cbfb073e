package deploy

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// link is a TCP proxy standing for the network between an edge and the
// hub: Cut drops every connection and refuses new ones until Restore.
type link struct {
	t      *testing.T
	addr   string // where the edge dials
	target string // the hub's leaf node port

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	wg    sync.WaitGroup
}

func newLink(t *testing.T, target string) *link {
	t.Helper()
	l := &link{t: t, target: target}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.addr = ln.Addr().String()
	l.serve(ln)
	t.Cleanup(l.Cut)
	return l
}

func (l *link) serve(ln net.Listener) {
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", l.target)
			if err != nil {
				in.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, in, out)
			l.mu.Unlock()
			l.wg.Add(2)
			go l.pipe(in, out)
			go l.pipe(out, in)
		}
	}()
}

func (l *link) pipe(dst, src net.Conn) {
	defer l.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// Cut closes the listener and every connection, and waits for the copies.
func (l *link) Cut() {
	l.mu.Lock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
	l.mu.Unlock()
	l.wg.Wait()
}

// Restore listens again on the same address.
func (l *link) Restore() {
	l.t.Helper()
	ln, err := net.Listen("tcp", l.addr)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		l.t.Fatalf("restore link on %s: %v", l.addr, err)
	}
	l.serve(ln)
}
