package index

import (
	"context"
	"errors"
	"fmt"
	iofs "io/fs"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeLister answers List from a fixed map and counts calls. If gate is
// set, each call reports on entered and then waits for gate to close.
type fakeLister struct {
	mu      sync.Mutex
	levels  map[string]ListResult // guarded by mu
	err     error                 // guarded by mu; returned by List if set
	calls   atomic.Int64
	entered chan struct{} // nil, or told when a call starts
	gate    chan struct{} // nil, or closed to let calls finish
}

// ListCalls returns how many Lister.List calls c has made.
func (c *Catalog) ListCalls() int64 { return c.calls.Load() }

func (f *fakeLister) List(ctx context.Context, prefix string) (ListResult, error) {
	f.calls.Add(1)
	if f.entered != nil {
		f.entered <- struct{}{}
	}
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return ListResult{}, f.err
	}
	return f.levels[prefix], nil
}

// ListPages hands List's answer over as S3 would, one object or common
// prefix per page, so that every test of the Catalog runs the paged merge
// that the mount uses.
func (f *fakeLister) ListPages(ctx context.Context, prefix string, page func(ListResult) error) error {
	res, err := f.List(ctx, prefix)
	if err != nil {
		return err
	}
	return (&pagedLister{res: res, size: 1}).ListPages(ctx, prefix, page)
}

func (f *fakeLister) set(prefix string, res ListResult) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.levels[prefix] = res
}

// clock is an injectable time source.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// dataset is a small tree under the mount prefix "ds/".
func dataset() *fakeLister {
	return &fakeLister{levels: map[string]ListResult{
		"ds/": {
			Objects:  []Object{{Key: "ds/", Size: 0}, {Key: "ds/README", Size: 5, ETag: "r1"}},
			Prefixes: []string{"ds/train/", "ds/dev/"},
		},
		"ds/train/": {Objects: []Object{
			{Key: "ds/train/a.npz", Size: 100, ETag: "a1"},
			{Key: "ds/train/b.npz", Size: 200, ETag: "b1"},
		}},
	}}
}

func newTestCatalog(t *testing.T, l Lister, ttl time.Duration) (*Catalog, *clock) {
	t.Helper()
	clk := &clock{now: time.Date(2025, 9, 19, 0, 0, 0, 0, time.UTC)}
	c := NewCatalog(openTest(t), l, CatalogOptions{Prefix: "ds/", TTL: ttl, Now: clk.Now})
	return c, clk
}

func names(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, fmt.Sprintf("%s:%v", e.Name, e.IsDir))
	}
	return out
}

func TestCatalogReadDirAndLookup(t *testing.T) {
	fake := dataset()
	c, _ := newTestCatalog(t, fake, time.Hour)
	ctx := context.Background()

	root, err := c.ReadDir(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(root), []string{"README:false", "dev:true", "train:true"}; !slices.Equal(got, want) {
		t.Errorf("ReadDir(root) = %v, want %v", got, want)
	}
	if root[0].Object.ETag != "r1" || root[0].Object.Size != 5 {
		t.Errorf("README object %+v", root[0].Object)
	}
	e, err := c.Lookup(ctx, "train", "b.npz")
	if err != nil || e.IsDir || e.Object.Key != "ds/train/b.npz" || e.Object.Size != 200 {
		t.Errorf("Lookup(train, b.npz) = %+v, %v", e, err)
	}
	e, err = c.Lookup(ctx, "", "train")
	if err != nil || !e.IsDir || e.Name != "train" {
		t.Errorf("Lookup(root, train) = %+v, %v", e, err)
	}
	if calls := fake.calls.Load(); calls != 2 || c.ListCalls() != 2 {
		t.Errorf("Lister calls %d, ListCalls %d; want 2 (root and train)", calls, c.ListCalls())
	}
}

// The hard promise: a fresh listing answers everything, including "no such
// name", with zero S3 requests.
func TestCatalogFreshListingMakesNoRequests(t *testing.T) {
	fake := dataset()
	c, clk := newTestCatalog(t, fake, time.Minute)
	ctx := context.Background()
	if err := c.Refresh(ctx, "train"); err != nil {
		t.Fatal(err)
	}
	before := fake.calls.Load()
	clk.advance(59 * time.Second)
	for range 10 {
		if _, err := c.ReadDir(ctx, "train"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Lookup(ctx, "train", "a.npz"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Lookup(ctx, "train", "missing.npz"); !errors.Is(err, iofs.ErrNotExist) {
			t.Fatalf("Lookup of a missing name: err = %v, want ErrNotExist", err)
		}
	}
	if got := fake.calls.Load() - before; got != 0 {
		t.Errorf("%d S3 listings for reads of a fresh listing, want 0", got)
	}
}

// listedThenChanged returns a Catalog with a TTL of one minute over
// dataset() that has listed train, after which S3's train holds only c.npz.
func listedThenChanged(t *testing.T) (*fakeLister, *Catalog, *clock) {
	t.Helper()
	fake := dataset()
	c, clk := newTestCatalog(t, fake, time.Minute)
	if _, err := c.ReadDir(context.Background(), "train"); err != nil {
		t.Fatal(err)
	}
	fake.set("ds/train/", ListResult{Objects: []Object{{Key: "ds/train/c.npz", Size: 1}}})
	return fake, c, clk
}

// Past the stale bound (one further TTL) a read waits for the LIST again.
func TestCatalogExpiredListingListsOnce(t *testing.T) {
	fake, c, clk := listedThenChanged(t)
	ctx := context.Background()
	// Past the TTL and the further TTL a stale listing is served for.
	clk.advance(2 * time.Minute)

	if _, err := c.Lookup(ctx, "train", "c.npz"); err != nil {
		t.Errorf("new file not found after the TTL: %v", err)
	}
	if _, err := c.Lookup(ctx, "train", "a.npz"); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("removed file still found after the TTL: %v", err)
	}
	if got := fake.calls.Load(); got != 2 {
		t.Errorf("%d listings, want 2 (first use, one refresh after expiry)", got)
	}
}

func TestCatalogIndefiniteTTLNeverRefreshes(t *testing.T) {
	fake := dataset()
	c, clk := newTestCatalog(t, fake, -1)
	ctx := context.Background()
	if _, err := c.ReadDir(ctx, ""); err != nil {
		t.Fatal(err)
	}
	clk.advance(10 * 365 * 24 * time.Hour)
	if _, err := c.Lookup(ctx, "", "README"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(ctx, "", "nope"); !errors.Is(err, iofs.ErrNotExist) {
		t.Fatal(err)
	}
	if got := fake.calls.Load(); got != 1 {
		t.Errorf("%d listings with an indefinite TTL, want 1", got)
	}
}

func TestCatalogZeroTTLAlwaysLists(t *testing.T) {
	fake := dataset()
	c, _ := newTestCatalog(t, fake, 0)
	for range 3 {
		if _, err := c.ReadDir(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := fake.calls.Load(); got != 3 {
		t.Errorf("%d listings with TTL 0, want 3", got)
	}
}

// A listing from the future means the clock went back; it is not trusted.
func TestCatalogClockGoingBackRelists(t *testing.T) {
	fake := dataset()
	c, clk := newTestCatalog(t, fake, time.Hour)
	if _, err := c.ReadDir(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	clk.advance(-time.Second)
	if _, err := c.ReadDir(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if got := fake.calls.Load(); got != 2 {
		t.Errorf("%d listings, want 2", got)
	}
}

func TestCatalogConcurrentReadDirShareOneListing(t *testing.T) {
	fake := dataset()
	fake.entered = make(chan struct{}, 100)
	fake.gate = make(chan struct{})
	c, _ := newTestCatalog(t, fake, time.Hour)

	const readers = 20
	var wg sync.WaitGroup
	results := make(chan []Entry, readers)
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			es, err := c.ReadDir(context.Background(), "train")
			if err != nil {
				errs <- err
				return
			}
			results <- es
		})
	}
	<-fake.entered // one listing is in flight; hold it while others arrive
	close(fake.gate)
	wg.Wait()
	close(errs)
	close(results)
	for err := range errs {
		t.Fatal(err)
	}
	for es := range results {
		if got := names(es); !slices.Equal(got, []string{"a.npz:false", "b.npz:false"}) {
			t.Errorf("ReadDir = %v", got)
		}
	}
	// Readers that joined the flight shared it; readers that came after it
	// ended found the stored listing fresh. Either way: one listing.
	if got := fake.calls.Load(); got != 1 {
		t.Errorf("%d listings for %d concurrent readers, want 1", got, readers)
	}
}

func TestCatalogInvalidateAndRefreshForceListing(t *testing.T) {
	fake := dataset()
	c, _ := newTestCatalog(t, fake, -1)
	ctx := context.Background()
	if _, err := c.ReadDir(ctx, "train"); err != nil {
		t.Fatal(err)
	}
	fake.set("ds/train/", ListResult{Objects: []Object{{Key: "ds/train/new", Size: 1}}})

	if err := c.Refresh(ctx, "train"); err != nil {
		t.Fatal(err)
	}
	if got := fake.calls.Load(); got != 2 {
		t.Errorf("after Refresh: %d listings, want 2", got)
	}
	if _, err := c.Lookup(ctx, "train", "new"); err != nil {
		t.Errorf("Refresh did not store the new listing: %v", err)
	}

	if err := c.Invalidate("train"); err != nil {
		t.Fatal(err)
	}
	if got := fake.calls.Load(); got != 2 {
		t.Errorf("Invalidate itself listed: %d listings", got)
	}
	if _, err := c.ReadDir(ctx, "train"); err != nil {
		t.Fatal(err)
	}
	if got := fake.calls.Load(); got != 3 {
		t.Errorf("after Invalidate and ReadDir: %d listings, want 3", got)
	}
}

func TestCatalogListerErrorIsWrappedAndNotStored(t *testing.T) {
	fake := dataset()
	boom := errors.New("s3 is down")
	fake.err = boom
	c, _ := newTestCatalog(t, fake, time.Hour)
	ctx := context.Background()
	if _, err := c.ReadDir(ctx, ""); !errors.Is(err, boom) {
		t.Errorf("ReadDir err = %v, want it to wrap the Lister's", err)
	}
	if _, err := c.Lookup(ctx, "", "README"); !errors.Is(err, boom) {
		t.Errorf("Lookup err = %v, want it to wrap the Lister's", err)
	}
	fake.mu.Lock()
	fake.err = nil
	fake.mu.Unlock()
	if _, err := c.Lookup(ctx, "", "README"); err != nil {
		t.Errorf("after S3 recovered: %v", err)
	}
}

func TestCatalogRefusesBadPaths(t *testing.T) {
	fake := dataset()
	c, _ := newTestCatalog(t, fake, time.Hour)
	ctx := context.Background()
	for _, dir := range []string{"/train", "train/", "a//b", "..", "a/./b"} {
		if _, err := c.ReadDir(ctx, dir); !errors.Is(err, iofs.ErrInvalid) {
			t.Errorf("ReadDir(%q) err = %v, want ErrInvalid", dir, err)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", "a\x00"} {
		if _, err := c.Lookup(ctx, "", name); !errors.Is(err, iofs.ErrNotExist) {
			t.Errorf("Lookup(%q) err = %v, want ErrNotExist", name, err)
		}
	}
	if got := fake.calls.Load(); got != 0 {
		t.Errorf("bad paths caused %d listings", got)
	}
}

// A caller that gives up returns at once with its context's error; the
// listing it started still completes and is stored for others.
func TestCatalogCancelledCallerDoesNotCancelListing(t *testing.T) {
	fake := dataset()
	fake.entered = make(chan struct{}, 10)
	fake.gate = make(chan struct{})
	c, _ := newTestCatalog(t, fake, time.Hour)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := c.ReadDir(ctx, ""); done <- err }()
	<-fake.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled ReadDir err = %v, want context.Canceled", err)
	}
	close(fake.gate)
	// The detached listing finishes and stores; a later reader joins it or
	// finds it stored, without a second listing.
	if _, err := c.Lookup(context.Background(), "", "README"); err != nil {
		t.Fatal(err)
	}
	if got := fake.calls.Load(); got != 1 {
		t.Errorf("%d listings, want 1", got)
	}
}

func TestCatalogReportsGoneObjects(t *testing.T) {
	l := dataset()
	var gone []Object
	c := NewCatalog(openTest(t), l, CatalogOptions{Prefix: "ds/", TTL: -1,
		OnGone: func(g []Object) { gone = append(gone, g...) }})
	ctx := context.Background()
	if _, err := c.ReadDir(ctx, "train"); err != nil {
		t.Fatal(err)
	}
	// a.npz is replaced, b.npz deleted, c.npz added.
	l.set("ds/train/", ListResult{Objects: []Object{
		{Key: "ds/train/a.npz", Size: 100, ETag: "a2"},
		{Key: "ds/train/c.npz", Size: 300, ETag: "c1"},
	}})
	// An invalidated listing is listed again even with an indefinite TTL.
	if err := c.Invalidate("train"); err != nil {
		t.Fatal(err)
	}
	es, err := c.ReadDir(ctx, "train")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(es), ","); got != "a.npz:false,c.npz:false" {
		t.Fatalf("after invalidate: %s", got)
	}
	if len(gone) != 2 || gone[0].ETag != "a1" || gone[1].Key != "ds/train/b.npz" {
		t.Fatalf("gone = %+v, want old a.npz and b.npz", gone)
	}
}

// ctxLister blocks every List until its context ends.
type ctxLister struct{ entered chan struct{} }

func (l ctxLister) List(ctx context.Context, prefix string) (ListResult, error) {
	l.entered <- struct{}{}
	<-ctx.Done()
	return ListResult{}, ctx.Err()
}

func TestCatalogCloseCancelsAndJoinsListings(t *testing.T) {
	l := ctxLister{entered: make(chan struct{}, 1)}
	c, _ := newTestCatalog(t, l, time.Hour)
	done := make(chan error, 1)
	go func() { _, err := c.ReadDir(context.Background(), ""); done <- err }()
	<-l.entered
	// The listing ignores its caller's context; only Close can end it,
	// and Close returns only once it has.
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("ReadDir during Close: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ReadDir still waiting after Close")
	}
	if _, err := c.ReadDir(context.Background(), "sub"); !errors.Is(err, ErrCatalogClosed) {
		t.Errorf("ReadDir after Close: %v, want ErrCatalogClosed", err)
	}
}
