package index

import (
	"context"
	"errors"
	iofs "io/fs"
	"sync/atomic"
	"testing"
	"time"
)

// Within one TTL past expiry, reads are answered from the old listing while
// one background LIST runs; the first read after it ends sees S3's answer.
func TestCatalogServesStaleWhileRevalidating(t *testing.T) {
	fake, c, clk := listedThenChanged(t)
	ctx := context.Background()
	fake.entered = make(chan struct{}, 10)
	fake.gate = make(chan struct{})
	clk.advance(90 * time.Second)

	// The LIST is held at the gate: these return anyway, from the old listing.
	if _, err := c.Lookup(ctx, "train", "a.npz"); err != nil {
		t.Fatalf("stale Lookup: %v", err)
	}
	<-fake.entered
	if _, err := c.Lookup(ctx, "train", "c.npz"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("stale Lookup of a name only S3 has yet: %v, want ErrNotExist", err)
	}
	if es, err := c.ReadDir(ctx, "train"); err != nil || len(es) != 2 {
		t.Errorf("stale ReadDir = %v, %v; want the 2 old entries", names(es), err)
	}
	gen, err := c.Generation(ctx, "train")
	if err != nil || gen != 1 {
		t.Errorf("stale Generation = %d, %v; want 1", gen, err)
	}
	close(fake.gate)
	c.wg.Wait() // the background refresh has stored its listing

	if _, err := c.Lookup(ctx, "train", "c.npz"); err != nil {
		t.Errorf("after the refresh: %v", err)
	}
	if _, err := c.Lookup(ctx, "train", "a.npz"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("after the refresh a removed file is found: %v", err)
	}
	if gen, _ := c.Generation(ctx, "train"); gen != 2 {
		t.Errorf("generation after the refresh %d, want 2", gen)
	}
	if got := fake.calls.Load(); got != 2 {
		t.Errorf("%d listings, want 2 (first use, one background refresh)", got)
	}
}

// firstThenBlock answers its first List and blocks every later one until
// its context ends.
type firstThenBlock struct {
	calls     atomic.Int64
	entered   chan struct{}
	cancelled atomic.Bool
}

func (l *firstThenBlock) List(ctx context.Context, prefix string) (ListResult, error) {
	if l.calls.Add(1) == 1 {
		return ListResult{Objects: []Object{{Key: prefix + "a", Size: 1}}}, nil
	}
	l.entered <- struct{}{}
	<-ctx.Done()
	l.cancelled.Store(true)
	return ListResult{}, ctx.Err()
}

// Close cancels a background refresh and returns only once it ended.
func TestCatalogCloseStopsBackgroundRefresh(t *testing.T) {
	l := &firstThenBlock{entered: make(chan struct{}, 1)}
	c, clk := newTestCatalog(t, l, time.Minute)
	ctx := context.Background()
	if _, err := c.Lookup(ctx, "", "a"); err != nil {
		t.Fatal(err)
	}
	clk.advance(time.Minute)
	if _, err := c.Lookup(ctx, "", "a"); err != nil {
		t.Fatalf("stale Lookup: %v", err)
	}
	<-l.entered
	c.Close()
	if !l.cancelled.Load() {
		t.Error("Close returned before the background LIST saw its cancellation")
	}
	// Stale reads after Close still answer from the store, and start nothing.
	if _, err := c.Lookup(ctx, "", "a"); err != nil {
		t.Errorf("stale Lookup after Close: %v", err)
	}
	if got := l.calls.Load(); got != 2 {
		t.Errorf("%d listings, want 2", got)
	}
}
