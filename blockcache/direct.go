package blockcache

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Writes past the page cache. Written through the page cache, fetched
// bytes cost a copy each into new page-cache pages, the dearest work on the
// fetch path, and push the trainer's working set out of memory. So a
// fetch writes its whole blocks with O_DIRECT, the disk taking them from
// the block buffer itself, wherever nobody reads them back from SSD soon:
// blocks a reader takes from memory (fresh.go) and blocks nobody has open
// (a prefetch's). Blocks a reader will read back go through the page cache
// (fresh.go has the table); the kernel keeps the two kinds coherent. A
// block that is not a multiple of directAlign long (an object's last) goes
// through the page cache, and so does everything on a filesystem that
// refuses O_DIRECT.

// directAlign is the alignment O_DIRECT asks of buffers, offsets and
// lengths: 4096 covers every logical block size in use.
const directAlign = 4096

// alignedBlock returns a buffer of n bytes whose start is directAlign-aligned.
func alignedBlock(n int64) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+int(n) : skip+int(n)]
}

// directWriter writes whole blocks of one cache file with O_DIRECT, and
// the rest, or everything once the filesystem refused, through file.
type directWriter struct {
	c      *Cache
	file   *os.File // the cache file, through the page cache
	direct *os.File // the same file opened with O_DIRECT; nil: not (yet) used
	path   string   // names file for the O_DIRECT open; "": no O_DIRECT
}

// newWriter returns the writer for a fetch of o: direct unless the cache
// filesystem has refused O_DIRECT.
func (c *Cache) newWriter(o *object) *directWriter {
	w := &directWriter{c: c, file: o.file}
	if !c.noDirect.Load() {
		// The open file itself, whatever happens to its name.
		w.path = fmt.Sprintf("/proc/self/fd/%d", o.file.Fd())
	}
	return w
}

// WriteAt writes p at off, past the page cache when it can.
func (w *directWriter) WriteAt(p []byte, off int64) (int, error) {
	if w.path == "" || len(p) == 0 || len(p)%directAlign != 0 || off%directAlign != 0 ||
		uintptr(unsafe.Pointer(&p[0]))%directAlign != 0 {
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
		w.c.log.Info("cache filesystem refuses O_DIRECT; fetched blocks go through the page cache", "err", err)
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
