package prefetch

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"s3cachefs/blockcache"
	"s3cachefs/blockcache/internal/cachetest"
	"s3cachefs/index"
)

// inFlight is a Source that counts the GETs whose bodies are open, and
// the most at once.
type inFlight struct {
	blockcache.Source
	mu        sync.Mutex
	open, max int
}

func (s *inFlight) GetRange(ctx context.Context, key, etag string, off, n int64) (io.ReadCloser, error) {
	body, err := s.Source.GetRange(ctx, key, etag, off, n)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.open++
	s.max = max(s.max, s.open)
	s.mu.Unlock()
	return &countedBody{body, s}, nil
}

type countedBody struct {
	io.ReadCloser
	s *inFlight
}

func (b *countedBody) Close() error {
	b.s.mu.Lock()
	b.s.open--
	b.s.mu.Unlock()
	return b.ReadCloser.Close()
}

// A job keeps at most JobOptions.Bytes of objects in flight, whatever
// Objects allows: objects of one part each, two objects' worth of bytes,
// never more than two GETs at once.
func TestPrefetchPoolBoundedByBytes(t *testing.T) {
	f := newFixture(t)
	src := &inFlight{Source: f.src}
	objs := smallObjects(f.src, "many", 200, testPart)
	oc := cachetest.Open(t, t.TempDir(), src, blockcache.Options{BlockSize: testBlock, PartSize: testPart, MaxFetches: 64})
	cat := index.NewCatalog(oc.DB, f.src, index.CatalogOptions{TTL: time.Hour})
	j := NewJobs(oc.C, cat, oc.DB, JobOptions{Objects: 100, Bytes: 2 * testPart})
	t.Cleanup(j.Close)
	p, err := j.Start(context.Background(), []string{"many"})
	if err != nil {
		t.Fatal(err)
	}
	if p = waitJob(t, j, p.ID); p.State != "done" || p.Totals().FilesDone != int64(len(objs)) {
		t.Fatalf("job ended %+v", p)
	}
	if src.max > 2 {
		t.Errorf("%d GETs at once, want at most 2 (two objects' bytes)", src.max)
	}
	if src.max < 1 {
		t.Errorf("no GET seen")
	}
}
