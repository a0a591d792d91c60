package index

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkLookupFreshLargeFolder measures a Lookup answered from a stored
// listing the size of the TUSZ train split (4,667 files).
func BenchmarkLookupFreshLargeFolder(b *testing.B) {
	fake := &fakeLister{levels: map[string]ListResult{}}
	var res ListResult
	for i := range 4667 {
		res.Objects = append(res.Objects, Object{Key: fmt.Sprintf("ds/train/aaaaaaaa_s%03d_t%03d.npz", i/100, i%100),
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
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if _, err := c.Lookup(ctx, "train", fmt.Sprintf("aaaaaaaa_s%03d_t%03d.npz", i%4667/100, i%4667%100)); err != nil {
			b.Fatal(err)
		}
	}
}
