package index

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// discard is a logger for listings whose warnings a test does not check.
var discard = slog.New(slog.DiscardHandler)

// pagedLister answers like S3: one folder level, objects and common
// prefixes in one key order, cut into pages of size. before, if set, runs
// ahead of each page (numbered from 1) and may fail it; reversed sends the
// objects in reverse order, as a broken server might.
type pagedLister struct {
	mu       sync.Mutex
	res      ListResult // guarded by mu
	size     int
	reversed bool
	before   func(page int) error
}

func (l *pagedLister) set(res ListResult) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res = res
}

func (l *pagedLister) List(ctx context.Context, prefix string) (ListResult, error) {
	var all ListResult
	err := l.ListPages(ctx, prefix, func(p ListResult) error {
		all.Objects = append(all.Objects, p.Objects...)
		all.Prefixes = append(all.Prefixes, p.Prefixes...)
		return nil
	})
	return all, err
}

func (l *pagedLister) ListPages(ctx context.Context, prefix string, page func(ListResult) error) error {
	l.mu.Lock()
	res := l.res
	l.mu.Unlock()
	type item struct {
		key string
		obj *Object
	}
	var items []item
	for i := range res.Objects {
		items = append(items, item{res.Objects[i].Key, &res.Objects[i]})
	}
	for _, p := range res.Prefixes {
		items = append(items, item{key: p})
	}
	slices.SortStableFunc(items, func(a, b item) int { return strings.Compare(a.key, b.key) })
	if l.reversed {
		slices.Reverse(items)
	}
	for n := 1; len(items) > 0; n++ {
		if l.before != nil {
			if err := l.before(n); err != nil {
				return err
			}
		}
		var p ListResult
		for _, it := range items[:min(l.size, len(items))] {
			if it.obj != nil {
				p.Objects = append(p.Objects, *it.obj)
			} else {
				p.Prefixes = append(p.Prefixes, it.key)
			}
		}
		items = items[min(l.size, len(items)):]
		if err := page(p); err != nil {
			return err
		}
	}
	return nil
}

// randomLevel makes an S3 answer for prefix whose names collide the ways
// that matter: short names of a, b, 0, '-', '.' and ' ' (the last three
// sort below '/', so "a-b" comes before the common prefix "a/"), the same
// name as a file and a folder, folder markers (the folder's own and its
// subfolders'), files without an ETag, and duplicate keys of which only
// the newest counts.
func randomLevel(r *rand.Rand, prefix string) ListResult {
	alphabet := []byte("ab0-. ")
	var res ListResult
	seen := map[string]bool{}
	for range r.IntN(60) {
		b := make([]byte, 1+r.IntN(3))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		name := string(b)
		if seen[name] {
			continue
		}
		seen[name] = true
		switch k := r.IntN(5); k {
		case 0, 1, 2: // a file
			o := Object{Key: prefix + name, Size: int64(r.IntN(2)), ETag: fmt.Sprint("e", r.IntN(2)), LastModified: time.Unix(int64(r.IntN(2)), 0).UTC()}
			if r.IntN(4) == 0 {
				o.ETag = ""
			}
			res.Objects = append(res.Objects, o)
			if r.IntN(6) == 0 { // and a duplicate of it
				o.ETag, o.LastModified = "dup", o.LastModified.Add(time.Duration(r.IntN(3)-1)*time.Second)
				res.Objects = append(res.Objects, o)
			}
			if k == 0 { // and a folder of the same name
				res.Prefixes = append(res.Prefixes, prefix+name+"/")
			}
		default: // a folder, maybe with its marker
			res.Prefixes = append(res.Prefixes, prefix+name+"/")
			if r.IntN(4) == 0 {
				res.Objects = append(res.Objects, Object{Key: prefix + name + "/"})
			}
		}
	}
	if r.IntN(4) == 0 {
		res.Objects = append(res.Objects, Object{Key: prefix}) // the folder's own marker
	}
	return res
}

// sameEntries reports whether two listings hold the same entries.
func sameEntries(a, b Listing) bool {
	return slices.Equal(a.Dirs, b.Dirs) && slices.EqualFunc(a.Files, b.Files, objectEqual)
}

// A folder re-listed again and again, each time merged a page at a time in
// batches of any size, stores what toListing makes of S3's whole answer,
// counts its entries, bumps its generation when they change, and reports
// every file it removed; a LIST that fails midway leaves the old listing
// as it was, or marked invalidated. The streaming merge against the
// obvious whole-folder one, over random folders whose names collide in
// every way S3 allows.
func TestRelistMatchesWholeListing(t *testing.T) {
	db := openTest(t)
	r := rand.New(rand.NewPCG(7, 13))
	boom := errors.New("connection reset")
	for round := range 300 {
		prefix := fmt.Sprintf("r%03d/", round)
		db.listings.batch = []int{1, 2, 3, 5, 1000}[r.IntN(5)]
		lister := &pagedLister{size: 1 + r.IntN(6)}
		var gone []Object
		c := NewCatalog(db, lister, CatalogOptions{Prefix: prefix, TTL: -1, OnGone: func(g []Object) { gone = append(gone, g...) }})
		for step := range 6 {
			res := randomLevel(r, prefix)
			lister.set(res)
			failAt := 0 // the page the LIST fails on; 0: none
			if r.IntN(4) == 0 {
				failAt = 1 + r.IntN(8)
			}
			lister.before = func(page int) error {
				if page == failAt {
					return boom
				}
				return nil
			}
			before, _, _ := db.Listing(prefix)
			fiBefore, _, _ := db.FolderInfo(prefix)
			genBefore := fiBefore.Gen
			gone = nil
			at := time.Unix(int64(100+step), 0)
			c.opts.Now = func() time.Time { return at }
			where := fmt.Sprintf("round %d step %d (pages of %d, batches of %d, failing at page %d), S3 sent %+v",
				round, step, lister.size, db.listings.batch, failAt, res)
			err := c.Refresh(context.Background(), "")
			failed := errors.Is(err, boom)
			if err != nil && !failed {
				t.Fatalf("%s: %v", where, err)
			}
			got, _, err := db.Listing(prefix)
			if err != nil {
				t.Fatal(err)
			}
			switch want := toListing(prefix, res, at, discard); {
			case !failed && (!sameEntries(got, want) || !got.ListedAt.Equal(at)):
				t.Fatalf("%s:\n got %+v\nwant %+v", where, got, want)
			case failed && !got.ListedAt.IsZero() && (!sameEntries(got, before) || !got.ListedAt.Equal(before.ListedAt)):
				t.Fatalf("%s: the failed re-list left %+v, neither the old listing nor invalidated", where, got)
			}
			fi, _, _ := db.FolderInfo(prefix)
			if fi.Entries != int64(len(got.Dirs)+len(got.Files)) {
				t.Fatalf("%s: %d entries counted, %d stored", where, fi.Entries, len(got.Dirs)+len(got.Files))
			}
			if !sameEntries(got, before) && fi.Gen <= genBefore {
				t.Fatalf("%s: the entries changed and the generation went %d -> %d", where, genBefore, fi.Gen)
			}
			// Every stored file that went is reported. One S3 sent beside
			// a folder of its name may be reported too, but only when an
			// earlier batch of the same re-list wrote it.
			kept := map[string]string{}
			for _, o := range got.Files {
				kept[o.Key] = o.Version()
			}
			expect := map[string]bool{}
			for _, o := range before.Files {
				if v, ok := kept[o.Key]; !ok || v != o.Version() {
					expect[o.Key+"@"+o.Version()] = true
				}
			}
			for _, o := range gone {
				id := o.Key + "@" + o.Version()
				switch {
				case expect[id]:
					delete(expect, id)
				case db.listings.batch == 1000 || !slices.Contains(got.Dirs, o.Key[len(prefix):]):
					t.Fatalf("%s: %s reported gone; it was not stored before, or is still shown", where, id)
				}
			}
			if len(expect) > 0 {
				t.Fatalf("%s: gone files not reported: %v", where, expect)
			}
		}
		c.Close()
	}
}

// A re-list writes its batches while S3's answer is still arriving: it
// never waits for the whole folder, so it never holds it.
func TestRelistWritesWhileListing(t *testing.T) {
	db := openTest(t)
	db.listings.batch = 100
	var res ListResult
	for i := range 2000 {
		res.Objects = append(res.Objects, Object{Key: fmt.Sprintf("big/f%05d", i), ETag: "e"})
	}
	var seen []int64
	lister := &pagedLister{res: res, size: 100}
	lister.before = func(page int) error {
		if page == 10 {
			fi, _, err := db.FolderInfo("big/")
			if err != nil {
				return err
			}
			seen = append(seen, fi.Entries)
			if !fi.ListedAt.IsZero() {
				t.Errorf("half-merged listing stored with ListedAt %v, want zero (invalidated)", fi.ListedAt)
			}
		}
		return nil
	}
	c := NewCatalog(db, lister, CatalogOptions{Prefix: "big/", TTL: -1})
	defer c.Close()
	ents, err := c.ReadDir(context.Background(), "")
	if err != nil || len(ents) != 2000 {
		t.Fatalf("ReadDir: %d entries, %v; want 2000", len(ents), err)
	}
	// Nine pages are out; at most two wait in the channel and one is
	// being merged, so six are merged, less the file held back.
	if len(seen) != 1 || seen[0] < 500 {
		t.Errorf("entries stored when S3 was asked for page 10: %v, want at least 500", seen)
	}
	if fi := info(t, db, "big/"); fi.Entries != 2000 || fi.ListedAt.IsZero() {
		t.Errorf("after the listing: %+v", fi)
	}
}

// A LIST that fails midway leaves a stored listing as it was when the
// changes it found fit one batch: stale is still served, not a mix.
func TestRelistFailureKeepsListing(t *testing.T) {
	db := openTest(t)
	var res ListResult
	for i := range 50 {
		res.Objects = append(res.Objects, Object{Key: fmt.Sprintf("p/f%02d", i), ETag: "v1"})
	}
	lister := &pagedLister{res: res, size: 20}
	c := NewCatalog(db, lister, CatalogOptions{Prefix: "p/", TTL: -1})
	defer c.Close()
	if err := c.Refresh(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	before := info(t, db, "p/")
	changed := ListResult{Objects: slices.Clone(res.Objects)}
	for i := range 10 {
		changed.Objects[i].ETag = "v2"
	}
	lister.set(changed)
	boom := errors.New("connection reset")
	lister.before = func(page int) error {
		if page == 3 {
			return boom
		}
		return nil
	}
	if err := c.Refresh(context.Background(), ""); !errors.Is(err, boom) {
		t.Fatalf("Refresh with a LIST failing on page 3: %v, want %v", err, boom)
	}
	if after := info(t, db, "p/"); after != before {
		t.Errorf("folder after the failed re-list: %+v, want it as before: %+v", after, before)
	}
	got, _, _ := db.Listing("p/")
	assertListingEqual(t, got, toListing("p/", res, before.ListedAt, discard))
}

// Keys out of S3's order cannot be merged as they come: the folder is
// listed again whole, warned about, and stored right.
func TestRelistUnsortedListsWhole(t *testing.T) {
	db := openTest(t)
	res := ListResult{Prefixes: []string{"p/d/"}}
	for i := range 30 {
		res.Objects = append(res.Objects, Object{Key: fmt.Sprintf("p/f%02d", i), ETag: "e"})
	}
	lister := &pagedLister{res: res, size: 7, reversed: true}
	rec := &logRecorder{}
	c := NewCatalog(db, lister, CatalogOptions{Prefix: "p/", TTL: -1, Logger: slog.New(rec)})
	defer c.Close()
	ents, err := c.ReadDir(context.Background(), "")
	if err != nil || len(ents) != 31 {
		t.Fatalf("ReadDir: %d entries, %v; want 31", len(ents), err)
	}
	if got := c.ListCalls(); got != 2 {
		t.Errorf("%d listings, want 2 (the paged one given up, then the whole one)", got)
	}
	if got := rec.count(slog.LevelWarn); got != 1 {
		t.Errorf("%d warnings, want 1 about the order", got)
	}
	got, _, _ := db.Listing("p/")
	if want := toListing("p/", res, got.ListedAt, discard); !slices.EqualFunc(got.Files, want.Files, objectEqual) || !slices.Equal(got.Dirs, want.Dirs) {
		t.Errorf("stored %+v, want %+v", got, want)
	}
}

// Listings of different folders do not wait for each other: a folder whose
// LIST is still running holds only its own lock.
func TestRelistLocksOneFolder(t *testing.T) {
	db := openTest(t)
	entered, release := make(chan struct{}), make(chan struct{})
	slow := &pagedLister{res: ListResult{Objects: []Object{{Key: "slow/a"}}}, size: 1}
	slow.before = func(int) error {
		close(entered)
		<-release
		return nil
	}
	cs := NewCatalog(db, slow, CatalogOptions{Prefix: "slow/", TTL: -1})
	done := make(chan error, 1)
	go func() { _, err := cs.ReadDir(context.Background(), ""); done <- err }()
	<-entered
	fast := &pagedLister{res: ListResult{Objects: []Object{{Key: "fast/b"}}}, size: 1}
	cf := NewCatalog(db, fast, CatalogOptions{Prefix: "fast/", TTL: -1})
	// Bounded, so that a lock shared by all folders fails the test
	// rather than hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if ents, err := cf.ReadDir(ctx, ""); err != nil || len(ents) != 1 {
		t.Errorf("listing another folder while one LIST runs: %v, %v", ents, err)
	}
	if err := cf.Invalidate(""); err != nil {
		t.Errorf("Invalidate of another folder: %v", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cs.Close()
	cf.Close()
}

// Invalidate (a read that met a changed object) does not wait for a LIST
// of the folder under way, which may take minutes; that re-list then
// stores the folder invalidated, so the next use lists it again.
func TestInvalidateDuringRelist(t *testing.T) {
	db := openTest(t)
	entered, release := make(chan struct{}), make(chan struct{})
	lister := &pagedLister{res: ListResult{Objects: []Object{{Key: "p/a"}, {Key: "p/b"}}}, size: 1}
	lister.before = func(page int) error {
		if page == 2 {
			close(entered)
			<-release
		}
		return nil
	}
	c := NewCatalog(db, lister, CatalogOptions{Prefix: "p/", TTL: -1})
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- c.Refresh(context.Background(), "") }()
	<-entered
	invalidated := make(chan error, 1)
	go func() { invalidated <- c.Invalidate("") }()
	select {
	case err := <-invalidated:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second): // a bound for failing, not a wait
		t.Fatal("Invalidate waited for the LIST of the folder under way")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fi := info(t, db, "p/"); !fi.ListedAt.IsZero() || fi.Entries != 2 {
		t.Errorf("after a re-list invalidated midway: %+v, want ListedAt zero and the 2 entries", fi)
	}
	lister.before = nil
	if _, err := c.ReadDir(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	if fi := info(t, db, "p/"); fi.ListedAt.IsZero() {
		t.Error("the next use did not list the invalidated folder again")
	}
}

// A Lister that once sent keys out of order is listed whole from then on:
// a later re-list of a folder it sends unsorted changes nothing and drops
// no cached data.
func TestUnsortedListerListedWholeAfter(t *testing.T) {
	db := openTest(t)
	res := ListResult{Objects: []Object{{Key: "p/a", ETag: "ea"}, {Key: "p/b", ETag: "eb"}, {Key: "p/c", ETag: "ec"}}}
	lister := &pagedLister{res: res, size: 1, reversed: true}
	var gone []Object
	c := NewCatalog(db, lister, CatalogOptions{Prefix: "p/", TTL: -1, OnGone: func(g []Object) { gone = append(gone, g...) }})
	defer c.Close()
	db.listings.batch = 1
	for i := range 2 {
		if err := c.Refresh(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
		if got, _, _ := db.Listing("p/"); len(got.Files) != 3 {
			t.Fatalf("refresh %d stored %+v", i+1, got)
		}
	}
	if got := c.ListCalls(); got != 3 {
		t.Errorf("%d listings, want 3: paged then whole, then whole only", got)
	}
	if len(gone) != 0 {
		t.Errorf("nothing changed in S3, yet OnGone heard of %+v", gone)
	}
}
