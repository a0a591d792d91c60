// Package fs is the FUSE layer of s3cachefs: a read-only go-fuse node tree
// over an S3 prefix. It only translates kernel operations into calls on two
// interfaces it declares, Tree (folder listings, satisfied by
// *index.Catalog) and Files (object contents, adapted from
// *blockcache.Cache), and maps their errors to errno values in one place,
// errno.go. It fetches, caches and stores nothing itself.
//
// # Nodes
//
// A folder is a dirNode, an object a fileNode. Nodes are created on Lookup
// and forgotten when the kernel forgets them; nothing is built up front,
// so a tree of any size costs memory only for what the kernel holds.
// Readdir and Lookup both ask the Tree, so they always agree.
//
// # Inode identity
//
// The inode number of a node is the FNV-64a hash of its path relative to
// the mount root, so it is the same across lookups, forgets and remounts.
// A file node also carries its object version (index.Object.Version) as
// the inode generation. When S3 holds a new version, the next Lookup gets
// a new node (go-fuse keys nodes by mode, number and generation), hence a
// new kernel inode with its own attributes and an empty page cache; files
// still open on the old version keep reading the old version.
//
// # Kernel caching
//
// Entries and attributes are cached by the kernel for Options.EntryTimeout,
// and a name a fresh listing lacks is cached as absent for as long. Open
// returns FOPEN_KEEP_CACHE when the node was opened before on the same
// object version, so the page cache survives close and reopen of an
// unchanged file; the first open of a node lets the kernel drop it.
//
// # Errors
//
// Every failure is mapped by toErrno. A read failing with index.ErrStale
// (the object changed in S3 under an open file) returns ESTALE, drops the
// folder's stored listing through Tree.Invalidate and asks the kernel to
// forget the dentry, so the next open looks the name up again and sees the
// new version. Every write operation answers EROFS, whether or not the
// kernel lets it through (the mount is also read-only, "ro").
//
// # Concurrency
//
// The kernel sends operations in parallel; every node method may run
// concurrently with any other. Shared state is the set-once configuration,
// an atomic open-handle count, and per file node the object and the last
// version opened, guarded by the node's mutex.
package fs
