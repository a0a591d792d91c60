// Package storetest is the conformance suite for object stores: the real
// S3 adapter (s3store) and the in-memory fake (memstore) both pass it, so
// tests written against the fake hold for S3 too.
//
// Each case gets a fresh, empty store from Harness.New, so cases may list
// the bucket root.
package storetest

import (
	"context"
	"io"
	"testing"

	"s3cachefs/index"
)

// Store is the interface under test: index.PageLister plus
// blockcache.Source.
type Store interface {
	List(ctx context.Context, prefix string) (index.ListResult, error)
	ListPages(ctx context.Context, prefix string, page func(index.ListResult) error) error
	GetRange(ctx context.Context, key, etag string, off, n int64) (io.ReadCloser, error)
}

// Fixture is one fresh, empty store and the means to change what it holds
// behind its back, as another S3 client would.
type Fixture struct {
	Store Store
	// Put creates key or replaces its content.
	Put func(t testing.TB, key string, data []byte)
	// PutMany puts every object of objs, as fast as the backend allows.
	// nil means Put each in turn.
	PutMany func(t testing.TB, objs map[string][]byte)
	// Delete removes key.
	Delete func(t testing.TB, key string)
	// RemoveBucket makes the bucket disappear. nil skips the case.
	RemoveBucket func(t testing.TB)
	// Truncate makes the next GetRange of key deliver a body that ends
	// early. nil skips the case.
	Truncate func(t testing.TB, key string)
}

// Harness gives the suite its stores.
type Harness struct {
	// New returns a fresh, empty store for one case.
	New func(t *testing.T) Fixture
}

// Run runs every case as a subtest of t.
func Run(t *testing.T, h Harness) {
	cases := []struct {
		name string
		run  func(t *testing.T, f Fixture)
	}{
		{"ListNested", testListNested},
		{"ListOddNames", testListOddNames},
		{"ListEmpty", testListEmpty},
		{"ListMarkers", testListMarkers},
		{"ListPages", testListPages},
		{"RangeReads", testRangeReads},
		{"RangeUnpinned", testRangeUnpinned},
		{"ReaderStopsAtRange", testReaderStopsAtRange},
		{"StaleETag", testStaleETag},
		{"StaleShorter", testStaleShorter},
		{"MissingKey", testMissingKey},
		{"MissingBucket", testMissingBucket},
		{"Truncated", testTruncated},
		{"Canceled", testCanceled},
		{"Concurrent", testConcurrent},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, h.New(t)) })
	}
}
