package fs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// Operations the mount has no use for answer ENOSYS: the kernel then never
// sends them again for the whole mount, saving a trip to the daemon each.
//
// Objects carry no extended attributes. Answering ENOSYS, rather than
// "no such attribute" per name, makes the kernel answer getxattr and
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
	return 0, syscall.ENOSYS
}

// Listxattr reports that the mount has no extended attributes.
func (d *dirNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

// Getxattr reports that the mount has no extended attributes.
func (n *fileNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

// Listxattr reports that the mount has no extended attributes.
func (n *fileNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

var _ = (fs.NodeFlusher)((*fileNode)(nil))

// Flush has nothing to do on a read-only file. ENOSYS tells the kernel
// so once for the whole mount; otherwise every close(2) of a file would
// wait for a round trip to the daemon.
func (n *fileNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return syscall.ENOSYS
}
