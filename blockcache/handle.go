package blockcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Handle is one open of one object version. ReadAt may be called
// concurrently; Close once.
type Handle struct {
	// Set once in Open.
	c *Cache
	o *object

	mu     sync.Mutex // guards next, window and closed
	next   int64      // offset just past the previous read
	window int64      // read-ahead window; grows while reads are sequential
	closed bool
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
// checked in this run are read back and checked first; a damaged one is
// forgotten (so reads fetch it again) and Backing returns nil. The kernel
// may read the file it returns directly (FUSE passthrough), bypassing every
// check of ReadAt, so it is never a file with a hole or an unproven block.
// The caller owns the returned file and closes it; it stays valid after
// the Handle and the Cache are closed.
func (h *Handle) Backing() *os.File {
	if !h.Complete() {
		return nil
	}
	if h.o.obj.Size > 0 {
		last := (h.o.obj.Size - 1) / h.c.opts.BlockSize
		if err := h.c.check(h.o, 0, last); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				h.c.log.Warn("check cached file", "key", h.o.obj.Key, "err", err)
			}
			return nil
		}
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
	return os.NewFile(uintptr(fd), h.o.file.Name())
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
	if err == nil {
		if err = c.check(h.o, first, last); errors.Is(err, ErrCorrupt) {
			// Damaged on SSD: fetched again, once.
			waited = true
			if _, err = c.ensure(ctx, h.o, first, last); err == nil {
				err = c.check(h.o, first, last)
			}
		}
	}
	if errors.Is(err, ErrCacheFull) {
		return c.readUncached(ctx, h.o, p, off)
	}
	if err != nil {
		return 0, err
	}
	n, err := readFile(h.o, p, off)
	if waited {
		c.misses.Add(1)
	} else {
		c.hits.Add(1)
		c.fromSSD.Add(int64(n))
	}
	return n, err
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
	h.mu.Unlock()
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
