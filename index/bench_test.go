package index

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkLookupFreshLargeFolder measures a Lookup answered from a stored
// listing: the size of the TUSZ train split (4,667 files), an ImageNet-size
// class folder ten times over, and one past the largest listing kept
// decoded in memory (262,144 entries; issue 13 is about the cliff there).
func BenchmarkLookupFreshLargeFolder(b *testing.B) {
	for _, n := range []int{4667, 100_000, 300_000} {
		b.Run(fmt.Sprintf("files=%d", n), func(b *testing.B) { benchLookup(b, n) })
	}
}

func benchLookup(b *testing.B, files int) {
	name := func(i int) string { return fmt.Sprintf("aaaaaaaa_s%05d_t%03d.npz", i/100, i%100) }
	fake := &fakeLister{levels: map[string]ListResult{}}
	var res ListResult
	for i := range files {
		res.Objects = append(res.Objects, Object{Key: "ds/train/" + name(i),
			Size: 70 << 20, ETag: "0123456789abcdef0123456789abcdef", LastModified: time.Unix(1700000000, 0)})
	}
	fake.levels["ds/train/"] = res
	db, err := Open(b.TempDir()+"/index.db", Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	c := NewCatalog(db, fake, CatalogOptions{Prefix: "ds/", TTL: -1})
	ctx := context.Background()
	if err := c.Refresh(ctx, "train"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := c.Lookup(ctx, "train", name(i%files)); err != nil {
			b.Fatal(err)
		}
	}
}
