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
// and forgotten when the kernel forgets them; nothing is built up front.
// The kernel forgets only under memory pressure, so a scan of a million
// files would leave a million nodes here (about 550 bytes each): file nodes
// are bounded instead (Options.MaxNodes, 100,000 by default). Past the
// bound a sweeper goroutine, started by Mount and ended with the serve
// loop, asks the kernel to forget the least recently used file nodes that
// are not open (forget.go): FUSE_NOTIFY_PRUNE where the kernel takes it
// (Linux 6.18), else a delete notification for the name, after which the
// kernel drops the inode once nothing uses it. A forgotten name costs one
// LOOKUP on its next use; its page cache goes with it. Where the FUSE side
// takes no notifications (gVisor) the bound is not kept.
// Opening a folder (opendir) and Lookup both ask the Tree, so they always
// agree.
//
// # Folder reads
//
// Opendir asks the Tree for the folder's listing generation (listing it if
// it must) and returns a dirStream, which hands the entries to the kernel
// a page of 1,024 at a time (Tree.ReadDirPage), in name order, each page
// resuming after the last name: nothing is built or sorted for the whole
// folder, and a million-entry folder never sits in the daemon's memory.
// Offsets are entry positions; a Seekdir other than to the current
// position reads again from the start. A re-list landing between pages
// shows each changed entry from one listing or the other, but never skips
// or repeats a name that did not change. The open lets the kernel keep the
// entries (FOPEN_CACHE_DIR, FOPEN_KEEP_CACHE) only while the generation is
// the one the node last served and no stream of the node read pages of
// another generation (a mixed read), so the kernel never keeps a mixed or
// outdated copy past the next open.
// The mount asks for READDIRPLUS only when the reader stats what it lists
// (FUSE_READDIRPLUS_AUTO: the kernel's heuristic sends a plain READDIR
// otherwise), so a scandir of a million names makes no node per name. The
// lookup go-fuse makes for each entry of a READDIRPLUS is answered from
// the entry the stream just handed out, not by a Tree.Lookup per entry.
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
// # Complete files: passthrough and splice
//
// When File.Backing returns the cache file (every byte present and
// checked), the open is served without File.ReadAt. If Mount found that
// the kernel accepts backing files (FUSE passthrough: Linux 6.9 or later,
// root in the initial user namespace), the open is a passthrough open: the
// kernel reads the cache file itself, through its page cache, and the
// daemon never sees the reads. Otherwise reads are spliced from the cache
// file to the FUSE device (fuse.ReadResultFd) with no copy in this process.
//
// The kernel fails (EIO) an open whose mode differs from the other opens
// of its inode: a passthrough open beside a cached one, or the reverse.
// go-fuse keeps one backing file per inode while passthrough opens of it
// are live, and makes every new open passthrough with it; only when there
// is none does it ask the handle (PassthroughFd), under its backing lock.
// The mode is decided there and only there: yes only for a complete,
// checked file and only while no cached open of the inode is live (each
// file node counts them). So a file that completes while it is open through
// the daemon keeps taking daemon-mode opens until those close. A cached
// open counts until go-fuse has finished its RELEASE (mount.go wraps
// go-fuse's Release for that): go-fuse drops a backing-file reference on
// every RELEASE, so a backing file registered while a cached open's RELEASE
// was still in go-fuse would be dropped under a live passthrough open, and
// the next open, bringing a new one, would fail. A partial file is never
// handed to the kernel: its holes would read as zeros.
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
// atomic counters (open handles, opens by mode, spliced bytes) and the
// passthrough switch Mount sets, and per file node the object, the last
// version opened and the open handles by mode, guarded by the node's mutex.
package fs
