package storetest

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"time"

	"s3cachefs/index"
)

// mustList lists prefix and fails the test on error.
func mustList(t *testing.T, s Store, prefix string) index.ListResult {
	t.Helper()
	res, err := s.List(context.Background(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	return res
}

// keys returns the keys of objs in order.
func keys(objs []index.Object) []string {
	out := make([]string, len(objs))
	for i, o := range objs {
		out[i] = o.Key
	}
	return out
}

// wantListing fails the test unless prefix lists exactly objects and
// prefixes, in that order.
func wantListing(t *testing.T, s Store, prefix string, objects, prefixes []string) index.ListResult {
	t.Helper()
	res := mustList(t, s, prefix)
	if got := keys(res.Objects); !slices.Equal(got, objects) {
		t.Errorf("List(%q) objects = %q, want %q", prefix, got, objects)
	}
	if !slices.Equal(res.Prefixes, prefixes) {
		t.Errorf("List(%q) prefixes = %q, want %q", prefix, res.Prefixes, prefixes)
	}
	return res
}

func testListNested(t *testing.T, f Fixture) {
	started := time.Now()
	objs := map[string][]byte{
		"top.txt":      []byte("top"),
		"a/1":          []byte("one"),
		"a/2":          []byte("two!"),
		"a/b/3":        []byte("three"),
		"a/b/c/4":      []byte("four"),
		"a/bb/5":       []byte("five"),
		"b/6":          []byte("six"),
		"data.npz":     make([]byte, 10000),
		"a/b/c/d/e/7":  []byte("deep"),
		"b/x/y/z/8.gz": []byte("deeper"),
	}
	f.putMany(t, objs)

	root := wantListing(t, f.Store, "", []string{"data.npz", "top.txt"}, []string{"a/", "b/"})
	wantListing(t, f.Store, "a/", []string{"a/1", "a/2"}, []string{"a/b/", "a/bb/"})
	wantListing(t, f.Store, "a/b/", []string{"a/b/3"}, []string{"a/b/c/"})
	wantListing(t, f.Store, "a/b/c/", []string{"a/b/c/4"}, []string{"a/b/c/d/"})
	wantListing(t, f.Store, "a/b/c/d/e/", []string{"a/b/c/d/e/7"}, nil)
	wantListing(t, f.Store, "b/", []string{"b/6"}, []string{"b/x/"})

	for _, o := range root.Objects {
		checkObject(t, o, objs[o.Key], started)
	}
}

// checkObject checks the metadata a listing gave for data.
func checkObject(t *testing.T, o index.Object, data []byte, started time.Time) {
	t.Helper()
	if o.Size != int64(len(data)) {
		t.Errorf("%s: Size = %d, want %d", o.Key, o.Size, len(data))
	}
	if o.ETag == "" || strings.Contains(o.ETag, `"`) {
		t.Errorf("%s: ETag = %q, want non-empty without quotes", o.Key, o.ETag)
	}
	if o.LastModified.Location() != time.UTC {
		t.Errorf("%s: LastModified %v is not UTC", o.Key, o.LastModified)
	}
	// Stores keep seconds or milliseconds; allow for that and some
	// clock difference with a server process.
	if lm := o.LastModified; lm.Before(started.Add(-time.Minute)) || lm.After(time.Now().Add(time.Minute)) {
		t.Errorf("%s: LastModified = %v, want about %v", o.Key, lm, started)
	}
}

func testListOddNames(t *testing.T, f Fixture) {
	names := []string{
		"odd/with space",
		"odd/plus+sign",
		"odd/percent%41",
		"odd/amp&lt;",
		"odd/ünïcödé-名前",
		"odd/question?mark",
		"odd/tilde~=,;",
	}
	objs := make(map[string][]byte)
	for i, k := range names {
		objs[k] = []byte(fmt.Sprint(i))
	}
	f.putMany(t, objs)
	want := slices.Clone(names)
	slices.Sort(want)
	res := wantListing(t, f.Store, "odd/", want, nil)
	// The names listed must be the ones that fetch the objects.
	for _, o := range res.Objects {
		if got := readAll(t, f.Store, o.Key, o.ETag, 0, o.Size); string(got) != string(objs[o.Key]) {
			t.Errorf("GetRange(%q) = %q, want %q", o.Key, got, objs[o.Key])
		}
	}
}

func testListEmpty(t *testing.T, f Fixture) {
	wantListing(t, f.Store, "", nil, nil)
	f.Put(t, "x/y", []byte("y"))
	wantListing(t, f.Store, "nothing/", nil, nil)
	wantListing(t, f.Store, "x/y/", nil, nil)
}

// testListMarkers checks zero-byte "folder/" marker objects, as the S3
// console creates them: S3 lists them under their own prefix.
func testListMarkers(t *testing.T, f Fixture) {
	f.putMany(t, map[string][]byte{"m/": nil, "m/x": []byte("x"), "e/": nil})
	wantListing(t, f.Store, "", nil, []string{"e/", "m/"})
	res := wantListing(t, f.Store, "m/", []string{"m/", "m/x"}, nil)
	if len(res.Objects) > 0 && res.Objects[0].Size != 0 {
		t.Errorf("marker size = %d, want 0", res.Objects[0].Size)
	}
	wantListing(t, f.Store, "e/", []string{"e/"}, nil)
}

// pageObjects is more than two pages of ListObjectsV2 (1000 keys each).
const pageObjects = 2500

func testListPages(t *testing.T, f Fixture) {
	objs := make(map[string][]byte, pageObjects+3)
	var want []string
	for i := range pageObjects {
		k := fmt.Sprintf("big/f%05d.bin", i)
		objs[k] = []byte(fmt.Sprint(i))
		want = append(want, k)
	}
	// Common prefixes sort between the objects: they must come out in
	// the prefix list, each once, whatever page they fall on.
	for _, p := range []string{"big/f00000.bin.d/", "big/f01500/", "big/zz/"} {
		objs[p+"inner"] = []byte("inner")
	}
	f.putMany(t, objs)
	res := wantListing(t, f.Store, "big/", want, []string{"big/f00000.bin.d/", "big/f01500/", "big/zz/"})
	for _, o := range res.Objects {
		if o.Size != int64(len(objs[o.Key])) {
			t.Fatalf("%s: Size = %d, want %d", o.Key, o.Size, len(objs[o.Key]))
		}
	}

	// ListPages hands over the same, a page of at most 1,000 at a time.
	var paged index.ListResult
	pages := 0
	err := f.Store.ListPages(context.Background(), "big/", func(page index.ListResult) error {
		pages++
		if n := len(page.Objects) + len(page.Prefixes); n > 1000 {
			t.Errorf("page %d holds %d objects and prefixes, more than S3's 1,000", pages, n)
		}
		paged.Objects = append(paged.Objects, page.Objects...)
		paged.Prefixes = append(paged.Prefixes, page.Prefixes...)
		return nil
	})
	if err != nil {
		t.Fatalf("ListPages: %v", err)
	}
	if want := (pageObjects + 3 + 999) / 1000; pages != want {
		t.Errorf("ListPages gave %d pages, want %d", pages, want)
	}
	if !slices.Equal(keys(paged.Objects), keys(res.Objects)) || !slices.Equal(paged.Prefixes, res.Prefixes) {
		t.Errorf("ListPages gave %d objects and %q, List %d and %q", len(paged.Objects), paged.Prefixes, len(res.Objects), res.Prefixes)
	}

	// An error from page stops the listing and comes back as it is.
	stop := errors.New("stop here")
	pages = 0
	err = f.Store.ListPages(context.Background(), "big/", func(index.ListResult) error { pages++; return stop })
	if !errors.Is(err, stop) || pages != 1 {
		t.Errorf("ListPages whose page fails: %d pages, err %v; want 1 page and the page's error", pages, err)
	}
}

func testMissingBucket(t *testing.T, f Fixture) {
	if f.RemoveBucket == nil {
		t.Skip("the harness cannot remove the bucket")
	}
	f.Put(t, "k", []byte("data"))
	etag := mustList(t, f.Store, "").Objects[0].ETag
	f.Delete(t, "k")
	f.RemoveBucket(t)
	if _, err := f.Store.List(context.Background(), ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("List on a missing bucket: err = %v, want fs.ErrNotExist", err)
	}
	if _, err := f.Store.GetRange(context.Background(), "k", etag, 0, 1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("GetRange on a missing bucket: err = %v, want fs.ErrNotExist", err)
	}
}

func (f Fixture) putMany(t *testing.T, objs map[string][]byte) {
	t.Helper()
	if f.PutMany != nil {
		f.PutMany(t, objs)
		return
	}
	for k, v := range objs {
		f.Put(t, k, v)
	}
}
