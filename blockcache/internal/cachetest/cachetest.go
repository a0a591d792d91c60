// Package cachetest opens a block cache for the tests of packages that
// import blockcache (blockcache/prefetch, blockcache's external tests);
// blockcache's own tests have their fixture in cache_test.go.
package cachetest

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"s3cachefs/blockcache"
	"s3cachefs/index"
)

// Cache is an index and a cache over it in one folder.
type Cache struct {
	t  testing.TB
	DB *index.DB
	C  *blockcache.Cache
}

// Open opens dir/index.db and a cache in dir over src with opts (Dir and
// Bucket "bucket" set here), both closed by Close or at the end of the
// test, as a daemon stopping does.
func Open(t testing.TB, dir string, src blockcache.Source, opts blockcache.Options) *Cache {
	t.Helper()
	db, err := index.Open(filepath.Join(dir, "index.db"), index.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts.Dir, opts.Bucket = dir, "bucket"
	c, err := blockcache.New(db, src, opts)
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	oc := &Cache{t: t, DB: db, C: c}
	t.Cleanup(oc.Close)
	return oc
}

// Close closes the cache, then the index; a second call does nothing.
func (oc *Cache) Close() {
	if oc.C == nil {
		return
	}
	if err := oc.C.Close(); err != nil {
		oc.t.Error(err)
	}
	if err := oc.DB.Close(); err != nil {
		oc.t.Error(err)
	}
	oc.C, oc.DB = nil, nil
}

// RandBytes returns n bytes drawn from seed.
func RandBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// ReadAll reads h from the start to its end in kernel-sized requests.
func ReadAll(t testing.TB, h *blockcache.Handle) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 128<<10)
	for off := int64(0); ; {
		n, err := h.ReadAt(context.Background(), buf, off)
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if n == 0 {
			return out
		}
		out = append(out, buf[:n]...)
		off += int64(n)
	}
}

// OpenHandle opens obj in the cache, closed at the end of the test.
func (oc *Cache) OpenHandle(obj index.Object) *blockcache.Handle {
	oc.t.Helper()
	h, err := oc.C.Open(context.Background(), obj)
	if err != nil {
		oc.t.Fatal(err)
	}
	oc.t.Cleanup(func() { h.Close() })
	return h
}
