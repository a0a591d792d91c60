package fs

import (
	"context"
	"hash/fnv"
	"log/slog"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"s3cachefs/index"
)

// Tree answers the folder structure of the mount. *index.Catalog satisfies
// it. All methods may be called concurrently.
type Tree interface {
	// Generation makes sure dir has a listing that may be read now
	// (listing the object store if it must) and returns its change
	// generation: never 0, and while it stays the same so do dir's
	// entries. dir is "" for the root, else a clean relative path such
	// as "a/b".
	Generation(ctx context.Context, dir string) (uint64, error)
	// ReadDirPage returns up to n entries of dir's stored listing with
	// names after after ("" for the first), sorted by name, and the
	// generation they were read at; it never asks the object store.
	// Paging on the last name returned never skips or repeats a name
	// that did not change between pages.
	ReadDirPage(ctx context.Context, dir, after string, n int) ([]index.Entry, uint64, error)
	// Lookup returns the entry name in dir. A missing name yields an
	// error wrapping io/fs.ErrNotExist.
	Lookup(ctx context.Context, dir, name string) (index.Entry, error)
	// Invalidate drops the stored listing of dir, so its next use lists
	// the object store again.
	Invalidate(dir string) error
}

var _ Tree = (*index.Catalog)(nil)

// Files opens object contents. Open may be called concurrently; every File
// it returns is closed exactly once.
type Files interface {
	Open(ctx context.Context, obj index.Object) (File, error)
}

// File is one open handle on one object version. ReadAt returns n < len(p)
// only at the end of the object (with a nil error or io.EOF). A read that
// finds the object changed in S3 returns an error wrapping index.ErrStale.
// ReadAt may be called concurrently; Close releases the handle and is
// called once, after every ReadAt has returned.
//
// Backing returns a local file holding every byte of the object, already
// checked, or nil when there is none yet. The fs layer may hand that file
// to the kernel (FUSE passthrough) or splice from it, so it must never have
// a hole or an unproven byte. The fs layer owns the returned file and
// closes it when the kernel releases the open; it must stay readable
// until then whatever happens to the File. Backing is called at most once
// per File, right after Open.
type File interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
	Backing() *os.File
	Close() error
}

// Options configure NewRoot.
type Options struct {
	Tree  Tree  // required
	Files Files // required

	UID, GID uint32 // owner shown for every node

	// FileMode and DirMode are the permission bits of files and folders;
	// zero means 0444 and 0555.
	FileMode, DirMode uint32

	// EntryTimeout is how long the kernel caches entries, attributes and
	// absent names; zero means one second.
	EntryTimeout time.Duration

	// Logger receives unexpected errors, with the path. nil discards.
	Logger *slog.Logger

	// MaxNodes bounds the file nodes kept for the kernel (see forget.go);
	// zero means 100,000, negative no bound. It holds where the FUSE side
	// takes notifications (Linux); gVisor bounds its own.
	MaxNodes int
}

// Root is the root directory node of the mount. Mount it once, with Mount.
type Root struct {
	dirNode
}

// NewRoot returns the root of a tree served from opts.Tree and opts.Files.
func NewRoot(opts Options) *Root {
	if opts.FileMode == 0 {
		opts.FileMode = 0o444
	}
	if opts.DirMode == 0 {
		opts.DirMode = 0o555
	}
	if opts.EntryTimeout <= 0 {
		opts.EntryTimeout = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// The mode bits hold permissions only: the node kind is the node's.
	opts.FileMode &= 0o7777
	opts.DirMode &= 0o7777
	if opts.MaxNodes == 0 {
		opts.MaxNodes = defaultMaxNodes
	}
	m := &shared{opts: opts, log: opts.Logger, started: time.Now(), nodes: newNodeLimit(opts.MaxNodes)}
	return &Root{dirNode{m: m}}
}

// OpenFiles returns how many file handles are open now. Unmounting while
// it is above zero would cut off the readers holding them.
func (r *Root) OpenFiles() int64 { return r.m.open.Load() }

// Stats are counters of the opens and reads a Root has served.
type Stats struct {
	// Passthrough reports whether complete files are handed to the
	// kernel (FUSE passthrough); when not, PassthroughOff says why.
	Passthrough    bool
	PassthroughOff string
	// OpensPassthrough counts opens the kernel reads straight from the
	// cache file; their bytes pass no counter of ours.
	OpensPassthrough int64
	// OpensDaemon counts opens read through the daemon.
	OpensDaemon int64
	// Kernel is what the FUSE side announced at INIT, and Fallbacks what
	// the mount's self-check found it does differently from Linux and
	// how the mount answers instead (see selfcheck.go); empty when all is
	// as on Linux.
	Kernel    string
	Fallbacks []string
	// FileNodes is how many file nodes the kernel holds now (bounded by
	// Options.MaxNodes where notifications work).
	FileNodes int
}

// Stats returns the counters.
func (r *Root) Stats() Stats {
	// An open is passthrough unless PassthroughFd kept it cached; one
	// whose PassthroughFd call is still to come counts as passthrough
	// for that moment.
	daemon := r.m.opensDaemon.Load()
	s := Stats{
		Passthrough:      r.m.passthrough.Load(),
		OpensPassthrough: max(r.m.opensTotal.Load()-daemon, 0),
		OpensDaemon:      daemon,
		Kernel:           r.m.kernel,
		FileNodes:        r.m.nodes.Live(),
		Fallbacks:        r.m.fallbacks(),
	}
	if why, ok := r.m.passthroughOff.Load().(string); ok {
		s.PassthroughOff = why
	}
	return s
}

// shared is what every node of one tree refers to.
type shared struct {
	opts    Options      // set once in NewRoot, defaults applied
	log     *slog.Logger // set once in NewRoot; opts.Logger
	started time.Time    // set once in NewRoot; the mtime of every folder

	open atomic.Int64 // file handles open now
	// passthrough is set by Mount once the kernel accepted a backing file;
	// until then (and if it never does) every open goes through the daemon.
	passthrough    atomic.Bool
	passthroughOff atomic.Value // string: why passthrough is off

	// Counters since NewRoot: opens, and those kept in daemon mode.
	opensTotal, opensDaemon atomic.Int64

	// Set by Mount before the mount is handed out, read-only after.
	kernel string // what the FUSE side announced at INIT
	notify bool   // the FUSE side takes notifications (notifyOK)

	nodes *nodeLimit  // set once in NewRoot; the bound on file nodes
	prune atomic.Bool // the kernel takes FUSE_NOTIFY_PRUNE (set by Mount; cleared if it fails)
	// quirks is what the self-check found (selfcheck.go); written only
	// before the mount is handed out, and by the self-check's own
	// requests, which run before any other.
	quirks quirks
	probe  *probe // the self-check's file; nil when none runs

	// releasing holds, by the cancel channel of a RELEASE in progress, the
	// node whose cached open it ends (fileNode.released).
	releasing sync.Map
}

// dirAttr fills out with the attributes every folder shares.
func (m *shared) dirAttr(out *fuse.Attr) {
	out.Mode = syscall.S_IFDIR | m.opts.DirMode
	// One link tells find(1) and friends not to derive the number of
	// subfolders from it, which we do not know without listing.
	out.Nlink = 1
	out.Owner = fuse.Owner{Uid: m.opts.UID, Gid: m.opts.GID}
	t := m.started
	out.SetTimes(&t, &t, &t)
}

// blockSize is the st_blksize reported for files. It is the page size, as
// go-fuse would default to: programs size their buffers by it, and a
// larger value would make every small random read of an NPZ member read
// (and fetch) more.
const blockSize = 4096

// fileAttr fills out with the attributes of obj.
func (m *shared) fileAttr(obj index.Object, out *fuse.Attr) {
	size := uint64(max(obj.Size, 0))
	out.Mode = syscall.S_IFREG | m.opts.FileMode
	out.Size = size
	out.Blksize = blockSize
	out.Blocks = (size + 511) / 512 // st_blocks counts 512-byte units
	out.Nlink = 1
	out.Owner = fuse.Owner{Uid: m.opts.UID, Gid: m.opts.GID}
	t := obj.LastModified
	out.SetTimes(&t, &t, &t)
}

// rootIno is the inode number of the mount root, as FUSE numbers it.
const rootIno = fuse.FUSE_ROOT_ID

// inoOf returns the stable inode number of the node at path, avoiding the
// numbers go-fuse and the kernel reserve (0, the root's 1, and 2^64-1).
func inoOf(path string) uint64 {
	h := hash64(path)
	if h <= rootIno || h == math.MaxUint64 {
		h = rootIno + 1
	}
	return h
}

// genOf returns the inode generation of a file node for an object
// version: different versions at one path must differ in generation.
func genOf(version string) uint64 { return hash64(version) }

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s)) // a hash.Hash never returns an error
	return h.Sum64()
}

// join returns the path of name inside the folder at dir.
func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
