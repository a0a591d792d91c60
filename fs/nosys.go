package fs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// Operations the mount has no use for answer ENOSYS: Linux then never
// sends them again for the whole mount, saving a trip to the daemon each.
// A FUSE side that hands ENOSYS to the caller instead (gVisor) gets the
// answer Linux would give the caller; the self-check at mount finds out
// which (selfcheck.go).
//
// Objects carry no extended attributes. Answering ENOSYS, rather than
// "no such attribute" per name, makes Linux answer getxattr and
// listxattr itself (EOPNOTSUPP), so `ls -l`, which asks for ACLs and
// security labels of every file, no longer costs two trips per file.

var (
	_ = (fs.NodeGetxattrer)((*dirNode)(nil))
	_ = (fs.NodeGetxattrer)((*fileNode)(nil))
	_ = (fs.NodeListxattrer)((*dirNode)(nil))
	_ = (fs.NodeListxattrer)((*fileNode)(nil))
)

// Getxattr reports that the mount has no extended attributes.
func (d *dirNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return d.m.quirks.getxattr()
}

// Listxattr reports that the mount has no extended attributes.
func (d *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return d.m.quirks.listxattr()
}

// Getxattr reports that the mount has no extended attributes.
func (n *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return n.m.quirks.getxattr()
}

// Listxattr reports that the mount has no extended attributes.
func (n *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return n.m.quirks.listxattr()
}

var _ = (fs.NodeFlusher)((*fileNode)(nil))

// Flush has nothing to do on a read-only file. ENOSYS tells Linux so
// once for the whole mount; otherwise every close(2) of a file would wait
// for a round trip to the daemon. Where ENOSYS would reach close(2), the
// answer is success.
func (n *fileNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return n.m.quirks.flush()
}
