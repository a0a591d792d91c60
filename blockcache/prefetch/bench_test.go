package prefetch

import (
	"context"
	"fmt"
	"testing"
	"time"

	"s3cachefs/blockcache"
	"s3cachefs/blockcache/internal/cachetest"
	"s3cachefs/blockcache/s3store/memstore"
	"s3cachefs/index"
)

// smallObject is one object smallObjects put.
type smallObject struct {
	obj  index.Object
	data []byte
}

// smallObjects puts n objects of size bytes under dir/ in src, in folders
// of 1,000, and returns them.
func smallObjects(src *memstore.Store, dir string, n, size int) []smallObject {
	objs := make([]smallObject, n)
	for i := range objs {
		v := cachetest.RandBytes(uint64(i), size)
		objs[i] = smallObject{src.Put(fmt.Sprintf("%s/%03d/%06d.jpg", dir, i/1000, i), v), v}
	}
	return objs
}

// BenchmarkPrefetchSmall prefetches 2,000 objects of 110 KB from memory
// into an empty cache with the daemon's block and part sizes, and reports
// objects/s, index commits and cache-file syncs per object. GETs cost
// nothing here, so what it measures is the fetch path's own cost: writes,
// fsyncs, index commits and the pool.
func BenchmarkPrefetchSmall(b *testing.B) {
	const n, size = 2000, 110 << 10
	src := memstore.New()
	smallObjects(src, "imagenet", n, size)
	var objs, commits, syncs int64
	var elapsed time.Duration
	for b.Loop() {
		oc := cachetest.Open(b, b.TempDir(), src, blockcache.Options{MaxFetches: 32})
		cat := index.NewCatalog(oc.DB, src, index.CatalogOptions{TTL: time.Hour})
		j := NewJobs(oc.C, cat, oc.DB, JobOptions{})
		c0, s0 := oc.DB.Commits(), oc.C.Stats().Syncs
		start := time.Now()
		p, err := j.Start(context.Background(), []string{"imagenet"})
		if err != nil {
			b.Fatal(err)
		}
		if p = waitJob(b, j, p.ID); p.State != "done" || p.Totals().FilesDone != n {
			b.Fatalf("job ended %+v", p)
		}
		elapsed += time.Since(start)
		commits += oc.DB.Commits() - c0
		syncs += oc.C.Stats().Syncs - s0
		objs += n
		j.Close()
		oc.Close()
	}
	b.ReportMetric(float64(objs)/elapsed.Seconds(), "objects/s")
	b.ReportMetric(float64(commits)/float64(objs), "commits/object")
	b.ReportMetric(float64(syncs)/float64(objs), "syncs/object")
	b.ReportMetric(0, "ns/op")
}
