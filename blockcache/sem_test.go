package blockcache

import (
	"context"
	"errors"
	"runtime"
	"testing"
)

// queued waits until g has n waiters queued.
func queued(g *gate) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.urgent.Len() + g.bg.Len()
}

func TestGateServesUrgentFirst(t *testing.T) {
	g := newGate(1)
	ctx := context.Background()
	if err := g.acquire(ctx, false, nil); err != nil {
		t.Fatal(err)
	}
	order := make(chan string, 3)
	promote := make(chan struct{})
	start := func(name string, urgent bool, p <-chan struct{}) {
		n := queued(g)
		go func() {
			if err := g.acquire(ctx, urgent, p); err != nil {
				t.Error(err)
			}
			order <- name
			g.release()
		}()
		for queued(g) == n {
			// wait for the goroutine to queue; it does so without blocking
			// on anything else, so this ends promptly
			yieldOnce()
		}
	}
	start("bg1", false, nil)
	start("bg2", false, promote)
	start("urgent", true, nil)
	close(promote) // bg2 jumps ahead of bg1
	g.mu.Lock()
	promoted := g.urgent.Len() == 2
	g.mu.Unlock()
	for !promoted {
		yieldOnce()
		g.mu.Lock()
		promoted = g.urgent.Len() == 2
		g.mu.Unlock()
	}
	g.release()
	got := []string{<-order, <-order, <-order}
	want := []string{"urgent", "bg2", "bg1"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
}

func TestGateCancelledWaiterLeavesQueue(t *testing.T) {
	g := newGate(1)
	if err := g.acquire(context.Background(), true, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- g.acquire(ctx, false, nil) }()
	for queued(g) == 0 {
		yieldOnce()
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled acquire: %v", err)
	}
	if queued(g) != 0 {
		t.Fatal("cancelled waiter still queued")
	}
	g.release()
	if g.free != 1 {
		t.Fatalf("free = %d after release, want 1", g.free)
	}
}

func yieldOnce() { runtime.Gosched() }

// TestGatePromotedAfterHandedToken: a background waiter promoted just as
// it is handed a token keeps that one token: it is not queued again (which
// would hand it a second token later and close its channel twice).
func TestGatePromotedAfterHandedToken(t *testing.T) {
	for range 200 { // the waiter sees "promoted" before "ready" half the time
		g := newGate(1)
		if err := g.acquire(context.Background(), true, nil); err != nil {
			t.Fatal(err)
		}
		promote := make(chan struct{})
		done := make(chan error)
		go func() { done <- g.acquire(context.Background(), false, promote) }()
		for queued(g) == 0 {
			yieldOnce()
		}
		g.mu.Lock()
		g.releaseLocked() // hands the token to the waiter
		close(promote)    // and promotes it before it noticed
		g.mu.Unlock()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := queued(g); n != 0 || g.free != 0 {
			t.Fatalf("after the waiter got its token: %d queued, %d free; want 0 and 0", n, g.free)
		}
	}
}
