package blockcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"s3cachefs/index"
)

// Handle is one open of one object version. ReadAt may be called
// concurrently; Close once.
type Handle struct {
	// Set once in Open.
	c *Cache
	o *object

	mu     sync.Mutex // guards next, window, closed and the held block
	next   int64      // offset just past the previous read
	window int64      // read-ahead window; grows while reads are sequential
	closed bool
	// held is a checked block the last read ended inside (a pool
	// buffer, nil if none), heldBlock its number and heldLen its length:
	// a sequential reader's next read starts in it, and is served from
	// it rather than reading and checking the block again.
	held      *[]byte
	heldBlock int64
	heldLen   int
}

// Size is the object's size in bytes.
func (h *Handle) Size() int64 { return h.o.obj.Size }

// Complete reports whether every block of the object is on SSD.
func (h *Handle) Complete() bool {
	h.o.mu.Lock()
	defer h.o.mu.Unlock()
	return h.o.rec.Present.Full()
}

// Backing returns a new descriptor of the object's cache file when every
// block is on SSD and matches its recorded sum, else nil. Blocks not yet
// checked in this run are read back and checked first, and so is every
// block when the file changed since its blocks were last known to match
// it (its stamp moved: somebody wrote to it); a damaged block is forgotten
// (so reads fetch it again) and Backing returns nil. The kernel may read
// the file it returns directly (FUSE passthrough), bypassing every check
// of ReadAt, so it is never a file with a hole or an unproven block.
// The caller owns the returned file and closes it; it stays valid after
// the Handle and the Cache are closed.
func (h *Handle) Backing() *os.File {
	if !h.Complete() {
		return nil
	}
	st, err := h.checkAll()
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			h.c.log.Warn("check cached file", "key", h.o.obj.Key, "err", err)
		}
		return nil
	}
	// check forgets a damaged block; a file that lost one is not complete.
	if !h.Complete() {
		return nil
	}
	// A descriptor of its own: the cache closes o.file when the last
	// handle goes, or at Close, while the kernel may still read this one.
	fd, err := unix.FcntlInt(h.o.file.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		h.c.log.Warn("duplicate cache file descriptor", "key", h.o.obj.Key, "err", err)
		return nil
	}
	if now, err := stampOf(h.o.file); err != nil || now != st {
		// Changed while it was checked: the next open checks it again.
		unix.Close(fd)
		return nil
	}
	return os.NewFile(uintptr(fd), h.o.file.Name())
}

// checkAll checks every block of the object not known to match the cache
// file as it is now, and returns the stamp of the file they match.
func (h *Handle) checkAll() (fileStamp, error) {
	o := h.o
	st, err := stampOf(o.file)
	if err != nil {
		return st, err
	}
	o.mu.Lock()
	if st != o.stamp {
		// Changed since its blocks were known to match: none is.
		o.verified = index.Blocks{}
	}
	o.mu.Unlock()
	if o.obj.Size > 0 {
		if err := h.c.check(o, 0, (o.obj.Size-1)/h.c.opts.BlockSize); err != nil {
			return st, err
		}
	}
	o.mu.Lock()
	o.stamp = st
	o.mu.Unlock()
	return st, nil
}

// ReadAt reads up to len(p) bytes at off. It returns fewer only at the end
// of the object, and 0, nil at or past it. Missing blocks are fetched
// first; cancelling ctx abandons the wait but not the fetch.
func (h *Handle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	size := h.o.obj.Size
	if off >= size || len(p) == 0 {
		return 0, nil
	}
	end := min(off+int64(len(p)), size)
	p = p[:end-off]
	c := h.c
	first, last := c.blockSpan(off, end)
	h.readAhead(off, end)
	waited, err := c.ensure(ctx, h.o, first, last)
	var n int
	if err == nil {
		if n, err = h.readChecked(p, off); errors.Is(err, ErrCorrupt) {
			// Damaged on SSD: fetched again, once.
			waited = true
			if _, err = c.ensure(ctx, h.o, first, last); err == nil {
				n, err = h.readChecked(p, off)
			}
		}
	}
	if errors.Is(err, ErrCacheFull) {
		return c.readUncached(ctx, h.o, p, off)
	}
	if err != nil {
		return 0, err
	}
	if waited {
		c.misses.Add(1)
	} else {
		c.hits.Add(1)
		c.fromSSD.Add(int64(n))
	}
	return n, nil
}

// readChecked fills p with the bytes at off, which are present on SSD.
// Every block they come from is read whole and compared with its recorded
// sum on every read, not only the first of a run: whatever changed the
// cache file since (a stray write, a bad copy, bit rot) is caught before
// a byte of it reaches a reader. A block found damaged is forgotten and
// ErrCorrupt returned.
func (h *Handle) readChecked(p []byte, off int64) (int, error) {
	bs := h.c.opts.BlockSize
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		n, err := h.copyBlock(p[done:], pos/bs, int(pos%bs))
		if err != nil {
			return 0, err
		}
		done += n
	}
	return done, nil
}

// copyBlock copies block b of the object, from byte from of the block on,
// into dst, and returns how many bytes it copied. The block is the held
// one, or is read and checked, and then held if dst ends inside it.
func (h *Handle) copyBlock(dst []byte, b int64, from int) (int, error) {
	h.mu.Lock()
	if h.held != nil && h.heldBlock == b {
		n := copy(dst, (*h.held)[from:h.heldLen])
		h.mu.Unlock()
		return n, nil
	}
	h.mu.Unlock()
	c := h.c
	if fb, ok := c.takeFresh(h.o, b); ok {
		// Just fetched for this reader: summed as it was written.
		return h.keep(fb.buf, b, copy(dst, (*fb.buf)[from:fb.n]), from, fb.n), nil
	}
	if n := int(min(c.opts.BlockSize, h.o.obj.Size-b*c.opts.BlockSize)); from == 0 && len(dst) >= n {
		// The read takes the whole block: read and check it in place.
		// (A damaged block's bytes are left in dst, but with an error.)
		data, err := c.readBlock(h.o, b, dst)
		return len(data), err
	}
	pb := c.blocks.Get().(*[]byte)
	data, err := c.readBlock(h.o, b, *pb)
	if err != nil {
		c.blocks.Put(pb)
		return 0, err
	}
	return h.keep(pb, b, copy(dst, data[from:]), from, len(data)), nil
}

// keep holds pb, block b of blockLen bytes of which a read just copied n
// from byte from on, unless the read took it to its end (no later read is
// likely to start in it) or the bound of held blocks is reached; else pb
// goes back to the pool. It returns n.
func (h *Handle) keep(pb *[]byte, b int64, n, from, blockLen int) int {
	c := h.c
	if from+n == blockLen {
		c.blocks.Put(pb)
		return n
	}
	h.mu.Lock()
	old := pb
	if !h.closed && (h.held != nil || c.holdOne()) {
		old, h.held, h.heldBlock, h.heldLen = h.held, pb, b, blockLen
	}
	h.mu.Unlock()
	if old != nil {
		c.blocks.Put(old)
	}
	return n
}

// holdOne takes one of the blocks that open handles may hold between
// reads, and reports whether there was one: they are bounded (twice
// Options.MaxFetches), so that many open files do not pin a block each.
func (c *Cache) holdOne() bool {
	if c.heldBlocks.Add(1) > int64(2*c.opts.MaxFetches) {
		c.heldBlocks.Add(-1)
		return false
	}
	return true
}

// readAhead notes a read of [off, end) and, while reads are sequential,
// starts fetches for the window past end without waiting for them.
func (h *Handle) readAhead(off, end int64) {
	c := h.c
	h.mu.Lock()
	// The kernel sends a sequential reader's requests a few at a time,
	// not always in order, so "sequential" means near where the last read
	// ended. The first read of a handle at offset 0 counts: most files are
	// read from the start.
	sequential := off >= h.next-c.opts.PartSize && off <= h.next+c.opts.PartSize
	h.next = max(h.next, end)
	if !sequential {
		h.next = end
		h.window = 0
		h.mu.Unlock()
		return
	}
	// A reader starting at offset 0 most likely reads the whole file:
	// start with half the largest window, so that most of a file's parts
	// are in flight at once from its first read. Other sequential readers
	// start at two parts. Each later sequential read quadruples it: a
	// second read comes only once the first part has arrived.
	switch {
	case h.window == 0 && off == 0:
		h.window = c.opts.ReadAhead / 2
	default:
		h.window = max(4*h.window, 2*c.opts.PartSize)
	}
	h.window = min(h.window, c.opts.ReadAhead)
	window := h.window
	h.mu.Unlock()
	if h.Complete() {
		return
	}
	stop := min(end+window, h.o.obj.Size)
	if stop <= end {
		return
	}
	first, last := c.blockSpan(end, stop)
	for p := c.partOf(first); p <= c.partOf(last); p++ {
		c.startFetch(h.o, p, true)
	}
}

// Close releases the handle. Fetches it started run on to completion.
func (h *Handle) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	held := h.held
	h.held = nil
	h.mu.Unlock()
	if held != nil {
		h.c.blocks.Put(held)
		h.c.heldBlocks.Add(-1)
	}
	h.o.handles.Add(-1)
	h.c.release(h.o)
	return nil
}

// readUncached serves a read straight from S3 when the cache has no room
// for it; nothing is written or recorded. A body that breaks off is asked
// for again from where it stopped, within the same budget as a fetch.
func (c *Cache) readUncached(ctx context.Context, o *object, p []byte, off int64) (int, error) {
	done := 0
	retries := bodyRetries{limit: c.opts.BodyAttempts}
	for {
		n, err := c.getInto(ctx, o, p[done:], off+int64(done))
		done += n
		if err == nil {
			c.uncached.Add(1)
			return done, nil
		}
		if ctx.Err() != nil {
			return 0, err
		}
		if again, final := retries.next(err, int64(n)); !again {
			return 0, final
		}
		if err := retries.wait(ctx); err != nil {
			return 0, err
		}
	}
}

// getInto fills p with the bytes at off of o with one ranged GET. It
// returns how many bytes it got; a body that breaks off wraps *bodyError.
func (c *Cache) getInto(ctx context.Context, o *object, p []byte, off int64) (int, error) {
	what := fmt.Sprintf("%s bytes %d-%d", o.obj.Key, off, off+int64(len(p))-1)
	body, err := c.src.GetRange(ctx, o.obj.Key, o.obj.ETag, off, int64(len(p)))
	if err != nil {
		return 0, fmt.Errorf("get %s: %w", what, err)
	}
	defer body.Close()
	n, err := io.ReadFull(body, p)
	if err != nil {
		return n, fmt.Errorf("read %s: %w", what, &bodyError{err})
	}
	return n, nil
}
