package index

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// onDisk decodes the listing of prefix straight from the file, bypassing
// the cache.
func onDisk(t *testing.T, db *DB, prefix string) (Listing, bool) {
	t.Helper()
	var l Listing
	var ok bool
	err := db.bolt.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketListings).Get(listingKey(prefix))
		if v == nil {
			return nil
		}
		ok = true
		var err error
		l, err = decodeListing(prefix, v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return l, ok
}

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

// With a tiny cache, listings are evicted and read back from the file,
// and the cache never holds more entries than its limit.
func TestListingCacheEviction(t *testing.T) {
	db := openTest(t)
	db.listings.limit = 5
	for i := range 10 {
		l := Listing{Prefix: fmt.Sprintf("p%d/", i), Dirs: []string{"a", "b"}}
		if i == 9 {
			l.Dirs = []string{"1", "2", "3", "4", "5", "6"} // bigger than the cache
		}
		if err := db.PutListing(l); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		l, ok, err := db.Listing(fmt.Sprintf("p%d/", i))
		if err != nil || !ok || (i < 9 && !slices.Equal(l.Dirs, []string{"a", "b"})) || (i == 9 && len(l.Dirs) != 6) {
			t.Errorf("listing p%d/ = %+v, %v, %v", i, l, ok, err)
		}
		db.listings.mu.Lock()
		n := db.listings.entries
		db.listings.mu.Unlock()
		if n > 5 {
			t.Fatalf("cache holds %d entries, limit 5", n)
		}
	}
}

// Concurrent writers and readers of one prefix: afterwards the cache agrees
// with the file.
func TestListingCacheCoherentUnderConcurrency(t *testing.T) {
	db := openTest(t)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 20 {
				var err error
				if (w+i)%5 == 0 {
					err = db.DeleteListing("p/")
				} else {
					err = db.PutListing(Listing{Prefix: "p/", ListedAt: time.Unix(int64(w*100+i), 0), Dirs: []string{fmt.Sprint(w, i)}})
				}
				if err != nil {
					t.Error(err)
					return
				}
				if _, _, err := db.Listing("p/"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	disk, diskOK := onDisk(t, db, "p/")
	cached, cachedOK, err := db.Listing("p/")
	if err != nil || cachedOK != diskOK {
		t.Fatalf("cache says present=%v, file says %v (%v)", cachedOK, diskOK, err)
	}
	if diskOK {
		assertListingEqual(t, cached, disk)
	}
}
