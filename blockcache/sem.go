package blockcache

import (
	"container/list"
	"context"
	"sync"
)

// gate bounds the GETs in flight and serves urgent waiters (reads) before
// background ones (prefetch). A background waiter becomes urgent when a
// reader starts waiting on its fetch, so a trainer's read jumps the queue
// even when a prefetch queued the part first.
type gate struct {
	mu     sync.Mutex // guards free, urgent and background
	free   int
	urgent list.List // of *waiter
	bg     list.List // of *waiter
}

// waiter is one goroutine queued for a token. elem and queue are guarded
// by gate.mu; queue is nil once the token is handed over.
type waiter struct {
	ready chan struct{} // closed when the token is handed over
	elem  *list.Element
	queue *list.List
}

func newGate(n int) *gate {
	return &gate{free: n}
}

// acquire waits for a token. A waiter queued as background moves to the
// urgent queue when promote is closed. It fails only when ctx ends.
func (g *gate) acquire(ctx context.Context, urgent bool, promote <-chan struct{}) error {
	g.mu.Lock()
	if g.free > 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	w := &waiter{ready: make(chan struct{}), queue: &g.bg}
	if urgent {
		w.queue = &g.urgent
	}
	w.elem = w.queue.PushBack(w)
	g.mu.Unlock()
	for {
		select {
		case <-w.ready:
			return nil
		case <-promote:
			g.mu.Lock()
			// Not if the token came meanwhile (queue nil): queued again,
			// the waiter would be handed a second one.
			if w.queue == &g.bg {
				g.bg.Remove(w.elem)
				w.queue = &g.urgent
				w.elem = g.urgent.PushBack(w)
			}
			g.mu.Unlock()
			promote = nil
		case <-ctx.Done():
			g.mu.Lock()
			defer g.mu.Unlock()
			if w.queue == nil {
				// Handed a token as we gave up: pass it on.
				g.releaseLocked()
			} else {
				w.queue.Remove(w.elem)
			}
			return ctx.Err()
		}
	}
}

// release returns a token, handing it to the first urgent waiter, else the
// first background one.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseLocked()
}

func (g *gate) releaseLocked() {
	for _, q := range []*list.List{&g.urgent, &g.bg} {
		if e := q.Front(); e != nil {
			w := q.Remove(e).(*waiter)
			w.queue = nil
			close(w.ready)
			return
		}
	}
	g.free++
}
