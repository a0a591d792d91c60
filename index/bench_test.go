package index

import (
	"context"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sizes of folder the benchmarks run at: the TUSZ train split (4,667
// files), an ImageNet-size class folder ten times over, the one past the
// largest listing schema 1 kept decoded in memory (262,144 entries), and a
// million (issue 13).
var benchSizes = []int{4667, 100_000, 300_000, 1_000_000}

func benchName(i int) string { return fmt.Sprintf("aaaaaaaa_s%05d_t%03d.npz", i/100, i%100) }

// benchListing is a listing of ds/train/ with files of benchName; every
// step-th file (none if step is 0) has the ETag alt instead.
func benchListing(files, step int, alt string) Listing {
	l := Listing{Prefix: "ds/train/", ListedAt: time.Unix(1700000000, 0)}
	l.Files = make([]Object, files)
	for i := range files {
		etag := "0123456789abcdef0123456789abcdef"
		if step > 0 && i%step == 0 {
			etag = alt
		}
		l.Files[i] = Object{Key: "ds/train/" + benchName(i), Size: 70 << 20, ETag: etag, LastModified: time.Unix(1700000000, 0)}
	}
	return l
}

// benchDB opens an index holding benchListing(files) as a fresh listing,
// written in one bulk transaction, and a Catalog over it that never
// refreshes on its own (TTL indefinite).
func benchDB(b *testing.B, files int, lister Lister) (*DB, *Catalog) {
	b.Helper()
	db, err := Open(b.TempDir()+"/index.db", Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	l := benchListing(files, 0, "")
	if err := db.bolt.Update(func(tx *bolt.Tx) error { return writeFolder(tx.Bucket(bucketListings), l) }); err != nil {
		b.Fatal(err)
	}
	c := NewCatalog(db, lister, CatalogOptions{Prefix: "ds/", TTL: -1})
	b.Cleanup(c.Close)
	return db, c
}

// BenchmarkLookupFreshLargeFolder measures a Lookup answered from a stored
// listing.
func BenchmarkLookupFreshLargeFolder(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			_, c := benchDB(b, n, &fakeLister{})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := c.Lookup(ctx, "train", benchName((i*7919)%n)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadDirLargeFolder measures reading a whole stored folder the
// way the mount does: Generation, then pages of 1,024 entries. One op is
// the whole folder.
func BenchmarkReadDirLargeFolder(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			_, c := benchDB(b, n, &fakeLister{})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Generation(ctx, "train"); err != nil {
					b.Fatal(err)
				}
				after, seen := "", 0
				for {
					page, _, err := c.ReadDirPage(ctx, "train", after, 1024)
					if err != nil {
						b.Fatal(err)
					}
					if len(page) == 0 {
						break
					}
					seen += len(page)
					after = page[len(page)-1].Name
				}
				if seen != n {
					b.Fatalf("read %d entries, want %d", seen, n)
				}
			}
		})
	}
}

// BenchmarkRelistLargeFolder measures a re-list of a stored folder in
// which 1% of the objects changed since the last: S3's answer alternates
// between two versions that differ in every 100th object. It reports the
// index commits per re-list.
func BenchmarkRelistLargeFolder(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) {
			answers := [2]ListResult{
				{Objects: benchListing(n, 100, "changed-etag-0").Files},
				{Objects: benchListing(n, 100, "changed-etag-1").Files},
			}
			lister := &fakeLister{levels: map[string]ListResult{}}
			db, c := benchDB(b, n, lister)
			ctx := context.Background()
			var gone int
			c.opts.OnGone = func(g []Object) { gone += len(g) }
			b.ReportAllocs()
			b.ResetTimer()
			commits := db.Commits()
			ops := 0
			for i := 0; b.Loop(); i++ {
				lister.set("ds/train/", answers[i%2])
				if err := c.Refresh(ctx, "train"); err != nil {
					b.Fatal(err)
				}
				ops++
			}
			b.ReportMetric(float64(db.Commits()-commits)/float64(ops), "commits/op")
			if gone != ops*(n/100) {
				b.Fatalf("%d objects gone over %d re-lists, want %d", gone, ops, ops*(n/100))
			}
		})
	}
}
