package blockcache

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Writes past the page cache. A prefetch job fetches far more than anyone
// reads soon; written through the page cache, its bytes would push the
// trainer's working set out of memory and cost a copy each (the largest
// share of the daemon's CPU while prefetching). So fetches started in the
// background write their whole blocks with O_DIRECT: the disk takes them
// from the block buffer itself. Reads that come later go through the page
// cache as usual; the kernel keeps the two coherent. A block that is not a
// multiple of directAlign long (an object's last) goes through the page
// cache, and so does everything on a filesystem that refuses O_DIRECT.

// directAlign is the alignment O_DIRECT asks of buffers, offsets and
// lengths: 4096 covers every logical block size in use.
const directAlign = 4096

// alignedBlock returns a buffer of n bytes whose start is directAlign-aligned.
func alignedBlock(n int64) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+int(n) : skip+int(n)]
}

// directWriter writes whole blocks of one cache file with O_DIRECT while
// bypass says so, and the rest, or everything once the filesystem refused,
// through file.
type directWriter struct {
	c      *Cache
	file   *os.File    // the cache file, through the page cache
	direct *os.File    // the same file opened with O_DIRECT; nil: not (yet) used
	path   string      // names file for the O_DIRECT open; "": no O_DIRECT
	bypass func() bool // asked before each block
}

// newWriter returns the writer for a fetch of o: direct while bypass says
// so, unless the cache filesystem has refused O_DIRECT.
func (c *Cache) newWriter(o *object, bypass func() bool) *directWriter {
	w := &directWriter{c: c, file: o.file, bypass: bypass}
	if !c.noDirect.Load() {
		// The open file itself, whatever happens to its name.
		w.path = fmt.Sprintf("/proc/self/fd/%d", o.file.Fd())
	}
	return w
}

// WriteAt writes p at off, past the page cache when it can.
func (w *directWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.path == "" || len(p) == 0 || len(p)%directAlign != 0 || off%directAlign != 0 ||
		uintptr(unsafe.Pointer(&p[0]))%directAlign != 0 || !w.bypass() {
		return w.file.WriteAt(p, off)
	}
	if w.direct == nil {
		f, err := os.OpenFile(w.path, os.O_WRONLY|unix.O_DIRECT, 0)
		if err != nil {
			return w.fallBack(p, off, err)
		}
		w.direct = f
	}
	n, err := w.direct.WriteAt(p, off)
	if errors.Is(err, unix.EINVAL) {
		return w.fallBack(p, off, err)
	}
	return n, err
}

// fallBack writes p, and the rest of this fetch, through the page cache,
// because opening or writing with O_DIRECT failed with err. EINVAL is the
// filesystem refusing O_DIRECT: that is said once in the log and holds for
// every later fetch.
func (w *directWriter) fallBack(p []byte, off int64, err error) (int, error) {
	if errors.Is(err, unix.EINVAL) && w.c.noDirect.CompareAndSwap(false, true) {
		w.c.log.Info("cache filesystem refuses O_DIRECT; prefetched blocks go through the page cache", "err", err)
	}
	w.path = ""
	return w.file.WriteAt(p, off)
}

// Close closes the O_DIRECT file, if one was opened.
func (w *directWriter) Close() error {
	if w.direct == nil {
		return nil
	}
	return w.direct.Close()
}
