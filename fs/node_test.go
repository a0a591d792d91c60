package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"s3cachefs/index"
)

// Node-level tests call the nodes directly, without a kernel. NewNodeFS
// attaches the root to a go-fuse bridge so that NewInode works; lookup
// links each child into its parent as go-fuse does after a LOOKUP.

var testSizes = map[string]int{
	"top.txt":              11,
	"empty":                0,
	"train/a.npz":          3<<20 + 123,
	"train/b.npz":          70_001,
	"train/deep/c/leaf.np": 4096,
	"dev/x.npz":            1 << 20,
}

func newNodeRoot(t *testing.T, fx *fixture) *Root {
	t.Helper()
	root := NewRoot(Options{
		Tree: fx.tree, Files: fx.files, UID: 1234, GID: 5678,
		EntryTimeout: 7 * time.Second,
	})
	fs.NewNodeFS(root, &fs.Options{})
	return root
}

// lookup walks path from root and returns the last node and its entry.
func lookup(t *testing.T, root *Root, path string) (*fs.Inode, fuse.EntryOut, syscall.Errno) {
	t.Helper()
	n := root.EmbeddedInode()
	var out fuse.EntryOut
	for part := range strings.SplitSeq(path, "/") {
		out = fuse.EntryOut{}
		ch, errno := n.Operations().(fs.NodeLookuper).Lookup(context.Background(), part, &out)
		if errno != 0 {
			return nil, out, errno
		}
		n.AddChild(part, ch, true)
		n = ch
	}
	return n, out, 0
}

func mustLookup(t *testing.T, root *Root, path string) (*fs.Inode, fuse.EntryOut) {
	t.Helper()
	n, out, errno := lookup(t, root, path)
	if errno != 0 {
		t.Fatalf("lookup %s: %v", path, errno)
	}
	return n, out
}

func open(t *testing.T, n *fs.Inode, flags uint32) (*handle, uint32) {
	t.Helper()
	fh, fuseFlags, errno := n.Operations().(fs.NodeOpener).Open(context.Background(), flags)
	if errno != 0 {
		t.Fatalf("open: %v", errno)
	}
	return fh.(*handle), fuseFlags
}

func read(ctx context.Context, h *handle, size int, off int64) ([]byte, syscall.Errno) {
	buf := make([]byte, size)
	res, errno := h.Read(ctx, buf, off)
	if errno != 0 {
		return nil, errno
	}
	data, st := res.Bytes(make([]byte, size))
	return data, syscall.Errno(st)
}

func TestLookupAttributes(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)

	n, out := mustLookup(t, root, "train/a.npz")
	obj := fx.objs["train/a.npz"]
	a := out.Attr
	if a.Size != uint64(obj.Size) || a.Mode != syscall.S_IFREG|0o444 || a.Uid != 1234 || a.Gid != 5678 {
		t.Errorf("attr = size %d mode %o uid %d gid %d", a.Size, a.Mode, a.Uid, a.Gid)
	}
	if a.Blocks != (uint64(obj.Size)+511)/512 {
		t.Errorf("blocks = %d for size %d", a.Blocks, obj.Size)
	}
	if !a.ModTime().Equal(obj.LastModified) {
		t.Errorf("mtime = %v, want %v", a.ModTime(), obj.LastModified)
	}
	if out.EntryTimeout() != 7*time.Second || out.AttrTimeout() != 7*time.Second {
		t.Errorf("timeouts = %v %v, want 7s", out.EntryTimeout(), out.AttrTimeout())
	}
	if id := n.StableAttr(); id.Ino != inoOf("train/a.npz") || id.Gen != genOf(obj.Version()) {
		t.Errorf("stable attr = %+v", id)
	}

	var ga fuse.AttrOut
	if errno := n.Operations().(fs.NodeGetattrer).Getattr(context.Background(), nil, &ga); errno != 0 || ga.Attr != a {
		t.Errorf("getattr = %v %+v, want lookup's %+v", errno, ga.Attr, a)
	}

	d, dout := mustLookup(t, root, "train/deep")
	if dout.Attr.Mode != syscall.S_IFDIR|0o555 || d.StableAttr().Ino != inoOf("train/deep") || dout.Attr.Uid != 1234 {
		t.Errorf("dir attr = mode %o ino %d uid %d", dout.Attr.Mode, d.StableAttr().Ino, dout.Attr.Uid)
	}
	if !dout.Attr.ModTime().Equal(root.m.started.Truncate(time.Nanosecond)) {
		t.Errorf("dir mtime = %v, want mount time %v", dout.Attr.ModTime(), root.m.started)
	}
}

func TestModeOptions(t *testing.T) {
	fx := newFixture(testSizes)
	root := NewRoot(Options{Tree: fx.tree, Files: fx.files, FileMode: 0o440, DirMode: 0o550})
	fs.NewNodeFS(root, &fs.Options{})
	_, out := mustLookup(t, root, "top.txt")
	_, dout := mustLookup(t, root, "dev")
	if out.Attr.Mode != syscall.S_IFREG|0o440 || dout.Attr.Mode != syscall.S_IFDIR|0o550 {
		t.Errorf("modes = %o %o", out.Attr.Mode, dout.Attr.Mode)
	}
	if out.EntryTimeout() != time.Second {
		t.Errorf("default entry timeout = %v, want 1s", out.EntryTimeout())
	}
}

func TestLookupErrors(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)

	if _, _, errno := lookup(t, root, "train/missing.npz"); errno != syscall.ENOENT {
		t.Errorf("missing name: %v, want ENOENT", errno)
	}
	fx.tree.failDir["dev"] = errors.New("S3 is down")
	if _, _, errno := lookup(t, root, "dev/x.npz"); errno != syscall.EIO {
		t.Errorf("failing tree: %v, want EIO", errno)
	}
	_, errno := root.Operations().(fs.NodeLookuper).Lookup(context.Background(), "dev", &fuse.EntryOut{})
	if errno != 0 {
		t.Fatal(errno)
	}
	d, _ := mustLookup(t, root, "dev")
	if ds, errno := readdir(d); errno != syscall.EIO || ds != nil {
		t.Errorf("failing readdir: %v, want EIO", errno)
	}
}

func TestLookupNodeIdentity(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)

	first, _ := mustLookup(t, root, "train/b.npz")
	again, _ := mustLookup(t, root, "train/b.npz")
	if first != again {
		t.Fatal("a second lookup of an unchanged file gave a new node")
	}

	// Same version, newer LastModified: same node, new time.
	touched := fx.objs["train/b.npz"]
	touched.LastModified = touched.LastModified.Add(time.Minute)
	fx.set("train/b.npz", touched, fx.data["train/b.npz"])
	if n, out := mustLookup(t, root, "train/b.npz"); n != first || !out.Attr.ModTime().Equal(touched.LastModified) {
		t.Fatalf("same version with new time: same node %v, mtime %v", n == first, out.Attr.ModTime())
	}
	var ga fuse.AttrOut
	first.Operations().(fs.NodeGetattrer).Getattr(context.Background(), nil, &ga)
	if !ga.Attr.ModTime().Equal(touched.LastModified) {
		t.Errorf("getattr mtime %v after lookup saw %v", ga.Attr.ModTime(), touched.LastModified)
	}

	old := fx.objs["train/b.npz"]
	changed := old
	changed.ETag = "etag-new"
	changed.Size = 5
	fx.set("train/b.npz", changed, []byte("fresh"))

	next, out := mustLookup(t, root, "train/b.npz")
	if next == first {
		t.Fatal("a new object version kept the old node")
	}
	if next.StableAttr().Ino != first.StableAttr().Ino || next.StableAttr().Gen == first.StableAttr().Gen {
		t.Errorf("stable attrs %+v then %+v: want same Ino, new Gen", first.StableAttr(), next.StableAttr())
	}
	if out.Attr.Size != 5 {
		t.Errorf("size of new version = %d", out.Attr.Size)
	}
}

func TestReaddir(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)
	d, _ := mustLookup(t, root, "train")

	ds, errno := readdir(d)
	if errno != 0 {
		t.Fatal(errno)
	}
	var got []string
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			t.Fatal(errno)
		}
		kind := "f"
		if e.Mode == syscall.S_IFDIR {
			kind = "d"
		}
		if e.Ino != inoOf("train/"+e.Name) {
			t.Errorf("%s: ino %d, want %d", e.Name, e.Ino, inoOf("train/"+e.Name))
		}
		got = append(got, kind+":"+e.Name)
	}
	if want := []string{"f:a.npz", "f:b.npz", "d:deep"}; !slices.Equal(got, want) {
		t.Errorf("readdir = %v, want %v", got, want)
	}
}

func TestOpenRefusesWrites(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)
	n, _ := mustLookup(t, root, "top.txt")
	for _, flags := range []int{syscall.O_WRONLY, syscall.O_RDWR, syscall.O_RDONLY | syscall.O_TRUNC,
		syscall.O_RDONLY | syscall.O_APPEND, syscall.O_RDONLY | syscall.O_CREAT} {
		if _, _, errno := n.Operations().(fs.NodeOpener).Open(context.Background(), uint32(flags)); errno != syscall.EROFS {
			t.Errorf("open flags %#x: %v, want EROFS", flags, errno)
		}
	}
	if opens, _, _ := fx.files.counts(); opens != 0 || root.OpenFiles() != 0 {
		t.Errorf("refused opens reached Files (%d) or were counted (%d)", opens, root.OpenFiles())
	}
}

func TestWriteOperationsRefused(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)
	ctx := context.Background()
	f, _ := mustLookup(t, root, "top.txt")
	d := &root.dirNode
	fn := f.Operations().(*fileNode)
	for name, errno := range map[string]syscall.Errno{
		"file setattr": fn.Setattr(ctx, nil, &fuse.SetAttrIn{}, &fuse.AttrOut{}),
		"dir setattr":  d.Setattr(ctx, nil, &fuse.SetAttrIn{}, &fuse.AttrOut{}),
		"setxattr":     fn.Setxattr(ctx, "user.x", []byte("1"), 0),
		"removexattr":  fn.Removexattr(ctx, "user.x"),
		"dir setxattr": d.Setxattr(ctx, "user.x", []byte("1"), 0),
		"dir rmxattr":  d.Removexattr(ctx, "user.x"),
		"unlink":       d.Unlink(ctx, "top.txt"),
		"rmdir":        d.Rmdir(ctx, "train"),
		"rename":       d.Rename(ctx, "top.txt", d, "other", 0),
		"create":       func() syscall.Errno { _, _, _, e := d.Create(ctx, "new", 0, 0o644, &fuse.EntryOut{}); return e }(),
		"mkdir":        func() syscall.Errno { _, e := d.Mkdir(ctx, "new", 0o755, &fuse.EntryOut{}); return e }(),
		"mknod":        func() syscall.Errno { _, e := d.Mknod(ctx, "new", 0o644, 0, &fuse.EntryOut{}); return e }(),
		"symlink":      func() syscall.Errno { _, e := d.Symlink(ctx, "top.txt", "new", &fuse.EntryOut{}); return e }(),
		"link":         func() syscall.Errno { _, e := d.Link(ctx, fn, "new", &fuse.EntryOut{}); return e }(),
	} {
		if errno != syscall.EROFS {
			t.Errorf("%s: %v, want EROFS", name, errno)
		}
	}
	if _, _, errno := lookup(t, root, "top.txt"); errno != 0 {
		t.Errorf("top.txt gone after refused unlink: %v", errno)
	}
}

func TestOpenReadRelease(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)
	ctx := context.Background()
	n, _ := mustLookup(t, root, "train/a.npz")
	want := fx.data["train/a.npz"]

	h1, flags1 := open(t, n, syscall.O_RDONLY)
	h2, flags2 := open(t, n, syscall.O_RDONLY)
	if flags1&fuse.FOPEN_KEEP_CACHE != 0 {
		t.Error("first open of a node kept the page cache")
	}
	if flags2&fuse.FOPEN_KEEP_CACHE == 0 {
		t.Error("reopen of the same version dropped the page cache")
	}
	if got := root.OpenFiles(); got != 2 {
		t.Errorf("OpenFiles = %d, want 2", got)
	}

	for _, r := range []struct {
		off  int64
		size int
	}{{0, 4096}, {1<<20 - 7, 128 << 10}, {int64(len(want)) - 10, 4096}, {int64(len(want)), 4096}, {int64(len(want)) + 99, 10}} {
		got, errno := read(ctx, h2, r.size, r.off)
		end := min(r.off+int64(r.size), int64(len(want)))
		wantPart := want[min(r.off, int64(len(want))):end]
		if errno != 0 || !bytes.Equal(got, wantPart) {
			t.Errorf("read %d+%d: errno %v, %d bytes, want %d matching bytes", r.off, r.size, errno, len(got), len(wantPart))
		}
	}

	for _, h := range []*handle{h1, h2} {
		if errno := h.Release(ctx); errno != 0 {
			t.Fatal(errno)
		}
	}
	if got := root.OpenFiles(); got != 0 {
		t.Errorf("OpenFiles after release = %d", got)
	}
	if opens, _, closes := fx.files.counts(); opens != 2 || closes != 2 {
		t.Errorf("Files opens %d closes %d, want 2 and 2", opens, closes)
	}
}

func TestOpenNewVersionDropsCache(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)
	n, _ := mustLookup(t, root, "dev/x.npz")
	h, _ := open(t, n, syscall.O_RDONLY)
	h.Release(context.Background())

	obj := fx.objs["dev/x.npz"]
	obj.ETag = "etag-v2"
	fx.set("dev/x.npz", obj, bytes.Repeat([]byte{9}, int(obj.Size)))
	n2, _ := mustLookup(t, root, "dev/x.npz")
	h2, flags := open(t, n2, syscall.O_RDONLY)
	defer h2.Release(context.Background())
	if flags&fuse.FOPEN_KEEP_CACHE != 0 {
		t.Error("first open of a new version kept the old version's page cache")
	}
	if got, errno := read(context.Background(), h2, 4, 0); errno != 0 || !bytes.Equal(got, []byte{9, 9, 9, 9}) {
		t.Errorf("read of new version = %v %v", got, errno)
	}
}

func TestReadErrors(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)
	n, _ := mustLookup(t, root, "train/deep/c/leaf.np")
	h, _ := open(t, n, syscall.O_RDONLY)
	defer h.Release(context.Background())

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, errno := read(canceled, h, 10, 0); errno != syscall.EINTR {
		t.Errorf("read with canceled context: %v, want EINTR", errno)
	}
	if got := fx.tree.invalidations(); len(got) != 0 {
		t.Errorf("non-stale error invalidated %v", got)
	}

	fx.files.failReads(fx.objs["train/deep/c/leaf.np"], fmt.Errorf("part 0: %w", index.ErrStale))
	if _, errno := read(context.Background(), h, 10, 0); errno != syscall.ESTALE {
		t.Errorf("stale read: %v, want ESTALE", errno)
	}
	if got := fx.tree.invalidations(); !slices.Equal(got, []string{"train/deep/c"}) {
		t.Errorf("invalidated %v, want [train/deep/c]", got)
	}
}

func TestOpenErrors(t *testing.T) {
	fx := newFixture(testSizes)
	root := newNodeRoot(t, fx)
	// A listing naming a version Files cannot open.
	fx.tree.put("ghost", index.Object{Key: "prefix/ghost", Size: 3, ETag: "nope"})
	n, _ := mustLookup(t, root, "ghost")
	if _, _, errno := n.Operations().(fs.NodeOpener).Open(context.Background(), syscall.O_RDONLY); errno != syscall.ENOENT {
		t.Errorf("open of unknown object: %v, want ENOENT", errno)
	}
	if root.OpenFiles() != 0 {
		t.Errorf("failed open counted: %d", root.OpenFiles())
	}
}

// readdir opens folder node d as the kernel's opendir does and returns its
// entries; nil and the errno when the open fails.
func readdir(d *fs.Inode) (fs.DirStream, syscall.Errno) {
	fh, _, errno := d.Operations().(fs.NodeOpendirHandler).OpendirHandle(context.Background(), 0)
	if errno != 0 {
		return nil, errno
	}
	return fh.(fs.DirStream), 0
}
