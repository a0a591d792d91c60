package prefetch

import (
	"sync"
	"testing"
	"time"

	"s3cachefs/blockcache"
	"s3cachefs/blockcache/internal/cachetest"
	"s3cachefs/blockcache/s3store/memstore"
	"s3cachefs/index"
)

// Small sizes keep the tests fast while exercising parts of several blocks.
const (
	testBlock = 64 << 10
	testPart  = 4 * testBlock
)

// fixture is a cache over an in-memory store, with its index, in a
// temporary directory.
type fixture struct {
	t   *testing.T
	dir string
	db  *index.DB
	src *memstore.Store
	c   *blockcache.Cache
	oc  *cachetest.Cache // what db and c come from
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), src: memstore.New()}
	f.open()
	return f
}

// open (re)opens the index and the cache on the fixture's directory, as a
// daemon restart does.
func (f *fixture) open() {
	f.t.Helper()
	f.oc = cachetest.Open(f.t, f.dir, f.src, blockcache.Options{BlockSize: testBlock, PartSize: testPart})
	f.db, f.c = f.oc.DB, f.oc.C
}

// close closes the cache and the index, as a daemon stopping does.
func (f *fixture) close() { f.oc.Close() }

// jobFixture adds a catalog and a job runner to a cache fixture.
func jobFixture(t *testing.T, opts JobOptions) (*fixture, *Jobs) {
	f := newFixture(t)
	return f, f.jobs(opts)
}

func (f *fixture) jobs(opts JobOptions) *Jobs {
	cat := index.NewCatalog(f.db, f.src, index.CatalogOptions{TTL: time.Hour})
	j := NewJobs(f.c, cat, f.db, opts)
	f.t.Cleanup(j.Close)
	return j
}

func (f *fixture) id(o index.Object) string { return blockcache.ObjectID("bucket", o) }

var randBytes = cachetest.RandBytes

func buf(n int) []byte { return make([]byte, n) }

var readAll = cachetest.ReadAll

func (f *fixture) openHandle(obj index.Object) *blockcache.Handle { return f.oc.OpenHandle(obj) }

// heldGets blocks GETs until released, so tests can hold a fetch in flight.
type heldGets struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func holdGets(src *memstore.Store) *heldGets {
	g := &heldGets{entered: make(chan struct{}), release: make(chan struct{})}
	src.SetFault(func(op, key string) error {
		if op == memstore.OpGet {
			g.once.Do(func() { close(g.entered) })
			<-g.release
		}
		return nil
	})
	return g
}
