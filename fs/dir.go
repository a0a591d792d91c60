package fs

import (
	"context"
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
}

var (
	_ = (fs.NodeLookuper)((*dirNode)(nil))
	_ = (fs.NodeReaddirer)((*dirNode)(nil))
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
			return old
		}
	}
	id := fs.StableAttr{Mode: syscall.S_IFREG, Ino: inoOf(path), Gen: genOf(e.Object.Version())}
	return d.NewInode(ctx, &fileNode{m: d.m, path: path, obj: e.Object}, id)
}

// Readdir lists the folder from the Tree. Entry inode numbers match the
// ones Lookup gives.
func (d *dirNode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	entries, err := d.m.opts.Tree.ReadDir(ctx, d.path)
	if err != nil {
		return nil, d.m.errno("readdir", d.path, err)
	}
	out := make([]fuse.DirEntry, 0, len(entries))
	for _, e := range entries {
		mode := uint32(syscall.S_IFREG)
		if e.IsDir {
			mode = syscall.S_IFDIR
		}
		out = append(out, fuse.DirEntry{Name: e.Name, Mode: mode, Ino: inoOf(join(d.path, e.Name))})
	}
	return fs.NewListDirStream(out), fs.OK
}
