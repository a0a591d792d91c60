package fs

import (
	"context"
	"math"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"s3cachefs/index"
)

// dirNode is a folder of the mount. Its listing lives in the Tree; the node
// holds only its path.
type dirNode struct {
	fs.Inode

	m    *shared // set once at creation
	path string  // set once at creation; "" for the root, else "a/b"

	mu sync.Mutex // guards served
	// served is the listing generation last handed to the kernel by an
	// open of this folder; 0 before the first, mixedGen after a stream
	// that saw the listing change.
	served uint64
}

var (
	_ = (fs.NodeLookuper)((*dirNode)(nil))
	_ = (fs.NodeOpendirHandler)((*dirNode)(nil))
	_ = (fs.NodeGetattrer)((*dirNode)(nil))
)

// Getattr reports the folder's attributes; they never depend on S3.
func (d *dirNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.m.dirAttr(&out.Attr)
	out.SetTimeout(d.m.opts.EntryTimeout)
	return fs.OK
}

// Lookup answers one name of the folder from the Tree.
func (d *dirNode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if d.path == "" {
		if ch := d.m.probeChild(ctx, d, name, out); ch != nil {
			return ch, fs.OK
		}
	}
	e, err := d.m.opts.Tree.Lookup(ctx, d.path, name)
	if err != nil {
		return nil, d.m.errno("lookup", join(d.path, name), err)
	}
	return d.entryOut(ctx, e, out), fs.OK
}

// entryOut returns the node for entry e and fills out with its attributes
// and timeouts, as a Lookup answers.
func (d *dirNode) entryOut(ctx context.Context, e index.Entry, out *fuse.EntryOut) *fs.Inode {
	ch := d.child(ctx, e, out)
	out.SetEntryTimeout(d.m.opts.EntryTimeout)
	out.SetAttrTimeout(d.m.opts.EntryTimeout)
	return ch
}

// child returns the node for entry e of d and fills out with its
// attributes. A node the kernel still holds is reused while it is of the
// same kind and, for a file, the same object version; a new version gets
// a new node (see the package doc).
func (d *dirNode) child(ctx context.Context, e index.Entry, out *fuse.EntryOut) *fs.Inode {
	path := join(d.path, e.Name)
	if e.IsDir {
		d.m.dirAttr(&out.Attr)
		if old := d.GetChild(e.Name); old != nil {
			if _, ok := old.Operations().(*dirNode); ok {
				return old
			}
		}
		id := fs.StableAttr{Mode: syscall.S_IFDIR, Ino: inoOf(path)}
		return d.NewInode(ctx, &dirNode{m: d.m, path: path}, id)
	}
	d.m.fileAttr(e.Object, &out.Attr)
	if old := d.GetChild(e.Name); old != nil {
		// The listing may carry a newer LastModified for the same version.
		if f, ok := old.Operations().(*fileNode); ok && f.update(e.Object) {
			d.m.nodes.used(f)
			return old
		}
	}
	id := fs.StableAttr{Mode: syscall.S_IFREG, Ino: inoOf(path), Gen: genOf(e.Object.Version())}
	f := &fileNode{m: d.m, path: path, obj: e.Object}
	ch := d.NewInode(ctx, f, id)
	d.m.nodes.made(f)
	return ch
}

// OpendirHandle opens the folder as its listing is now (the Tree lists it
// if it must) and hands its entries to the kernel a page at a time from
// the index, in name order (entry inode numbers match the ones Lookup
// gives); nothing is built or sorted for the whole folder. While the
// listing's generation is the one this node last handed to the kernel, the
// kernel may keep the entries (FOPEN_CACHE_DIR and FOPEN_KEEP_CACHE): a
// second `ls` of a big folder then costs the daemon nothing. When it
// changed (a listing refreshed after the TTL), or the last stream saw it
// change while it was read (the kernel may have kept a mix of two
// listings), the open asks for no caching, which makes the kernel drop
// what it kept.
func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	gen, err := d.m.opts.Tree.Generation(ctx, d.path)
	if err != nil {
		return nil, 0, d.m.errno("readdir", d.path, err)
	}
	var fuseFlags uint32
	if d.serve(gen) {
		fuseFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	return newDirStream(d, gen), fuseFlags, fs.OK
}

// mixedGen is what served holds after a stream saw the listing change
// under it: no generation equals it, so the next open drops the kernel's
// copy.
const mixedGen = math.MaxUint64

// serve records that the listing of generation gen goes to the kernel and
// reports whether what the kernel may have kept from earlier opens is
// still right: on the node's first open (a new kernel inode keeps
// nothing), or when nothing changed since.
func (d *dirNode) serve(gen uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	same := d.served == 0 || d.served == gen
	d.served = gen
	return same
}

// mixed records that a stream read pages of a generation other than the
// one its open served: whatever the kernel kept of this folder may be a
// mix, and the next open must drop it.
func (d *dirNode) mixed() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.served = mixedGen
}
