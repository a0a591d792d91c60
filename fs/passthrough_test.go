package fs

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"s3cachefs/index"
)

// diskFiles serves every object from one local file, as the cache does: a
// handle's Backing is a descriptor of that file once the test says the
// object is complete. A Close can be held, to keep a RELEASE in progress.
type diskFiles struct {
	path     string
	complete atomic.Bool
	holdNext atomic.Bool   // the next Close waits for release
	held     chan struct{} // told when a Close is held
	release  chan struct{} // closed to let the held Close return
}

type diskFile struct {
	fs   *diskFiles
	file *os.File
}

func (d *diskFiles) Open(ctx context.Context, obj index.Object) (File, error) {
	f, err := os.Open(d.path)
	if err != nil {
		return nil, err
	}
	return &diskFile{fs: d, file: f}, nil
}

func (f *diskFile) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	return f.file.ReadAt(p, off)
}

func (f *diskFile) Backing() *os.File {
	if !f.fs.complete.Load() {
		return nil
	}
	b, err := os.Open(f.fs.path)
	if err != nil {
		return nil
	}
	return b
}

func (f *diskFile) Close() error {
	if f.fs.holdNext.CompareAndSwap(true, false) {
		f.fs.held <- struct{}{}
		<-f.fs.release
	}
	return f.file.Close()
}

// TestPassthroughAfterCachedRelease: a file opened through the daemon
// while incomplete is closed; while that RELEASE is still in go-fuse, the
// now complete file is opened again, and once the RELEASE is done, once
// more. Every open works and reads the right bytes. (go-fuse drops a
// reference to the inode's backing file on every RELEASE: had the second
// open gone passthrough, the first RELEASE would have dropped its backing
// file, and the third open, bringing a new one, would fail with EIO.)
func TestPassthroughAfterCachedRelease(t *testing.T) {
	fx := newFixture(testSizes)
	const name = "train/a.npz"
	want := fx.data[name]
	path := filepath.Join(t.TempDir(), "cache-file")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	files := &diskFiles{path: path, held: make(chan struct{}), release: make(chan struct{})}
	dir := t.TempDir()
	root := NewRoot(Options{Tree: fx.tree, Files: files, UID: testUID, GID: testGID, EntryTimeout: time.Minute})
	server, err := Mount(dir, root, MountOptions{FsName: testSource(), PassthroughProbe: path})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
		server.Wait()
	}()
	if st := root.Stats(); !st.Passthrough {
		t.Skipf("no FUSE passthrough here: %s", st.PassthroughOff)
	}
	mpath := filepath.Join(dir, name)
	readAll := func(f *os.File, what string) {
		t.Helper()
		got, err := io.ReadAll(io.NewSectionReader(f, 0, int64(len(want))))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %v (bytes equal %v)", what, err, bytes.Equal(got, want))
		}
	}

	first, err := os.Open(mpath) // incomplete: through the daemon
	if err != nil {
		t.Fatal(err)
	}
	readAll(first, "read of the open made while incomplete")
	files.complete.Store(true)
	files.holdNext.Store(true)
	first.Close()
	<-files.held // the RELEASE of the first open is in progress

	second, err := os.Open(mpath)
	if err != nil {
		t.Fatalf("open while the first open's RELEASE is in progress: %v", err)
	}
	defer second.Close()
	readAll(second, "read of the second open")

	close(files.release)
	node := root.EmbeddedInode().GetChild("train").GetChild("a.npz").Operations().(*fileNode)
	deadline := time.Now().Add(10 * time.Second)
	for { // until the first open's RELEASE is through go-fuse
		node.mu.Lock()
		n := node.cachedOpens
		node.mu.Unlock()
		if n <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first open's RELEASE never finished: %d cached opens counted", n)
		}
		runtime.Gosched()
	}
	third, err := os.Open(mpath)
	if err != nil {
		t.Fatalf("open once the first open's RELEASE is done: %v", err)
	}
	defer third.Close()
	readAll(third, "read of the third open")
}
