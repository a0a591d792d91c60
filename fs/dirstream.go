package fs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"s3cachefs/index"
)

// dirPage is how many entries a dirStream reads from the Tree at a time:
// enough for several READDIR replies, small enough that a million-entry
// folder never sits in memory.
const dirPage = 1024

// dirStream is an open folder: it streams the folder's stored entries to
// the kernel in name order, a page at a time, resuming each page after the
// last name handed out. A re-list landing between pages shows each entry
// in one of the two listings, but a name that did not change is never
// skipped or repeated; and the stream tells its node (mixed), so that the
// kernel's copy of such a read is not kept as current.
//
// Offsets are entry positions: the entry at offset n is the n-th handed
// out, 1-based, and Seekdir(n) resumes after it (0 is the start). go-fuse
// calls Readdirent and Seekdir under the handle's lock; mu guards against
// the DirStream methods being used alongside.
//
// Lock order: dirStream.mu before dirNode.mu (a page of another generation
// marks the node mixed while mu is held).
type dirStream struct {
	d   *dirNode // set once
	gen uint64   // set once: the generation the open served

	mu    sync.Mutex
	pos   uint64        // guarded by mu; entries handed out
	after string        // guarded by mu; the last name handed out
	buf   []index.Entry // guarded by mu; read, not yet handed out
	eof   bool          // guarded by mu; no entries after buf
	last  index.Entry   // guarded by mu; the entry last handed out (pos > 0)
	err   syscall.Errno // guarded by mu; a page that failed, for HasNext/Next
}

var (
	_ = (fs.DirStream)((*dirStream)(nil))
	_ = (fs.FileReaddirenter)((*dirStream)(nil))
	_ = (fs.FileSeekdirer)((*dirStream)(nil))
	_ = (fs.FileReleasedirer)((*dirStream)(nil))
	_ = (fs.FileLookuper)((*dirStream)(nil))
)

func newDirStream(d *dirNode, gen uint64) *dirStream { return &dirStream{d: d, gen: gen} }

// Readdirent returns the next entry, or nil at the end.
func (s *dirStream) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok, errno := s.nextLocked(ctx)
	if errno != 0 || !ok {
		return nil, errno
	}
	return &e, 0
}

// nextLocked hands out the next entry, reading a page if none is buffered.
func (s *dirStream) nextLocked(ctx context.Context) (fuse.DirEntry, bool, syscall.Errno) {
	if len(s.buf) == 0 && !s.eof {
		if errno := s.fillLocked(ctx); errno != 0 {
			return fuse.DirEntry{}, false, errno
		}
	}
	if len(s.buf) == 0 {
		return fuse.DirEntry{}, false, 0
	}
	e := s.buf[0]
	s.buf = s.buf[1:]
	s.pos++
	s.after, s.last = e.Name, e
	mode := uint32(syscall.S_IFREG)
	if e.IsDir {
		mode = syscall.S_IFDIR
	}
	return fuse.DirEntry{Name: e.Name, Mode: mode, Ino: inoOf(join(s.d.path, e.Name)), Off: s.pos}, true, 0
}

// fillLocked reads the page after s.after.
func (s *dirStream) fillLocked(ctx context.Context) syscall.Errno {
	page, gen, err := s.d.m.opts.Tree.ReadDirPage(ctx, s.d.path, s.after, dirPage)
	if err != nil {
		return s.d.m.errno("readdir", s.d.path, err)
	}
	if gen != s.gen {
		s.d.mixed()
	}
	s.buf, s.eof = page, len(page) < dirPage
	return 0
}

// Seekdir moves to offset off: the start for 0, else after the off-th
// entry. Offsets other than the current one (the kernel rewinding, or
// seekdir to a telldir) are reached by reading again from the start.
func (s *dirStream) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	s.mu.Lock()
	defer s.mu.Unlock()
	if off == s.pos {
		return 0
	}
	s.pos, s.after, s.buf, s.eof = 0, "", nil, false
	for s.pos < off {
		_, ok, errno := s.nextLocked(ctx)
		if errno != 0 {
			return errno
		}
		if !ok {
			break // past the end: reads return nothing
		}
	}
	return 0
}

// Lookup answers the lookup go-fuse makes for each entry of a READDIRPLUS
// (`ls -l`, most `find`s): for the entry just handed out it uses that
// entry, as read with its page, instead of asking the Tree once per entry;
// any other name is looked up as usual.
func (s *dirStream) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	s.mu.Lock()
	e, ok := s.last, s.pos > 0 && s.last.Name == name
	s.mu.Unlock()
	if !ok {
		return s.d.Lookup(ctx, name, out)
	}
	return s.d.entryOut(ctx, e, out), fs.OK
}

// Releasedir ends the stream; it holds nothing but memory.
func (s *dirStream) Releasedir(ctx context.Context, releaseFlags uint32) {}

// HasNext reports whether Next has an entry (or an error) to return.
func (s *dirStream) HasNext() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buf) == 0 && !s.eof && s.err == 0 {
		s.err = s.fillLocked(context.Background())
	}
	return len(s.buf) > 0 || s.err != 0
}

// Next returns the entry HasNext found.
func (s *dirStream) Next() (fuse.DirEntry, syscall.Errno) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != 0 {
		errno := s.err
		s.err = 0
		return fuse.DirEntry{}, errno
	}
	e, _, errno := s.nextLocked(context.Background())
	return e, errno
}

// Close ends the stream.
func (s *dirStream) Close() {}
