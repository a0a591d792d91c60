package blockcache

import (
	"errors"
	"os"

	"s3cachefs/index"
)

// Version replacement (doc.go, "Versions").

// claimCurrentLocked returns the claim to wait on before a reader may use
// blocks just committed (nil once o is current), and whether the caller
// made it: then its commit records o as current and it calls madeCurrent.
// o.mu is held.
func (o *object) claimCurrentLocked() (claim chan struct{}, mine bool) {
	if o.curSet {
		return nil, false
	}
	if o.curClaim == nil {
		o.curClaim = make(chan struct{})
		mine = true
	}
	return o.curClaim, mine
}

// madeCurrent ends the claim of the commit that recorded o as the current
// version of its key (res is its result): it drops the data of the
// versions it replaced, so an object changed in S3 leaves no old bytes
// behind, then wakes the commits waiting on the claim.
func (c *Cache) madeCurrent(o *object, claim chan struct{}, res index.Added) {
	if res.Err == nil {
		for _, id := range res.Stale {
			if err := c.DropVersion(id); err != nil {
				c.log.Warn("drop old version", "key", o.obj.Key, "err", err)
			}
		}
	}
	o.mu.Lock()
	o.curSet = res.Err == nil
	o.curClaim = nil
	o.mu.Unlock()
	close(claim)
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
