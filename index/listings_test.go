package index

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestListingResultsAreCallersOwn(t *testing.T) {
	db := openTest(t)
	in := Listing{Prefix: "p/", Dirs: []string{"a", "b"}, Files: []Object{{Key: "p/f"}}}
	if err := db.PutListing(in); err != nil {
		t.Fatal(err)
	}
	in.Dirs[0] = "changed by caller"
	got, _, _ := db.Listing("p/")
	got.Files[0].Key = "changed too"
	again, _, _ := db.Listing("p/")
	if again.Dirs[0] != "a" || again.Files[0].Key != "p/f" {
		t.Errorf("stored listing changed through caller slices: %+v", again)
	}
}

// numbered is a listing of p/ with files f000..f(n-1), each of version v.
func numbered(n int, v string) Listing {
	l := Listing{Prefix: "p/", ListedAt: time.Unix(100, 0)}
	for i := range n {
		l.Files = append(l.Files, Object{Key: fmt.Sprintf("p/f%03d", i), Size: int64(i), ETag: v})
	}
	return l
}

func info(t *testing.T, db *DB, prefix string) FolderInfo {
	t.Helper()
	fi, ok, err := db.FolderInfo(prefix)
	if err != nil || !ok {
		t.Fatalf("FolderInfo(%q) = %v, %v", prefix, ok, err)
	}
	return fi
}

// A re-list writes what changed in one transaction, bumps the generation
// once, reports the replaced and deleted files, and a re-list that changes
// nothing keeps the generation.
func TestPutListingWritesChangesOnly(t *testing.T) {
	db := openTest(t)
	if _, err := db.putListing(numbered(100, "v1"), nil); err != nil {
		t.Fatal(err)
	}
	first := info(t, db, "p/")
	if first.Gen != 1 || first.Entries != 100 {
		t.Fatalf("first listing: %+v, want generation 1 and 100 entries", first)
	}

	l := numbered(100, "v1")
	l.ListedAt = time.Unix(200, 0)
	l.Files[10].ETag = "v2"                         // replaced
	l.Files = slices.Delete(l.Files, 20, 21)        // f020 deleted
	l.Files = append(l.Files, Object{Key: "p/zzz"}) // added
	l.Dirs = []string{"f050"}                       // f050 becomes a folder
	l.Files = slices.DeleteFunc(l.Files, func(o Object) bool { return o.Key == "p/f050" })
	var gone []Object
	before := db.Commits()
	changed, err := db.putListing(l, func(g []Object) { gone = append(gone, g...) })
	if err != nil || !changed {
		t.Fatalf("putListing = %v, %v", changed, err)
	}
	if got := db.Commits() - before; got != 1 {
		t.Errorf("re-list with 4 changes made %d commits, want 1", got)
	}
	var keys []string
	for _, o := range gone {
		keys = append(keys, o.Key+"@"+o.ETag)
	}
	if want := []string{"p/f010@v1", "p/f020@v1", "p/f050@v1"}; !slices.Equal(keys, want) {
		t.Errorf("gone = %v, want %v", keys, want)
	}
	second := info(t, db, "p/")
	if second.Gen != 2 || second.Entries != 100 || !second.ListedAt.Equal(l.ListedAt) {
		t.Errorf("after re-list: %+v, want generation 2, 100 entries, listed at %v", second, l.ListedAt)
	}
	got, _, err := db.Listing("p/")
	if err != nil {
		t.Fatal(err)
	}
	assertListingEqual(t, got, l)

	l.ListedAt = time.Unix(300, 0)
	before = db.Commits()
	if changed, err := db.putListing(l, func([]Object) { t.Error("OnGone called for an unchanged listing") }); err != nil || changed {
		t.Fatalf("unchanged re-list: changed %v, %v", changed, err)
	}
	if got := db.Commits() - before; got != 1 {
		t.Errorf("unchanged re-list made %d commits, want 1 (ListedAt)", got)
	}
	if third := info(t, db, "p/"); third.Gen != 2 || !third.ListedAt.Equal(l.ListedAt) {
		t.Errorf("after unchanged re-list: %+v, want generation 2, listed at %v", third, l.ListedAt)
	}
}

// A re-list bigger than a transaction's share commits in bounded batches,
// each bumping the generation, and ends whole.
func TestPutListingBatches(t *testing.T) {
	db := openTest(t)
	db.listings.batch = 3
	before := db.Commits()
	if _, err := db.putListing(numbered(10, "v1"), nil); err != nil {
		t.Fatal(err)
	}
	if got := db.Commits() - before; got != 4 {
		t.Errorf("10 new entries in batches of 3: %d commits, want 4", got)
	}
	if fi := info(t, db, "p/"); fi.Gen != 4 || fi.Entries != 10 || !fi.ListedAt.Equal(time.Unix(100, 0)) {
		t.Errorf("after batches: %+v", fi)
	}
	var gone []Object
	if _, err := db.putListing(numbered(2, "v2"), func(g []Object) { gone = append(gone, g...) }); err != nil {
		t.Fatal(err)
	}
	if len(gone) != 10 {
		t.Errorf("%d objects gone, want all 10 (2 replaced, 8 deleted)", len(gone))
	}
	got, _, _ := db.Listing("p/")
	assertListingEqual(t, got, numbered(2, "v2"))
	if fi := info(t, db, "p/"); fi.Entries != 2 {
		t.Errorf("entries %d, want 2", fi.Entries)
	}
}

// Pages follow names, so a re-list between pages neither repeats nor skips
// a name that did not change, and the generation tells the pages apart.
func TestEntryPageAcrossRelist(t *testing.T) {
	db := openTest(t)
	if err := db.PutListing(numbered(10, "v1")); err != nil {
		t.Fatal(err)
	}
	page, fi, ok, err := db.EntryPage("p/", "", 4)
	if err != nil || !ok || len(page) != 4 || page[3].Name != "f003" || fi.Gen != 1 {
		t.Fatalf("first page = %v, %+v, %v, %v", names(page), fi, ok, err)
	}
	l := numbered(10, "v1")
	l.Files = slices.Delete(l.Files, 1, 2) // f001, already read, goes
	l.Files = slices.Delete(l.Files, 4, 5) // f005, not yet read, goes
	if err := db.PutListing(l); err != nil {
		t.Fatal(err)
	}
	var rest []string
	after := page[3].Name
	for {
		page, fi, _, err = db.EntryPage("p/", after, 4)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Gen != 2 {
			t.Errorf("page after the re-list read at generation %d, want 2", fi.Gen)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			rest = append(rest, e.Name)
		}
		after = page[len(page)-1].Name
	}
	if want := []string{"f004", "f006", "f007", "f008", "f009"}; !slices.Equal(rest, want) {
		t.Errorf("rest = %v, want %v", rest, want)
	}
	if _, _, ok, err := db.EntryPage("q/", "", 4); ok || err != nil {
		t.Errorf("EntryPage of an unlisted folder: %v, %v", ok, err)
	}
}

// Invalidate keeps entries and generation and zeroes ListedAt.
func TestInvalidateListingKeepsEntries(t *testing.T) {
	db := openTest(t)
	if err := db.PutListing(numbered(3, "v1")); err != nil {
		t.Fatal(err)
	}
	if err := db.invalidateListing("p/"); err != nil {
		t.Fatal(err)
	}
	if fi := info(t, db, "p/"); !fi.ListedAt.IsZero() || fi.Gen != 1 || fi.Entries != 3 {
		t.Errorf("after invalidate: %+v", fi)
	}
	if err := db.invalidateListing("never/"); err != nil {
		t.Errorf("invalidate of an unlisted folder: %v", err)
	}
	if _, ok, _ := db.FolderInfo("never/"); ok {
		t.Error("invalidate created a listing")
	}
}
