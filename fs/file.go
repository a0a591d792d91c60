package fs

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"s3cachefs/index"
)

// fileNode is one object version at one path.
type fileNode struct {
	fs.Inode

	m    *shared // set once at creation
	path string  // set once at creation; relative to the mount root

	mu          sync.Mutex   // guards obj, lastVersion and cachedOpens
	obj         index.Object // the version this node serves; its Version never changes
	lastVersion string       // Version of the last successful open; "" before one
	// cachedOpens counts the open handles the kernel may hold in its
	// cached (not passthrough) mode: those whose PassthroughFd said no,
	// until their Release. The kernel releases a file before it sends
	// RELEASE, so this never undercounts the kernel's cached opens.
	cachedOpens int

	// For the node bound (forget.go): opens counts open handles;
	// recent says the node was used since a sweep last looked at it;
	// queued that it is in the sweep queue; forgotten that the kernel
	// forgot it.
	opens                     atomic.Int32
	recent, queued, forgotten atomic.Bool
}

var (
	_ = (fs.NodeOpener)((*fileNode)(nil))
	_ = (fs.NodeGetattrer)((*fileNode)(nil))
	_ = (fs.NodeOnForgetter)((*fileNode)(nil))
)

// OnForget counts the node out of the node bound: the kernel forgot it.
func (n *fileNode) OnForget() { n.m.nodes.forgot(n) }

func (n *fileNode) object() index.Object {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.obj
}

// update takes obj as the node's object if it is the same version, and
// reports whether it was.
func (n *fileNode) update(obj index.Object) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if obj.Version() != n.obj.Version() {
		return false
	}
	n.obj = obj
	return true
}

// Getattr reports the object's size and time.
func (n *fileNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.m.fileAttr(n.object(), &out.Attr)
	out.SetTimeout(n.m.opts.EntryTimeout)
	return fs.OK
}

// writeFlags are the open flags that ask to change a file.
const writeFlags = syscall.O_WRONLY | syscall.O_RDWR | syscall.O_TRUNC | syscall.O_APPEND | syscall.O_CREAT

// Open opens the node's object version for reading.
func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&writeFlags != 0 {
		return nil, 0, syscall.EROFS
	}
	obj := n.object()
	f, err := n.m.opts.Files.Open(ctx, obj)
	if err != nil {
		return nil, 0, n.fail("open", err)
	}
	n.m.open.Add(1)
	n.m.opensTotal.Add(1)
	n.opens.Add(1)
	n.m.nodes.used(n)
	h := &handle{node: n, f: f, backing: f.Backing()}
	// A read-only file has nothing to flush: Linux (5.16 and later) and
	// gVisor then send no FLUSH on close(2); older kernels send one, once,
	// and take its ENOSYS as "never again" (nosys.go).
	fuseFlags := uint32(fuse.FOPEN_NOFLUSH)
	if n.reopened(obj.Version()) {
		// go-fuse drops it again if the open turns out passthrough:
		// the page cache is then the cache file's own.
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	return h, fuseFlags, fs.OK
}

// reopened records an open of version and reports whether the previous
// open of this node was of the same version, so that pages the kernel
// cached then are still the right bytes.
func (n *fileNode) reopened(version string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	same := n.lastVersion == version
	n.lastVersion = version
	return same
}

// released forgets the kernel's cached open of h, if it was one.
//
// A cached open stays counted until go-fuse has finished the RELEASE: after
// calling this, go-fuse drops one reference to the inode's backing file
// whatever the open was, so a backing file registered in between (for a
// passthrough open that saw no cached one) would lose its reference and be
// unregistered while the kernel still reads through it; the next
// passthrough open would then bring another backing file, which the kernel
// refuses with EIO. So when ctx is go-fuse's, the count drops in
// releaseLast, which runs once go-fuse's Release has returned.
func (n *fileNode) released(ctx context.Context, h *handle) {
	if !h.cached {
		return
	}
	if fc, ok := ctx.(*fuse.Context); ok && fc.Cancel != nil {
		n.m.releasing.Store(fc.Cancel, n)
		return
	}
	n.cachedClosed()
}

// cachedClosed forgets one cached open.
func (n *fileNode) cachedClosed() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cachedOpens--
}

// fail maps err for op. When the object changed in S3 it also drops the
// folder's stored listing and the kernel's dentry, so the next open of the
// name looks it up again and finds the new version.
func (n *fileNode) fail(op string, err error) syscall.Errno {
	errno := n.m.errno(op, n.path, err)
	if errno != syscall.ESTALE {
		return errno
	}
	if err := n.m.opts.Tree.Invalidate(n.dir()); err != nil {
		n.m.log.Warn("drop stale listing", "path", n.path, "err", err)
	}
	// ENOSYS when not mounted, ENOENT when the kernel holds no such
	// dentry: both leave nothing to forget. Where notifications are off,
	// the kernel forgets the dentry when its entry timeout ends.
	if name, parent := n.Parent(); parent != nil && n.m.notify {
		parent.NotifyEntry(name)
	}
	return errno
}

// dir returns the path of the folder holding the node.
func (n *fileNode) dir() string {
	i := strings.LastIndexByte(n.path, '/')
	if i < 0 {
		return ""
	}
	return n.path[:i]
}

// handle is one open of a fileNode. Every field is set once in Open.
type handle struct {
	node *fileNode
	f    File
	// backing is the complete, checked cache file, or nil; the handle
	// owns it and closes it in Release. It is only ever handed to the
	// kernel (passthrough), never read here.
	backing *os.File
	// cached is set, under node.mu, when PassthroughFd kept the open in
	// the kernel's cached mode; otherwise the kernel reads backing itself
	// and Read is never called.
	cached bool
}

var (
	_ = (fs.FileReader)((*handle)(nil))
	_ = (fs.FileReleaser)((*handle)(nil))
	_ = (fs.FilePassthroughFder)((*handle)(nil))
)

// PassthroughFd decides whether an open is a passthrough open. go-fuse
// calls it after Open, under its lock for backing files, and only when the
// inode has no backing file registered: while it has one, every open is
// made passthrough with it (the kernel insists), and this is not called.
// So here the kernel holds no passthrough open of the inode, and the one
// way to fail the open (EIO) is to register a backing file while it holds
// a cached open: refuse while cachedOpens says it might.
func (h *handle) PassthroughFd() (int, bool) {
	n := h.node
	n.mu.Lock()
	defer n.mu.Unlock()
	if h.backing != nil && n.m.passthrough.Load() && n.cachedOpens == 0 {
		return int(h.backing.Fd()), true
	}
	h.cached = true
	n.cachedOpens++
	n.m.opensDaemon.Add(1)
	return 0, false
}

// Read reads into the kernel's buffer with the request's context, so an
// interrupted reader stops waiting. Every byte comes through File.ReadAt,
// which checks each block it reads from SSD against its recorded sum; a
// complete file's bytes are never spliced from the cache file unchecked.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.noticeNotPassthrough()
	n, err := h.f.ReadAt(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.node.fail("read", err)
	}
	return fuse.ReadResultData(dest[:n]), fs.OK
}

// noticeNotPassthrough handles a READ of an open that was to be
// passthrough: go-fuse stopped using backing files for the mount (it does
// so for good when registering one fails). Opens are then cached opens
// whatever PassthroughFd says: say so once, and count them as such.
func (h *handle) noticeNotPassthrough() {
	n := h.node
	if !n.m.passthrough.Load() {
		return // daemon mode: every READ comes here; no lock for them
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if h.cached {
		return
	}
	if n.m.passthrough.CompareAndSwap(true, false) {
		n.m.passthroughOff.Store("the kernel stopped taking backing files while mounted")
		n.m.log.Warn("FUSE passthrough stopped: the kernel refused a backing file; reads go through the daemon from now on")
	}
}

// Release closes the handle when the last descriptor sharing it closes.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.node.m.open.Add(-1)
	h.node.opens.Add(-1)
	h.node.released(ctx, h)
	if h.backing != nil {
		// The kernel holds its own reference to a passthrough backing
		// file, and no read is in flight once RELEASE comes.
		h.backing.Close()
	}
	if err := h.f.Close(); err != nil {
		// The reader is gone: there is nobody to tell but the log.
		h.node.m.log.Warn("close", "path", h.node.path, "err", err)
	}
	return fs.OK
}
