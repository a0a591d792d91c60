package blockcache

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/index"
)

// ErrCacheFull means a fetch could not get room on SSD: everything that
// could be evicted was, and what is left is pinned or in use. Reads fall
// back to reading from S3 without caching.
var ErrCacheFull = errors.New("cache is full")

// diskBlock is the filesystem block size usage is rounded to.
const diskBlock = 4096

// diskUsage is the SSD space the present blocks of rec take: each block
// rounded up to whole filesystem blocks, as a sparse file allocates them.
func diskUsage(rec index.Record) int64 {
	n := rec.Present.Count() * rec.BlockSize
	if last := rec.Present.Len() - 1; last >= 0 && rec.Present.Has(last) {
		tail := rec.Size - last*rec.BlockSize
		n += roundUp(tail, diskBlock) - rec.BlockSize
	}
	return n
}

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

// loadUsage sums what the index records, once at start: it reads the
// index, not the cache folder.
func (c *Cache) loadUsage() error {
	var used int64
	err := c.db.Records(func(r index.Record) bool {
		used += diskUsage(r)
		return true
	})
	c.used.Store(used)
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
		// scan the index on every part.
		if err := c.evictLocked(n + c.opts.PartSize*int64(c.opts.MaxFetches)); err != nil {
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
func (c *Cache) fits(n int64) bool {
	if c.opts.MaxBytes > 0 && c.used.Load()+n > c.opts.MaxBytes {
		return false
	}
	if c.opts.MinFree > 0 {
		free, err := freeSpace(c.opts.Dir)
		if err != nil || free-n < c.opts.MinFree {
			return false
		}
	}
	return true
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

// victim is an object version eviction may remove.
type victim struct {
	id     string
	access time.Time
}

// evictLocked removes least recently used objects, skipping pinned ones
// and ones in use, until need bytes fit or nothing is left to remove.
func (c *Cache) evictLocked(need int64) error {
	var vs []victim
	err := c.db.Records(func(r index.Record) bool {
		vs = append(vs, victim{id: r.ID, access: r.LastAccess})
		return true
	})
	if err != nil {
		return fmt.Errorf("list cached objects: %w", err)
	}
	slices.SortFunc(vs, func(a, b victim) int { return a.access.Compare(b.access) })
	for _, v := range vs {
		if c.fits(need) {
			return nil
		}
		if pins, err := c.db.Pinned(v.id); err != nil || len(pins) > 0 {
			continue
		}
		evicted, err := c.evictOne(v)
		if err != nil {
			return err
		}
		if evicted {
			c.evictions.Add(1)
		}
	}
	return nil
}

// EvictObject drops the cached data of object version id (its record, its
// pins and its file) unless it is in use, and reports whether it did. It
// does not count as an eviction in Stats: it is asked for, not made room.
func (c *Cache) EvictObject(id string) (bool, error) {
	return c.evictOne(victim{id: id})
}

// FreeSpace is how many bytes the cache filesystem has free for us.
func (c *Cache) FreeSpace() (int64, error) { return freeSpace(c.opts.Dir) }

// evictOne deletes the record, then the file, of v unless it is in use.
// Holding Cache.mu keeps it from being opened meanwhile.
func (c *Cache) evictOne(v victim) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, busy := c.objs[v.id]; busy {
		return false, nil
	}
	if err := c.dropLocked(v.id); err != nil {
		return false, fmt.Errorf("evict: %w", err)
	}
	return true, nil
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
