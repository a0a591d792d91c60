package blockcache_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"s3cachefs/blockcache"
	"s3cachefs/blockcache/internal/cachetest"
	"s3cachefs/blockcache/prefetch"
	"s3cachefs/blockcache/s3store/memstore"
	"s3cachefs/index"
)

// soakFor is how long TestSoak reads. The default keeps `make test` quick;
// a local run asks for more: go test -race -run TestSoak ./blockcache -soak 5m
var soakFor = flag.Duration("soak", 3*time.Second, "how long TestSoak runs its readers (e.g. 5m locally)")

const (
	soakReaders = 64
	soakHot     = 4   // objects under hot/: prefetched, pinned, read by everyone
	soakCold    = 120 // objects under cold/: read only by readers
	// soakLimit is the cache limit: the objects take several times as
	// much, so eviction and uncached reads run all the time.
	soakLimit = 40 * testPart

	testBlock = blockcache.TestBlock
	testPart  = blockcache.TestPart
)

// soakObject is one key of the soak and the two contents S3 flips it
// between, so that a replaced object may later come back to an old
// version (and old version IDs are reused).
type soakObject struct {
	key  string
	data [2][]byte
	meta [2]index.Object // as listed when that content was put

	mu  sync.Mutex // guards cur and gen
	cur int        // which content S3 holds
	gen int        // replacements so far
}

// soakVersion is what a reader opened: one version, and how many times the
// key had been replaced when it was current.
type soakVersion struct {
	o    *soakObject
	meta index.Object
	data []byte
	gen  int
}

func (o *soakObject) current() soakVersion {
	o.mu.Lock()
	defer o.mu.Unlock()
	return soakVersion{o: o, meta: o.meta[o.cur], data: o.data[o.cur], gen: o.gen}
}

// replaced reports whether S3 changed the key since v was current, the
// only case in which a read of v may fail with index.ErrStale.
func (v soakVersion) replaced() bool {
	v.o.mu.Lock()
	defer v.o.mu.Unlock()
	return v.o.gen != v.gen
}

// soak is the shared state of TestSoak's goroutines. Counters are atomic;
// the rest is set before the goroutines start.
type soak struct {
	t    *testing.T
	f    *soakFixture
	cat  *index.Catalog
	jobs *prefetch.Jobs
	objs []*soakObject
	hot  []*soakObject // the first soakHot of objs

	reads, checked, wrong, stale, cancelled, failures, replacements atomic.Int64
}

// errorf reports a failure from any goroutine; after the first few only
// the count grows, so a systematic bug does not flood the log.
func (s *soak) errorf(format string, args ...any) {
	if s.failures.Add(1) <= 10 {
		s.t.Errorf(format, args...)
	}
}

// TestSoak runs 64 readers over overlapping objects for -soak, with a cache
// limit that keeps eviction busy, prefetch jobs pinning hot/ (every third
// one cancelled), and objects replaced in S3 as they are read. Every byte
// read is checked against the version opened; a read may fail only with
// ErrStale after S3 replaced that version. At the end nothing is left
// open, the usage accounting adds up, every cached block equals S3's, the
// heap did not grow, and Close leaves no goroutine behind.
func TestSoak(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	// Registered first, so it runs after the fixture's own cleanups.
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) })

	f := openSoakFixture(t, blockcache.Options{MaxBytes: soakLimit, ReadAhead: 2 * testPart})
	s := &soak{t: t, f: f}
	s.setup()
	// A little latency per GET, as S3 has, so that fetches overlap.
	f.src.SetFault(func(op, key string) error {
		if op == memstore.OpGet {
			time.Sleep(rand.N(2 * time.Millisecond))
		}
		return nil
	})

	ctx, stop := context.WithTimeout(context.Background(), *soakFor)
	defer stop()
	start := time.Now()
	var wg sync.WaitGroup
	for i := range soakReaders {
		wg.Go(func() { s.reader(ctx, uint64(i)) })
	}
	var jobStates map[string]int
	wg.Go(func() { jobStates = s.prefetcher(ctx) })
	wg.Go(func() { s.replacer(ctx) })
	var heap []uint64
	var maxGoroutines int
	wg.Go(func() { heap, maxGoroutines = s.sample(ctx) })
	wg.Wait()
	elapsed := time.Since(start)

	s.jobs.Close()
	// Read-ahead fetches run on after their handles closed; with every
	// reader and job stopped nothing starts more, so this wait ends.
	f.c.WaitFetches()
	s.checkQuiet()
	s.checkCachedBytes()

	st := f.c.Stats()
	first, last := thirds(heap)
	t.Logf("RELIABILITY soak-blockcache readers=%d seconds=%.0f reads=%d bytes_checked=%d wrong=%d stale=%d cancelled=%d "+
		"replacements=%d evictions=%d uncached=%d fetches=%d jobs=%v heap_first=%d heap_last=%d goroutines_max=%d",
		soakReaders, elapsed.Seconds(), s.reads.Load(), s.checked.Load(), s.wrong.Load(), s.stale.Load(), s.cancelled.Load(),
		s.replacements.Load(), st.Evictions, st.Uncached, st.Fetches, jobStates, first, last, maxGoroutines)
	if s.wrong.Load() != 0 {
		t.Errorf("%d reads returned wrong bytes", s.wrong.Load())
	}
	if s.checked.Load() == 0 || st.Evictions == 0 || s.replacements.Load() == 0 || jobStates["done"] == 0 {
		t.Errorf("the soak did not exercise what it claims: %d bytes checked, %d evictions, %d replacements, jobs %v",
			s.checked.Load(), st.Evictions, s.replacements.Load(), jobStates)
	}
	// The heap is measured after a GC: what is live. It holds S3's data
	// and the readers' buffers, so it stays level unless something leaks.
	if limit := first + max(first/4, 8<<20); last > limit {
		t.Errorf("live heap grew from %d bytes (first third) to %d (last third), over %d", first, last, limit)
	}

	f.close()
	if fds := s.openCacheFiles(f.dir); len(fds) > 0 {
		t.Errorf("files of the cache dir still open after Close: %v", fds)
	}
}

// soakFixture is the cache over an in-memory store that the soak runs on.
type soakFixture struct {
	t   *testing.T
	dir string
	db  *index.DB
	src *memstore.Store
	c   *blockcache.Cache
	oc  *cachetest.Cache // what db and c come from
}

func openSoakFixture(t *testing.T, opts blockcache.Options) *soakFixture {
	f := &soakFixture{t: t, dir: soakDir(t), src: memstore.New()}
	opts.BlockSize, opts.PartSize = testBlock, testPart
	f.oc = cachetest.Open(t, f.dir, f.src, opts)
	f.db, f.c = f.oc.DB, f.oc.C
	return f
}

func (f *soakFixture) close() { f.oc.Close() }

// soakDir is the cache dir: on tmpfs where there is one, so that the run
// spends its time in the cache's code and locks rather than in fsync.
func soakDir(t *testing.T) string {
	if _, err := os.Stat("/dev/shm"); err != nil {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/dev/shm", "s3cachefs-soak-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// setup puts the objects in S3 (both contents, so that both versions are
// known; the first is left current) and starts the job runner over a
// catalog that, like the daemon's, forgets versions S3 no longer holds.
func (s *soak) setup() {
	r := rand.New(rand.NewPCG(90, 90))
	for i := range soakHot + soakCold {
		o := &soakObject{key: fmt.Sprintf("cold/c%03d", i-soakHot)}
		maxSize := 2*testPart + testBlock/2
		if i < soakHot {
			o.key = fmt.Sprintf("hot/h%02d", i)
			maxSize = 2 * testPart
		}
		for v := 1; v >= 0; v-- {
			size := r.IntN(maxSize + 1) // sometimes 0, rarely block-aligned
			o.data[v] = cachetest.RandBytes(uint64(1000*i+v), size)
			o.meta[v] = s.f.src.Put(o.key, o.data[v])
		}
		s.objs = append(s.objs, o)
	}
	s.hot = s.objs[:soakHot]
	s.cat = index.NewCatalog(s.f.db, s.f.src, index.CatalogOptions{
		TTL: time.Hour, OnGone: func(gone []index.Object) { s.f.c.Forget(gone) },
	})
	s.jobs = prefetch.NewJobs(s.f.c, s.cat, s.f.db, prefetch.JobOptions{Objects: 2, MaxBytes: soakLimit})
	s.t.Cleanup(s.jobs.Close)
}

// reader opens objects, half of the time one of a few popular ones so that
// readers overlap, and reads each in one of three patterns.
func (s *soak) reader(ctx context.Context, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	buf := make([]byte, 3*testPart)
	for ctx.Err() == nil {
		o := s.objs[r.IntN(len(s.objs))]
		if r.IntN(2) == 0 {
			o = s.objs[r.IntN(soakHot+4)]
		}
		v := o.current()
		h, err := s.f.c.Open(context.Background(), v.meta)
		if err != nil {
			s.errorf("open %s: %v", o.key, err)
			return
		}
		switch r.IntN(3) {
		case 0: // a DataLoader reading a file through, in kernel-sized requests
			s.readSequential(ctx, h, v, 0, r, buf)
		case 1: // numpy: the end of the file first, then from somewhere in it
			size := v.meta.Size
			if s.read(ctx, h, v, max(size-100, 0), 100, false, buf) {
				s.readSequential(ctx, h, v, r.Int64N(size+1), r, buf)
			}
		default:
			s.readRandom(ctx, h, v, r, buf)
		}
		h.Close()
	}
}

func (s *soak) readSequential(ctx context.Context, h *blockcache.Handle, v soakVersion, off int64, r *rand.Rand, buf []byte) {
	const chunk = 128 << 10
	for off < v.meta.Size && ctx.Err() == nil {
		if !s.read(ctx, h, v, off, chunk, r.IntN(50) == 0, buf) {
			return
		}
		off += chunk
	}
}

func (s *soak) readRandom(ctx context.Context, h *blockcache.Handle, v soakVersion, r *rand.Rand, buf []byte) {
	for range 1 + r.IntN(16) {
		off := r.Int64N(v.meta.Size + 1)
		if !s.read(ctx, h, v, off, 1+r.IntN(len(buf)), r.IntN(50) == 0, buf) || ctx.Err() != nil {
			return
		}
	}
}

// read reads n bytes at off and checks them against v. With giveUp the
// reader's context is cancelled before the read, as a reader that gives
// up does: it must get the right bytes or context.Canceled, and the
// fetches it started must still serve the others. It reports whether the
// handle is worth reading on.
func (s *soak) read(ctx context.Context, h *blockcache.Handle, v soakVersion, off int64, n int, giveUp bool, buf []byte) bool {
	rctx := context.Background()
	if giveUp {
		c, cancel := context.WithCancel(rctx)
		cancel()
		rctx = c
	}
	got, err := h.ReadAt(rctx, buf[:n], off)
	s.reads.Add(1)
	switch {
	case err == nil:
	case errors.Is(err, index.ErrStale) && v.replaced():
		s.stale.Add(1)
		return false
	case giveUp && errors.Is(err, context.Canceled):
		s.cancelled.Add(1)
		return true
	default:
		s.errorf("read %s (%s) %d bytes at %d: %v", v.meta.Key, v.meta.ETag, n, off, err)
		return false
	}
	size := int64(len(v.data))
	want := v.data[min(off, size):min(off+int64(n), size)]
	if got != len(want) || !bytes.Equal(buf[:got], want) {
		s.wrong.Add(1)
		s.errorf("read %s (%s) %d bytes at %d: got %d bytes that differ from S3's %d", v.meta.Key, v.meta.ETag, n, off, got, len(want))
		return false
	}
	s.checked.Add(int64(got))
	return true
}

// prefetcher runs prefetch jobs on hot/ one after another, cancelling
// every third, and unpins each finished job once the next has pinned, as a
// user re-running `prefetch` and `prefetch --unpin` would. It returns how
// many jobs ended in each state.
func (s *soak) prefetcher(ctx context.Context) map[string]int {
	states := map[string]int{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	prev := ""
	for n := 0; ; n++ {
		p, err := s.jobs.Start(context.Background(), []string{"hot"})
		if err != nil {
			s.errorf("start prefetch job %d: %v", n, err)
			return states
		}
		if n%3 == 2 {
			if err := s.jobs.Cancel(p.ID); err != nil && !errors.Is(err, prefetch.ErrJobEnded) {
				s.errorf("cancel job %s: %v", p.ID, err)
			}
		}
		end, ok := s.jobEnd(ctx, p.ID, tick.C)
		if !ok {
			return states
		}
		states[end.State]++
		if end.State == "failed" {
			// Only an object replaced twice while the job ran may fail it.
			s.t.Logf("job %s failed: %v %s", p.ID, end.Failed, end.Error)
		}
		if err := s.f.db.Unpin(prev); err != nil {
			s.errorf("unpin job %s: %v", prev, err)
		}
		prev = p.ID
	}
}

// jobEnd looks at job id at every tick, as `s3cachefs prefetch` does,
// until it has ended (ok) or the run is over (a job of hot/, a few parts
// in memory, ends long before that unless something hangs).
func (s *soak) jobEnd(ctx context.Context, id string, tick <-chan time.Time) (prefetch.Progress, bool) {
	for {
		p, err := s.jobs.Get(id)
		if err != nil {
			s.errorf("job %s: %v", id, err)
			return p, false
		}
		if p.State != "running" {
			return p, true
		}
		select {
		case <-ctx.Done():
			return p, false
		case <-tick:
		}
	}
}

// replacer flips a random object to its other content every few
// milliseconds and lists its folder again, as the daemon does when a
// listing expires: the old version is forgotten, in use or not.
func (s *soak) replacer(ctx context.Context) {
	r := rand.New(rand.NewPCG(91, 91))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		o := s.objs[r.IntN(len(s.objs))]
		o.mu.Lock()
		o.cur = 1 - o.cur
		o.gen++
		_, err := s.f.src.Replace(o.key, o.data[o.cur])
		o.mu.Unlock()
		if err != nil {
			s.errorf("replace %s: %v", o.key, err)
			return
		}
		s.replacements.Add(1)
		if err := s.cat.Refresh(context.Background(), path.Dir(o.key)); err != nil {
			s.errorf("list %s: %v", path.Dir(o.key), err)
		}
	}
}

// sample records the live heap (after a GC) and the goroutine count thirty
// times over the run, and checks the cache limit at each.
func (s *soak) sample(ctx context.Context) (heap []uint64, maxGoroutines int) {
	tick := time.NewTicker(max(*soakFor/30, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return heap, maxGoroutines
		case <-tick.C:
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		heap = append(heap, ms.HeapAlloc)
		maxGoroutines = max(maxGoroutines, runtime.NumGoroutine())
		if used := s.f.c.Stats().UsedBytes; used > soakLimit {
			s.errorf("the cache counts %d bytes in use, over its %d limit", used, soakLimit)
		}
	}
}

// thirds returns the mean of the first and of the last third of xs.
func thirds(xs []uint64) (first, last uint64) {
	n := len(xs) / 3
	if n == 0 {
		return 0, 0
	}
	var a, b uint64
	for i := range n {
		a += xs[i]
		b += xs[len(xs)-1-i]
	}
	return a / uint64(n), b / uint64(n)
}

// checkQuiet checks, once every reader, job and fetch has ended, that no
// object is held, no cache file is open, no reservation is left in the
// usage count and the cache is within its limit on disk.
func (s *soak) checkQuiet() {
	t, c := s.t, s.f.c
	if n := c.Stats().OpenObjects; n != 0 {
		t.Errorf("%d objects still in use with every handle closed and every fetch done", n)
	}
	if fds := s.openCacheFiles(filepath.Join(s.f.dir, "objects")); len(fds) > 0 {
		t.Errorf("cache files still open with every handle closed: %v", fds)
	}
	var recorded int64
	if err := s.f.db.Records(func(r index.Record) bool { recorded += r.DiskUsage(); return true }); err != nil {
		t.Fatal(err)
	}
	if used := c.Stats().UsedBytes; used != recorded {
		t.Errorf("the cache counts %d bytes in use but its records take %d: a reservation leaked", used, recorded)
	}
	if du := blockcache.DiskUsed(s.f.dir); du > soakLimit {
		t.Errorf("the cache files take %d bytes on disk, over the %d limit", du, soakLimit)
	}
}

// checkCachedBytes reads back every block the index records and compares
// it with the content of that version.
func (s *soak) checkCachedBytes() {
	t := s.t
	byVersion := map[string][]byte{}
	for _, o := range s.objs {
		for v := range 2 {
			byVersion[o.key+"\x00"+o.meta[v].Version()] = o.data[v]
		}
	}
	var recs []index.Record
	if err := s.f.db.Records(func(r index.Record) bool { recs = append(recs, r); return true }); err != nil {
		t.Fatal(err)
	}
	var blocks int64
	for _, r := range recs {
		data, ok := byVersion[r.Key+"\x00"+r.Version]
		if !ok {
			t.Errorf("record %s of %s has version %s, which S3 never held", r.ID, r.Key, r.Version)
			continue
		}
		file, err := os.ReadFile(s.f.c.FilePath(r.ID))
		if err != nil {
			t.Errorf("cache file of %s: %v", r.Key, err)
			continue
		}
		for b := range r.Present.Len() {
			if !r.Present.Has(b) {
				continue
			}
			lo, hi := b*r.BlockSize, min((b+1)*r.BlockSize, r.Size)
			if int64(len(file)) < hi || !bytes.Equal(file[lo:hi], data[lo:hi]) {
				t.Errorf("cached block %d of %s (%s) differs from S3's", b, r.Key, r.Version)
			}
			blocks++
		}
	}
	t.Logf("checked %d cached blocks of %d records against S3", blocks, len(recs))
}

// openCacheFiles lists this process's open files under dir.
func (s *soak) openCacheFiles(dir string) []string {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		s.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && strings.HasPrefix(target, dir+"/") {
			out = append(out, target)
		}
	}
	return out
}
