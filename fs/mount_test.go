package fs

import (
	"bytes"
	"errors"
	"fmt"
	iofs "io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"s3cachefs/index"
)

// Real-mount tests: the tree is mounted on a temporary folder with Mount
// and read through the kernel with ordinary file calls.

const testUID, testGID = 1234, 5678

// mountFixture mounts a tree over fx and unmounts it when the test ends.
func mountFixture(t *testing.T, fx *fixture, entryTimeout time.Duration) (string, *Root) {
	t.Helper()
	return mountFixtureWith(t, fx, entryTimeout, MountOptions{FsName: testSource()})
}

// mountFixtureWith is mountFixture with mount options.
func mountFixtureWith(t *testing.T, fx *fixture, entryTimeout time.Duration, opts MountOptions) (string, *Root) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	dir := t.TempDir()
	root := NewRoot(Options{
		Tree: fx.tree, Files: fx.files, UID: testUID, GID: testGID, EntryTimeout: entryTimeout,
		MaxNodes: fx.maxNodes,
	})
	server, err := Mount(dir, root, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		server.Wait()
	})
	return dir, root
}

// allPaths returns every file and folder path of fx, folders ending in "/".
func allPaths(fx *fixture) []string {
	var out []string
	for p := range fx.objs {
		out = append(out, p)
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			if !slices.Contains(out, d+"/") {
				out = append(out, d+"/")
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestMountTree(t *testing.T) {
	fx := newFixture(testSizes)
	mnt, root := mountFixture(t, fx, time.Second)

	var got []string
	err := filepath.WalkDir(mnt, func(p string, d iofs.DirEntry, err error) error {
		if err != nil || p == mnt {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if st.Uid != testUID || st.Gid != testGID {
			t.Errorf("%s: owner %d:%d", rel, st.Uid, st.Gid)
		}
		if st.Ino != inoOf(rel) {
			t.Errorf("%s: ino %d, want %d", rel, st.Ino, inoOf(rel))
		}
		if d.IsDir() {
			got = append(got, rel+"/")
			if info.Mode() != iofs.ModeDir|0o555 || !info.ModTime().Equal(root.m.started) {
				t.Errorf("%s: mode %v mtime %v, want dr-xr-xr-x at mount time", rel, info.Mode(), info.ModTime())
			}
			return nil
		}
		got = append(got, rel)
		obj := fx.objs[rel]
		if info.Size() != obj.Size || !info.ModTime().Equal(obj.LastModified) || info.Mode() != 0o444 {
			t.Errorf("%s: size %d mtime %v mode %v, want %d %v -r--r--r--", rel, info.Size(), info.ModTime(), info.Mode(), obj.Size, obj.LastModified)
		}
		if st.Blocks != (obj.Size+511)/512 {
			t.Errorf("%s: %d blocks for %d bytes", rel, st.Blocks, obj.Size)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := allPaths(fx); !slices.Equal(got, want) {
		t.Errorf("tree = %v\nwant %v", got, want)
	}

	info, err := os.Stat(mnt)
	if err != nil || info.Mode() != iofs.ModeDir|0o555 {
		t.Errorf("root: %v %v", info, err)
	}
	var fsst unix.Statfs_t
	if err := unix.Statfs(mnt, &fsst); err != nil || fsst.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs flags %#x err %v: mount is not read-only", fsst.Flags, err)
	}
	mounts, err := ourMounts(testSource())
	if err != nil || !slices.Contains(mounts, mnt) {
		t.Errorf("mountinfo has s3cachefs mounts %v, want %s (err %v)", mounts, mnt, err)
	}
}

func TestMountRead(t *testing.T) {
	fx := newFixture(testSizes)
	mnt, _ := mountFixture(t, fx, time.Second)

	for p, want := range fx.data {
		got, err := os.ReadFile(filepath.Join(mnt, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: read %d bytes (err %v), want %d matching", p, len(got), err, len(want))
		}
	}

	// Random ranges from several readers at once, as a data loader does.
	want := fx.data["train/a.npz"]
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			f, err := os.Open(filepath.Join(mnt, "train/a.npz"))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			rng := rand.New(rand.NewPCG(uint64(g), 42))
			for range 50 {
				off := rng.Int64N(int64(len(want)) + 10)
				buf := make([]byte, 1+rng.IntN(300_000))
				n, err := f.ReadAt(buf, off)
				end := min(off+int64(len(buf)), int64(len(want)))
				wantPart := want[min(off, end):end]
				if n != len(wantPart) || !bytes.Equal(buf[:n], wantPart) {
					t.Errorf("ReadAt %d+%d: %d bytes (err %v), want %d matching", off, len(buf), n, err, len(wantPart))
				}
			}
		})
	}
	wg.Wait()
}

func TestMountMissing(t *testing.T) {
	fx := newFixture(testSizes)
	mnt, _ := mountFixture(t, fx, time.Second)
	for _, p := range []string{"nope", "train/nope.npz", "nodir/x", "train/a.npz/under-a-file"} {
		_, err := os.Stat(filepath.Join(mnt, p))
		if !errors.Is(err, syscall.ENOENT) && !(strings.Contains(p, "under-a-file") && errors.Is(err, syscall.ENOTDIR)) {
			t.Errorf("stat %s: %v, want ENOENT", p, err)
		}
	}
}

func TestMountReadOnly(t *testing.T) {
	fx := newFixture(testSizes)
	mnt, _ := mountFixture(t, fx, time.Second)
	file, dir := filepath.Join(mnt, "train/b.npz"), filepath.Join(mnt, "train")
	for name, op := range map[string]func() error{
		"write":    func() error { return os.WriteFile(file, []byte("x"), 0o644) },
		"rdwr":     func() error { return openClose(file, os.O_RDWR) },
		"append":   func() error { return openClose(file, os.O_WRONLY|os.O_APPEND) },
		"create":   func() error { return os.WriteFile(filepath.Join(dir, "new"), []byte("x"), 0o644) },
		"mkdir":    func() error { return os.Mkdir(filepath.Join(dir, "newdir"), 0o755) },
		"truncate": func() error { return os.Truncate(file, 0) },
		"rm":       func() error { return os.Remove(file) },
		"rmdir":    func() error { return os.Remove(filepath.Join(dir, "deep/c")) },
		"rename":   func() error { return os.Rename(file, filepath.Join(dir, "moved")) },
		"chmod":    func() error { return os.Chmod(file, 0o777) },
		"chown":    func() error { return os.Chown(file, 0, 0) },
		"utimes":   func() error { return os.Chtimes(file, time.Now(), time.Now()) },
		"symlink":  func() error { return os.Symlink("b.npz", filepath.Join(dir, "ln")) },
		"link":     func() error { return os.Link(file, filepath.Join(dir, "hard")) },
		"setxattr": func() error { return unix.Setxattr(file, "user.x", []byte("1"), 0) },
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, fx.data["train/b.npz"]) {
		t.Errorf("file changed after refused writes: %v", err)
	}
}

func openClose(path string, flag int) error {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func TestMountOpenFiles(t *testing.T) {
	fx := newFixture(testSizes)
	mnt, root := mountFixture(t, fx, time.Second)
	var files []*os.File
	for _, p := range []string{"top.txt", "dev/x.npz"} {
		f, err := os.Open(filepath.Join(mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if got := root.OpenFiles(); got != 2 {
		t.Errorf("OpenFiles with 2 open = %d", got)
	}
	for _, f := range files {
		f.Close()
	}
	// The kernel sends RELEASE after close returns; wait for it.
	fx.files.waitCloses(t, 2)
	if got := root.OpenFiles(); got != 0 {
		t.Errorf("OpenFiles after close = %d", got)
	}
}

func TestMountKeepCache(t *testing.T) {
	fx := newFixture(testSizes)
	mnt, _ := mountFixture(t, fx, time.Minute)
	p := filepath.Join(mnt, "train/b.npz")

	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, fx.data["train/b.npz"]) {
		t.Fatalf("first read: %v", err)
	}
	fx.files.waitCloses(t, 1)
	opens, reads, _ := fx.files.counts()
	if opens != 1 || reads == 0 {
		t.Fatalf("first read: %d opens %d reads", opens, reads)
	}

	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, fx.data["train/b.npz"]) {
		t.Fatalf("second read: %v", err)
	}
	fx.files.waitCloses(t, 2)
	opens2, reads2, _ := fx.files.counts()
	if opens2 != 2 || reads2 != reads {
		t.Errorf("reopen of an unchanged file: %d opens, %d reads reached Files (before: %d); want the page cache kept", opens2, reads2-reads, reads)
	}
}

func TestMountStale(t *testing.T) {
	fx := newFixture(testSizes)
	// A long entry timeout: only the ESTALE path can make the kernel
	// look the name up again within the test.
	mnt, _ := mountFixture(t, fx, time.Hour)
	p := filepath.Join(mnt, "train/deep/c/leaf.np")

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	old := fx.objs["train/deep/c/leaf.np"]
	fx.files.failReads(old, fmt.Errorf("get part 0: %w", index.ErrStale))
	changed := old
	changed.ETag, changed.Size = "etag-v2", 3
	fx.set("train/deep/c/leaf.np", changed, []byte("new"))

	if _, err := f.ReadAt(make([]byte, 100), 0); !errors.Is(err, syscall.ESTALE) {
		t.Errorf("read of a changed object: %v, want ESTALE", err)
	}
	if got := fx.tree.invalidations(); !slices.Contains(got, "train/deep/c") {
		t.Errorf("invalidated %v, want train/deep/c", got)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "new" {
		t.Errorf("reopen after ESTALE read %q (err %v), want the new version", got, err)
	}
}

func TestMountFailure(t *testing.T) {
	fx := newFixture(testSizes)
	root := NewRoot(Options{Tree: fx.tree, Files: fx.files})
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	if server, err := Mount(missing, root, MountOptions{FsName: testSource()}); err == nil {
		server.Unmount()
		t.Fatal("mount on a missing folder succeeded")
	}
	if mounts, _ := ourMounts(testSource()); slices.Contains(mounts, missing) {
		t.Errorf("failed mount left %s mounted", missing)
	}
}

// TestMountDirCache: the kernel may keep a folder's entries between opens,
// but a listing that changed reaches the next reader.
func TestMountDirCache(t *testing.T) {
	fx := newFixture(map[string]int{"d/a": 1, "d/b": 2})
	mnt, _ := mountFixture(t, fx, time.Second)
	names := func() []string {
		t.Helper()
		es, err := os.ReadDir(filepath.Join(mnt, "d"))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.Name())
		}
		return out
	}
	for i := range 3 {
		if got := names(); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("readdir %d: %v, want [a b]", i+1, got)
		}
	}
	fx.set("d/c", index.Object{Key: "prefix/d/c", Size: 3, ETag: "etag-c", LastModified: fixtureEpoch}, []byte("ccc"))
	if got := names(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("readdir after the listing changed: %v, want [a b c]", got)
	}
	if got := names(); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("readdir once more: %v, want [a b c]", got)
	}
}

// TestMountKernelReadAhead: KernelReadAhead sets the mount's read-ahead
// window in sysfs, and sequential reads then reach the daemon in READs
// larger than the kernel's default window of 128 KiB.
func TestMountKernelReadAhead(t *testing.T) {
	for _, c := range []struct {
		name string
		ra   int64
	}{{"default", 0}, {"4MiB", 4 << 20}} {
		t.Run(c.name, func(t *testing.T) {
			if c.ra > 0 && os.Geteuid() != 0 {
				t.Skip("setting a mount's read-ahead in sysfs needs root")
			}
			fx := newFixture(testSizes)
			mnt, _ := mountFixtureWith(t, fx, time.Second, MountOptions{FsName: testSource(), KernelReadAhead: c.ra})
			var st unix.Stat_t
			if err := unix.Stat(mnt, &st); err != nil {
				t.Fatal(err)
			}
			kb, err := os.ReadFile(readAheadPath(st.Dev))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(mnt, "train/a.npz"))
			if err != nil || !bytes.Equal(got, fx.data["train/a.npz"]) {
				t.Fatalf("read through the mount: %v (equal %v)", err, bytes.Equal(got, fx.data["train/a.npz"]))
			}
			fx.files.mu.Lock()
			largest := fx.files.maxRead
			fx.files.mu.Unlock()
			t.Logf("read_ahead_kb %s, largest READ %d KiB", strings.TrimSpace(string(kb)), largest>>10)
			if c.ra == 0 {
				return
			}
			if want := strconv.FormatInt(c.ra>>10, 10); strings.TrimSpace(string(kb)) != want {
				t.Errorf("read_ahead_kb = %s, want %s", kb, want)
			}
			if largest <= 128<<10 {
				t.Errorf("largest READ %d bytes with a %d byte window, want more than 128 KiB", largest, c.ra)
			}
		})
	}
}
