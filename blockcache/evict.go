package blockcache

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/index"
)

// ErrCacheFull means a fetch could not get room on SSD: everything that
// could be evicted was, and what is left is pinned or in use. Reads fall
// back to reading from S3 without caching.
var ErrCacheFull = errors.New("cache is full")

// diskBlock is the filesystem block size usage is rounded to.
const diskBlock = index.DiskBlock

// missingUsage is the space the blocks in [first, last] that o lacks
// would take.
func (c *Cache) missingUsage(o *object, first, last int64) int64 {
	bs := c.opts.BlockSize
	o.mu.Lock()
	defer o.mu.Unlock()
	var n int64
	for b := first; b <= last; b++ {
		if !o.rec.Present.Has(b) {
			n += roundUp(min(bs, o.obj.Size-b*bs), diskBlock)
		}
	}
	return n
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// loadUsage reads what the index records, once at start: its counters,
// kept with the records, not a walk of the records or the cache folder.
func (c *Cache) loadUsage() error {
	st, err := c.db.Stats()
	c.used.Store(st.DiskBytes)
	return err
}

// reserve claims n bytes of SSD for a fetch, evicting least recently used
// objects that are neither pinned nor in use until the cache limit and the
// free-space floor allow it (with EvictNone, none: the fetch fails with
// ErrCacheFull). The caller gives back what it did not record.
func (c *Cache) reserve(n int64) error {
	c.evictMu.Lock()
	defer c.evictMu.Unlock()
	if !c.fits(n) {
		if c.opts.Eviction == EvictNone {
			c.full.Store(true)
			return ErrCacheFull
		}
		// Make some room beyond this fetch, so that a full cache does not
		// evict on every part; but not much: every fetch waits while a
		// round runs, and a round over small files unlinks one per 4 KiB
		// (64 MiB would be 16,384 of them).
		if err := c.evictLocked(n + evictHeadroom*c.opts.PartSize); err != nil {
			return err
		}
		if !c.fits(n) {
			c.full.Store(true)
			return ErrCacheFull
		}
	}
	c.full.Store(false)
	c.used.Add(n)
	return nil
}

// unreserve gives back bytes reserved but not recorded.
func (c *Cache) unreserve(n int64) {
	if n > 0 {
		c.used.Add(-n)
	}
}

// fits reports whether n more bytes keep the cache under its limit and
// the filesystem above its free-space floor.
func (c *Cache) fits(n int64) bool { return c.shortfall(n) == 0 }

// shortfall is how many bytes must be freed for n more to fit (0: they
// fit); a filesystem whose free space cannot be read never fits.
func (c *Cache) shortfall(n int64) int64 {
	var short int64
	if c.opts.MaxBytes > 0 {
		short = max(short, c.used.Load()+n-c.opts.MaxBytes)
	}
	if c.opts.MinFree > 0 {
		free, err := freeSpace(c.opts.Dir)
		if err != nil {
			return math.MaxInt64
		}
		short = max(short, c.opts.MinFree-(free-n))
	}
	return short
}

// noRoom turns a cache-file write that found its filesystem full (ENOSPC,
// or EDQUOT over a quota) into ErrCacheFull, so that the read is served
// from S3 uncached instead of failing: the free space reserve checked can
// be taken by another process before the write lands, or never be checked
// (--min-free 0). Blocks the failed write touched are not recorded, so
// nothing half-written is ever served.
func (c *Cache) noRoom(err error) error {
	if !errors.Is(err, unix.ENOSPC) && !errors.Is(err, unix.EDQUOT) {
		return err
	}
	c.full.Store(true)
	return fmt.Errorf("%w: %w", ErrCacheFull, err)
}

// freeSpace is what the filesystem of dir has free for us.
func freeSpace(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// evictHeadroom is how many fetch parts of room a round frees beyond the
// reservation that started it.
const evictHeadroom = 2

// evictChunk is how many records, oldest first, eviction reads per index
// transaction.
const evictChunk = 256

// evictGen is what must stay unchanged for the records eviction found
// unevictable to stay so: the pins (none dropped) and the objects in use
// (none released).
type evictGen struct{ pins, releases uint64 }

// evictMemo is where the last eviction round stopped: every record up to
// pos, oldest first, was pinned, open or evicted when generation gen was
// current, so while gen holds the next round starts after pos instead of
// reading them all again. Guarded by evictMu.
type evictMemo struct {
	pos index.AccessPos
	at  time.Time // LastAccess of the record at pos
	gen evictGen
}

func (c *Cache) evictGen() evictGen {
	return evictGen{pins: c.db.PinsGen(), releases: c.releases.Load()}
}

// evictLocked removes least recently used objects, skipping pinned ones
// and ones in use, until need bytes fit or nothing is left to remove. It
// reads the index's access order in chunks, from where the last round
// stopped while nothing has been unpinned or released since, and stops as
// soon as enough is freed. evictMu is held.
func (c *Cache) evictLocked(need int64) error {
	// Opens noted since the last flush count: a file opened a moment ago
	// must not be taken as least recently used.
	c.flushTouchesNow()
	gen := c.evictGen()
	var m evictMemo
	if c.memo.pos != nil && c.memo.gen == gen {
		m = c.memo
	}
	defer func() {
		m.gen = gen
		c.memo = m
		if m.pos == nil {
			c.memoTime.Store(math.MinInt64)
		} else {
			c.memoTime.Store(m.at.UnixNano())
		}
	}()
	for {
		short := c.shortfall(need)
		if short == 0 {
			return nil
		}
		chunk, err := c.db.Oldest(m.pos, evictChunk)
		if err != nil {
			return fmt.Errorf("list cached objects: %w", err)
		}
		if len(chunk) == 0 {
			return nil
		}
		var ids []string
		var freed int64
		for _, a := range chunk {
			if freed >= short {
				break
			}
			m.pos, m.at = a.Pos, a.LastAccess
			if c.db.PinnedKey(a.Key) {
				continue
			}
			ids = append(ids, a.ID)
			freed += a.DiskBytes
		}
		n, err := c.evictIDs(ids)
		c.evictions.Add(int64(n))
		if err != nil {
			return err
		}
	}
}

// EvictObject drops the cached data of object version id (its record, its
// pins and its file) unless it is in use, and reports whether it did. It
// does not count as an eviction in Stats: it is asked for, not made room.
func (c *Cache) EvictObject(id string) (bool, error) {
	n, err := c.evictIDs([]string{id})
	return n == 1, err
}

// FreeSpace is how many bytes the cache filesystem has free for us.
func (c *Cache) FreeSpace() (int64, error) { return freeSpace(c.opts.Dir) }

// errDropped is the load error of a placeholder eviction puts in c.objs
// while it drops an object: whoever waited on it opens the object afresh.
var errDropped = errors.New("object dropped while opening")

// evictIDs drops the records, then the files, of those of ids that are
// not in use, and returns how many it dropped. Cache.mu is held only to
// claim them and to let them go: each gets a placeholder in c.objs, so
// that an open of one waits (and then opens it afresh, fetching again)
// while eviction deletes the records in one index transaction and unlinks
// the files, and opens of every other object go on meanwhile.
func (c *Cache) evictIDs(ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	var claimed []*object
	c.mu.Lock()
	for _, id := range ids {
		if _, busy := c.objs[id]; busy {
			continue
		}
		o := &object{id: id, ready: make(chan struct{}), dropping: true}
		c.objs[id] = o
		delete(c.checked, id)
		claimed = append(claimed, o)
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		for _, o := range claimed {
			if c.objs[o.id] == o {
				delete(c.objs, o.id)
			}
			o.loadErr = errDropped
			close(o.ready)
		}
		c.mu.Unlock()
	}()
	claimedIDs := make([]string, len(claimed))
	for i, o := range claimed {
		claimedIDs[i] = o.id
	}
	gone, err := c.db.DeleteRecords(claimedIDs)
	if err != nil {
		return 0, fmt.Errorf("evict: %w", err)
	}
	if err := c.removeAll(gone); err != nil {
		return len(gone), fmt.Errorf("evict: %w", err)
	}
	return len(gone), nil
}

// unlinkers is how many cache files eviction unlinks at a time. Unlinking
// a small file that was synced costs ext4 about 240 µs here, most of it
// waiting for its journal; eight at a time take about 140 µs each.
const unlinkers = 8

// removeAll is removeDeleted for each of recs, up to unlinkers at a time;
// every file is tried whatever happens to the others, and the first error
// comes back with how many failed.
func (c *Cache) removeAll(recs []index.Record) error {
	if len(recs) == 1 {
		return c.removeDeleted(recs[0])
	}
	var wg sync.WaitGroup
	errs := make([]error, len(recs))
	next := make(chan int)
	for range min(unlinkers, len(recs)) {
		wg.Go(func() {
			for i := range next {
				errs[i] = c.removeDeleted(recs[i])
			}
		})
	}
	for i := range recs {
		next <- i
	}
	close(next)
	wg.Wait()
	var first error
	failed := 0
	for _, err := range errs {
		if err != nil {
			first = cmp.Or(first, err)
			failed++
		}
	}
	if failed > 1 {
		return fmt.Errorf("%w (and %d more files)", first, failed-1)
	}
	return first
}

// Forget drops the cached data of object versions S3 no longer holds
// (deleted or replaced). A version in use is dropped on its last close.
func (c *Cache) Forget(objs []index.Object) {
	for _, o := range objs {
		if err := c.DropVersion(ObjectID(c.opts.Bucket, o)); err != nil {
			c.log.Warn("drop data of a changed object", "key", o.Key, "err", err)
			continue
		}
		c.log.Debug("forgot an object changed or deleted in S3", "key", o.Key)
	}
}
