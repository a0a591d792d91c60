package fs

import (
	"context"
	"hash/fnv"
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
	// served fingerprints the entries last handed to the kernel by an
	// open of this folder; 0 before the first.
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
	ch := d.child(ctx, e, out)
	out.SetEntryTimeout(d.m.opts.EntryTimeout)
	out.SetAttrTimeout(d.m.opts.EntryTimeout)
	return ch, fs.OK
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

// OpendirHandle opens the folder with its listing as it is now (entry
// inode numbers match the ones Lookup gives). While the
// entries are the ones this node last handed to the kernel, the kernel may
// keep them (FOPEN_CACHE_DIR and FOPEN_KEEP_CACHE): a second `ls` of a big
// folder then costs the daemon nothing. When they changed (a listing
// refreshed after the TTL), the open asks for no caching, which makes the
// kernel drop what it kept.
func (d *dirNode) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	entries, err := d.m.opts.Tree.ReadDir(ctx, d.path)
	if err != nil {
		return nil, 0, d.m.errno("readdir", d.path, err)
	}
	var fuseFlags uint32
	if d.serve(fingerprint(entries)) {
		fuseFlags = fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE
	}
	// go-fuse's list stream is a directory handle: Readdirent, Seekdir
	// and Releasedir.
	return fs.NewListDirStream(d.dirEntries(entries)), fuseFlags, fs.OK
}

// serve records that entries with fingerprint fp go to the kernel and
// reports whether what the kernel may have kept from earlier opens is
// still right: on the node's first open (a new kernel inode keeps
// nothing), or when nothing changed since.
func (d *dirNode) serve(fp uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	same := d.served == 0 || d.served == fp
	d.served = fp
	return same
}

// dirEntries turns the Tree's entries into the kernel's.
func (d *dirNode) dirEntries(entries []index.Entry) []fuse.DirEntry {
	out := make([]fuse.DirEntry, 0, len(entries))
	for _, e := range entries {
		mode := uint32(syscall.S_IFREG)
		if e.IsDir {
			mode = syscall.S_IFDIR
		}
		out = append(out, fuse.DirEntry{Name: e.Name, Mode: mode, Ino: inoOf(join(d.path, e.Name))})
	}
	return out
}

// fingerprint hashes what the kernel keeps of a listing: names and kinds
// (inode numbers follow from the names). Never 0.
func fingerprint(entries []index.Entry) uint64 {
	h := fnv.New64a()
	for _, e := range entries {
		kind := byte('f')
		if e.IsDir {
			kind = 'd'
		}
		h.Write([]byte(e.Name))
		h.Write([]byte{0, kind})
	}
	return max(h.Sum64(), 1)
}
