package blockcache

// Fresh blocks: bytes a reader is about to take, kept in memory.
//
// A block fetched while a reader has its object open is kept in the
// fetch's buffer, up to half of Options.MaxFetches blocks across the
// cache, and
// written past the page cache (direct.go); the first read of it takes that
// buffer: it is served from memory, neither read back from SSD nor summed
// again (the fetch summed these very bytes). On this path a byte costs one copy into the buffer and one to
// the reader; through the page cache it cost a copy into new page-cache
// pages, one out of them, and a check, and filling page-cache pages is the
// dearest of these (issue 11's profile: a third of the daemon's CPU).
//
// Where each fetched block goes:
//
//	object open, block kept      O_DIRECT, and served from memory
//	object open, bound reached   through the page cache: read back from
//	                             there soon (cheap), and checked
//	nobody has the object open   O_DIRECT (a prefetch: nobody reads it
//	                             soon; it must not push the readers'
//	                             working set out of memory)
//
// A block read back from SSD that went past the page cache costs a fill of
// new page-cache pages from disk, as dear as a write through it, so only
// blocks that are kept, or that nobody waits for, go past it.
//
// A fresh block holds the bytes of one object version, which never change,
// so it can never be stale; it is served only once the block is recorded
// present, like every other byte. The last release of an object gives
// back whatever it still keeps.

// reserveFresh reports whether the block about to be written for o will
// be kept for a reader: only while a handle has o open, and within the
// bound, which it then counts the block against. The caller keeps it with
// keepFresh, or gives the reservation back with unreserveFresh.
func (c *Cache) reserveFresh(o *object) bool {
	if o.handles.Load() == 0 {
		return false
	}
	if c.freshBlocks.Add(1) > c.freshLimit() {
		c.freshBlocks.Add(-1)
		return false
	}
	return true
}

// freshLimit bounds the blocks kept across the cache: half as many as GETs
// may be in flight, each of which holds a block buffer too.
func (c *Cache) freshLimit() int64 { return max(1, int64(c.opts.MaxFetches)/2) }

// unreserveFresh gives back a reservation that was not used.
func (c *Cache) unreserveFresh() { c.freshBlocks.Add(-1) }

// keepFresh keeps the buffer pb holding block b of o (n bytes, just
// written) for the next read of it, under a reservation: pb is no longer
// the caller's.
func (c *Cache) keepFresh(o *object, b int64, pb *[]byte, n int) {
	o.mu.Lock()
	if o.fresh == nil {
		o.fresh = make(map[int64]freshBlock)
	}
	old, had := o.fresh[b]
	o.fresh[b] = freshBlock{buf: pb, n: n}
	o.mu.Unlock()
	if had {
		// Fetched again (it was found damaged on SSD): same bytes.
		c.putFresh(old)
	}
}

// freshBlock is one kept block: its buffer and its length.
type freshBlock struct {
	buf *[]byte
	n   int
}

// takeFresh hands over block b of o if o keeps it: the caller owns the
// buffer then, and puts it back into c.blocks (or holds it) when done.
func (c *Cache) takeFresh(o *object, b int64) (freshBlock, bool) {
	if c.freshBlocks.Load() == 0 {
		// None kept anywhere (the common case on SSD reads): no lock.
		return freshBlock{}, false
	}
	o.mu.Lock()
	fb, ok := o.fresh[b]
	if ok {
		delete(o.fresh, b)
	}
	o.mu.Unlock()
	if ok {
		c.freshBlocks.Add(-1)
		c.freshServed.Add(1)
	}
	return fb, ok
}

// dropFreshLocked gives back every block o keeps. Its last release calls
// it with c.mu held: nobody else uses o then, so o.mu (which must not be
// taken inside c.mu) is not needed.
func (c *Cache) dropFreshLocked(o *object) {
	for _, fb := range o.fresh {
		c.putFresh(fb)
	}
	o.fresh = nil
}

// putFresh returns a kept block's buffer to the pool.
func (c *Cache) putFresh(fb freshBlock) {
	c.freshBlocks.Add(-1)
	c.blocks.Put(fb.buf)
}
