package blockcache

import (
	"errors"
	"os"

	"s3cachefs/index"
)

// Version replacement (doc.go, "Versions").

// makeCurrent records o as the cached version of its key and drops the
// data of the version it replaces: an object changed in S3 leaves no old
// bytes behind.
func (c *Cache) makeCurrent(o *object) {
	stale, err := c.db.SetCurrent(o.obj.Key, o.id)
	if err != nil {
		c.log.Warn("record current version", "key", o.obj.Key, "err", err)
		return
	}
	for _, id := range stale {
		if err := c.DropVersion(id); err != nil {
			c.log.Warn("drop old version", "key", o.obj.Key, "err", err)
		}
	}
}

// DropVersion deletes the record (and pins), then the file, of object
// version id. A version in use is marked and dropped by its last release
// instead.
func (c *Cache) DropVersion(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, busy := c.objs[id]; busy {
		if !o.dropping { // else it is being evicted already
			o.superseded.Store(true)
		}
		return nil
	}
	return c.dropLocked(id)
}

// dropLocked deletes the record, then the file, of id; c.mu is held so
// that nobody opens it meanwhile.
func (c *Cache) dropLocked(id string) error {
	delete(c.checked, id)
	rec, ok, err := c.db.DeleteRecord(id)
	if err != nil || !ok {
		return err
	}
	return c.removeDeleted(rec)
}

// removeDeleted gives back the space of rec, whose record was just
// deleted, and removes its cache file.
func (c *Cache) removeDeleted(rec index.Record) error {
	c.used.Add(-rec.DiskUsage())
	if err := os.Remove(objectPath(c.opts.Dir, rec.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
