package fs

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
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

	mu     sync.Mutex   // guards obj and opened
	obj    index.Object // the version this node serves; its Version never changes
	opened string       // Version of the last successful open; "" before one
}

var (
	_ = (fs.NodeOpener)((*fileNode)(nil))
	_ = (fs.NodeGetattrer)((*fileNode)(nil))
)

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
	var fuseFlags uint32
	if n.reopened(obj.Version()) {
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	return &handle{node: n, f: f}, fuseFlags, fs.OK
}

// reopened records an open of version and reports whether the previous
// open of this node was of the same version, so that pages the kernel
// cached then are still the right bytes.
func (n *fileNode) reopened(version string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	same := n.opened == version
	n.opened = version
	return same
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
	// dentry: both leave nothing to forget.
	if name, parent := n.Parent(); parent != nil {
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

// handle is one open of a fileNode.
type handle struct {
	node *fileNode // set once in Open
	f    File      // set once in Open
}

var (
	_ = (fs.FileReader)((*handle)(nil))
	_ = (fs.FileReleaser)((*handle)(nil))
)

// Read reads into the kernel's buffer with the request's context, so an
// interrupted reader stops waiting.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.f.ReadAt(ctx, dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.node.fail("read", err)
	}
	return fuse.ReadResultData(dest[:n]), fs.OK
}

// Release closes the handle when the last descriptor sharing it closes.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.node.m.open.Add(-1)
	if err := h.f.Close(); err != nil {
		// The reader is gone: there is nobody to tell but the log.
		h.node.m.log.Warn("close", "path", h.node.path, "err", err)
	}
	return fs.OK
}
